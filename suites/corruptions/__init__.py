"""Corruptions suite: natural corruptions per modality (functional.py), the suite
(suite.py) and its figures (figures.py). Import submodules directly."""
