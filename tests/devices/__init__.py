"""Tests of autotune.devices: the device pools and their fair allocator."""
