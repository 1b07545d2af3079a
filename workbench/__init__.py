"""workbench: evaluation, robustness and interpretability for PyTorch models.

The package is import-light: nothing here imports torch, so `workbench --help` is fast.
"""

__version__ = "0.1.0"
