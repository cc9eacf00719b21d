"""saebench.acts."""
