"""Benchmarks of the GPEN pack (``python -m bench --help``)."""
