"""Tests of autotune.model: config lookup, the memory fit, the demo model."""
