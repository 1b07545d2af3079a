"""Certify suite: randomized smoothing (Cohen et al. 2019) with certified L2 radii
(functional.py), a Gaussian-noise training recipe (training.py), the suite (suite.py) and
its figures (figures.py). Import submodules directly; this package imports nothing heavy."""
