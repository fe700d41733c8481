"""Benchmarks and the HPO replay, outside the product: each script runs as a module from the
repository root (``python -m bench.train_speed``) and imports the others as ``from bench import
lc_build``."""
