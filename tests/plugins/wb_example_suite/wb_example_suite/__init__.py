"""Example workbench plug-in (see suite.py)."""
