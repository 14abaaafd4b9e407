"""Tests of autotune's top-level modules (the metric catalogue, procfs, periodic samplers) and of
the package's layout rules."""
