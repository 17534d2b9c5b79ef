"""The results contract: what a results folder holds and what its records mean. The runtime writes it,
analysis reads it; analysis and workloads import nothing else of trainscale."""
