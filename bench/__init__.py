"""In-repo benchmark: a fast fake upstream, a load generator, and `python -m bench.run` (see bench/README.md)."""
