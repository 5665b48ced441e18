"""Benchmarks' library code: runs that measure and return figures (the CLI prints them)."""
