"""saebench.repro."""
