"""The dashboard tests' storages by name (tests/dashboard/conftest.py writes them), and readers
of the dashboard's JSON."""

from __future__ import annotations

from pathlib import Path

from autotune.store import open_catalog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dashboard"
# A real study recorded by `autotune study start` on the CPU quickstart: 3 complete trials, all
# over the TTFT SLO. Stored at the revision it was written with; tests upgrade a copy.
QUICKSTART_DB = FIXTURES / "quickstart-cpu.db"
QUICKSTART = "quickstart-cpu"
# A real run of the load-ladder quickstart (`benchmarks/newcomer.py`, 2026-12-02): 7 trials, 4 on
# the front, every level stored, and 5 `confirm` runs of trial 1 kept with the study.
QUICKSTART_LADDER_DB = FIXTURES / "quickstart-ladder.db"


def ladder_study_url(folder: Path) -> str:
    """A copy of the ladder quickstart's study in ``folder``, upgraded: its storage URL."""
    import shutil

    from autotune.store import upgrade_schema

    path = folder / "quickstart-ladder.db"
    shutil.copy(QUICKSTART_LADDER_DB, path)
    url = f"sqlite:///{path}"
    upgrade_schema(url)
    return url
# One letter per trial (F feasible, V violates an SLO, X failed, R running); trial 0 is the
# vLLM-default one.
MIXED_KINDS = "FVFFXFVFFXFFVFR"
MIXED = "mixed"
ONLY_FAILED = "only-failed"
HOSTILE = "<script>alert('study')</script>"
HOSTILE_PARAM = "<img src=x onerror=alert('param')>"


def study_id(url: str, name: str) -> int:
    return next(s.id for s in open_catalog(url).list_studies() if s.name == name)


def decode_trials(payload: dict) -> list[dict]:
    """The columnar /trials payload back into one dict per trial."""
    out = []
    for row in payload["trials"]:
        trial = dict(zip(payload["columns"], row, strict=True))
        trial["params"] = {k: v for k, v in zip(payload["params"], trial["params"], strict=True)
                           if v is not None}
        trial["metrics"] = {k: v for k, v in zip(payload["metrics"], trial["metrics"],
                                                 strict=True) if v is not None}
        out.append(trial)
    return out
