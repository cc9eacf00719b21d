"""saebench.zoo."""
