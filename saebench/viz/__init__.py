"""saebench.viz."""
