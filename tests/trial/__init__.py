"""Tests of autotune.trial: one trial start to finish (measuring, faults, workload mixes)."""
