"""Quality of a trial's outputs: labelled accuracy and agreement with a reference.

``spec`` and ``grading`` are light (the space file needs them); ``probe`` talks HTTP to a live
server and ``store`` keeps the reference in the study. See docs/quality.md.
"""

from autotune.quality.spec import QUALITY_INFO_METRICS, QUALITY_METRICS, QualitySpec

__all__ = ["QUALITY_INFO_METRICS", "QUALITY_METRICS", "QualitySpec"]
