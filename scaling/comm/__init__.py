"""`trainscale comm`: the nccl-tests-style collective benchmark (spec, per-rank bench, runner)."""
