"""Quality of a trial's outputs: labelled accuracy and agreement with a reference.

``spec`` and ``grading`` are light (the space file needs them); ``reference`` reads the eval set
and scores outputs against the study's reference (kept by the study store); ``probe`` talks HTTP
to a live server. See docs/quality.md.
"""

from autotune.space.quality import QUALITY_INFO_METRICS, QUALITY_METRICS, QualitySpec

__all__ = ["QUALITY_INFO_METRICS", "QUALITY_METRICS", "QualitySpec"]
