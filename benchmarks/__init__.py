"""Benchmarks: `python -m benchmarks` runs Runstream beside MLflow (see benchmarks/suite.py);
bench_*.py are single-component benchmarks run as scripts."""
