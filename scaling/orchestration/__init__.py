"""Host-side orchestration: one run end to end, sweeps over world sizes, result folders."""
