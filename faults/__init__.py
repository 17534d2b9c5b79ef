"""trainscale.faults."""
