"""Shared pieces of the reference tests: a seeded context and tiny, hand-made models.

tests/reference/ recomputes every headline figure of every built-in suite from scratch,
with nothing from the code under test but the suite's run itself: own loops, exact
enumeration, closed forms, and peer libraries (scikit-learn, scipy, sacrebleu,
rouge-score). A figure that disagrees with its reference fails here.
"""

from __future__ import annotations

import pytest
import torch

from workbench.torch_utils import limited_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with limited_threads(1):
        yield
