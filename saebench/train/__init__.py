"""saebench.train."""
