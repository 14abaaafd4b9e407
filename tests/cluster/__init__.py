"""Tests of autotune.cluster: the cluster's devices as the controller sees them, and studies on a
real local Ray cluster."""
