"""saebench.metrics."""
