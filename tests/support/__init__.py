"""Helpers shared by the tests and the benchmarks: test modules import these, never each other.
Data files (databases, engine logs, metrics) stay in tests/fixtures/."""
