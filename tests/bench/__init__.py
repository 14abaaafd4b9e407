"""Tests of autotune.bench: the load driver (on the mock server and on real engines), metrics,
statistics, the ladder and capacity, workloads."""
