"""Tests of autotune.cli: commands, rendering at 80 columns, the live progress, export."""
