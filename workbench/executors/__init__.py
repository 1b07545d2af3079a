"""Executors that run a plan's jobs somewhere other than this process.

The local executor is `workbench.runner.run_plan` (the embedded default). This package
adds an optional distributed one:

  ray_executor.run_plan_ray   model x suite jobs (and metrics shards) as Ray tasks
                              (`workbench run PLAN --executor ray [--address ...]`)
  jobs                        the job functions the workers import, and the exact-count
                              shard helpers (`shard_slices`, `class_counts`, `combine_counts`)

Importing this package does not import Ray (or torch).
"""

from __future__ import annotations

__all__ = ["jobs", "ray_executor"]
