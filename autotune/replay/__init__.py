"""Replay: studies answered from a measured grid (docs/grid-format.md) instead of live engines,
so search strategies can be compared in seconds. The grid, its launcher (registered as the
``replay`` engine) and its measuring step."""
