"""Parallel strategies: how a model is wrapped, stepped and laid out over the ranks (one module per strategy)."""
