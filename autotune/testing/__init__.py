"""What a test of autotune, or of a backend written for it, needs (as ``optuna.testing``): the
conformance suites every storage and engine implementation runs, a mock OpenAI-compatible server
and a mock engine, builders of small spaces and replay grids, and the check that no engine
process of this test session is left. Imported by tests and benchmarks only; it uses pytest."""
