"""Robustness suite: adversarial attacks (functional.py, blackbox.py, attack_utils.py), the
token-substitution attack (hotflip.py), gradient-masking checks (masking.py), adversarial
training recipes (training.py), the suite (suite.py), its records (report.py) and figures
(figures.py). Corruptions and drift are the `corruptions` and `drift` suites.
Import submodules directly; this package imports nothing heavy."""
