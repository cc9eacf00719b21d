"""Performance benchmarks. Each writes JSON under results/bench/; run them with `python -m benchmarks.<name>`."""
