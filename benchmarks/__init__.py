"""Performance benchmarks. ``python -m benchmarks`` runs them all and writes results/bench/*.json plus
results/bench/README.md; each also runs alone as ``python -m benchmarks.<name>``."""
