"""Drift suite: input-drift statistics (functional.py), the suite (suite.py) and its
figures (figures.py). Import submodules directly."""
