"""Tests of autotune.replay: grids, replayed studies, search efficiency on measured grids."""
