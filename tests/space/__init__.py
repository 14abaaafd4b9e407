"""Tests of autotune.space: reading and validating space files, rules, the starter space, workload
mixes, trust."""
