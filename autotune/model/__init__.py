"""The model being tuned: where its config.json is, its shape (layers, heads, widths), whether a
configuration fits its devices' memory (``memory_fit``), and the CPU quickstart's demo model."""
