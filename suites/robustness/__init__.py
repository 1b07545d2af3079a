"""Robustness suite: adversarial attacks (functional.py), gradient-masking checks
(masking.py), adversarial training recipes (training.py), corruptions (corruptions.py),
drift detection (drift.py), the suite (suite.py) and its figures (figures.py).
Import submodules directly; this package imports nothing heavy."""
