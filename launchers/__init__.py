"""trainscale.launchers."""
