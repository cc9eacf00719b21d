"""saebench.data."""
