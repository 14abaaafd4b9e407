"""Tests of autotune.results: the noise model's intervals."""
