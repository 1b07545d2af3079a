"""The metrics suite: task metrics with seeded bootstrap CIs. See README.md (the suite card)."""

from workbench.suites.metrics.suite import MetricsSuite

__all__ = ["MetricsSuite"]
