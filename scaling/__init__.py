"""trainscale.scaling."""
