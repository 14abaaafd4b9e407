"""Tests of autotune.study: the proposer, samplers, warm start, the entry point, parallel and
distributed workers, interrupts."""
