"""What a test of autotune, or of a backend written for it, needs (as ``optuna.testing``): the
conformance suites every storage and engine implementation runs (``store_suite``,
``engine_suite``), a mock OpenAI-compatible server and a mock engine, builders of small spaces
and replay grids, a throwaway PostgreSQL server (``pg_server``), an app served on a free port
with the headless Chromium to open it (``live_server``), and the check that no engine process
of this test session is left (``processes``). Imported by tests and benchmarks only; some
modules use pytest."""
