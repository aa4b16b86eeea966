"""Analysis: attention maps as numbers, metrics, tau sweeps."""
