"""Tests of autotune.engines: the engine conformance suite, vLLM's flags, the guard, failure
classification."""
