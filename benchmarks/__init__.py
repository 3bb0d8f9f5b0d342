"""Benchmarks of the whole platform, as opposed to one service's (`services/<name>/benchmark.py`)."""
