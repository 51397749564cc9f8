"""The harness layer: experiment files, cells, timing, sweeps, executors, tables, environment."""
