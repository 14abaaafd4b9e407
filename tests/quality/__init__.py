"""Tests of autotune.quality: grading, the probe, quality in a space and on real engines."""
