"""autotune: find the best vLLM serving configuration for a model, a workload and SLOs.

The library entry point is :func:`autotune.run_study` (``autotune study start`` and
``autotune worker`` call it); it and its companions load on first use, so that ``import
autotune`` stays light (it imports nothing, ``typing`` included)."""

__version__ = "0.1.0"

__all__ = ["StudyResult", "__version__", "create_study", "run_study"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy knows the name
if TYPE_CHECKING:
    from autotune.study.entrypoint import StudyResult, create_study, run_study

_LAZY = ("StudyResult", "create_study", "run_study")


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from autotune.study import entrypoint

        return getattr(entrypoint, name)
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")
