"""trainscale.analysis."""
