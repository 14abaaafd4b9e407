"""Quality of a trial's outputs: labelled accuracy and agreement with a reference.

``grading`` is light (the space file needs it); ``reference`` reads the eval set and scores
outputs against the study's reference (kept by the study store); ``probe`` talks HTTP to a live
server. The `quality:` section of a space file is ``autotune.space.quality``. See docs/quality.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.quality.probe import QualityProbe
    from autotune.quality.reference import (
        QualityError,
        QualityRequestLost,
        Reference,
        ReferenceItem,
    )

# Each name's module, imported on first use (autotune.lazy).
_HOMES = {
    "QualityError": "autotune.quality.reference",
    "QualityProbe": "autotune.quality.probe",
    "QualityRequestLost": "autotune.quality.reference",
    "Reference": "autotune.quality.reference",
    "ReferenceItem": "autotune.quality.reference",
}

__all__ = [
    "QualityError",
    "QualityProbe",
    "QualityRequestLost",
    "Reference",
    "ReferenceItem",
]

__getattr__ = lazy_attributes(__name__, _HOMES)
