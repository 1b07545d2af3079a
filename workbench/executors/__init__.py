"""Executors that run a plan's jobs somewhere other than this process.

The local executor is `workbench.runner.run_plan` (the embedded default). This package
adds an optional distributed one:

  ray_executor.run_plan_ray   model x suite jobs (and the shards of suites that shard) as Ray tasks
                              (`workbench run PLAN --executor ray [--address ...]`)
  jobs                        the job functions the workers import (whole jobs and shards,
                              through the suites' hooks) and exact-count helpers (`class_counts`)

Importing this package does not import Ray (or torch).
"""

from __future__ import annotations

__all__ = ["jobs", "ray_executor"]
