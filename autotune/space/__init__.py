"""The search-space file: its schema (one leaf module per section), reading it with precise
errors, the engine parameters it can sweep, the trust check of a shared study's space, and the
starter space ``autotune init`` writes.

What callers use: ``Space`` and ``load_space`` (``space.model``), ``Configuration``
(``space.configuration``: the parameters one trial runs with). The schema modules import no
runtime module (``bench``, ``engines``, ``study``): reading a space file starts nothing.
"""
