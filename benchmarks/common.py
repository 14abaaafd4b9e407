"""What the benchmark scripts share: the repository's folders, their argument parser, the demo
model, the spaces they start from, a scratch folder and one engine on vLLM's defaults.

A script run as ``python benchmarks/NAME.py`` has this folder first on ``sys.path``, so
``import common`` needs no path edit; ``autotune`` is the installed package (editable in
.venv), and the test helpers the benchmarks use come from ``autotune.testing``.
search_efficiency.py and measure_grid.py import nothing from here: tests load them by their
path, with this folder not on ``sys.path``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from autotune.devices import CpuSlotPool
    from autotune.engines.base import RunningEngine
    from autotune.space.model import Space

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"
DEMO_MODEL = Path("~/.cache/autotune/demo-llama")  # where the quickstart builds it


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """The script's parser, described by the first paragraph of its docstring."""
    return argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model DIR``: the model to serve (default: the quickstart's demo model)."""
    parser.add_argument("--model", type=Path, default=DEMO_MODEL,
                        help="model directory (default: the quickstart's demo model, built "
                             "there if missing)")


def demo_model(path: str | Path = DEMO_MODEL) -> Path:
    """``path`` (``~`` expanded), with the demo model built there first when it holds no
    model."""
    from autotune.model.demo import build_demo_model

    model = Path(path).expanduser()
    if not (model / "config.json").is_file():
        model = build_demo_model(model)
    return model


def space_data(name: str, *, model: Path | None = None, quality: bool = True) -> dict[str, Any]:
    """``search_spaces/NAME.yaml`` as a dict to edit; with ``model``, that (built) model; with
    ``quality`` False, no quality probe."""
    data = yaml.safe_load((SPACES / f"{name}.yaml").read_text())
    if model is not None:
        data["model"]["path"] = str(model)
        data["model"]["build_demo"] = False
    if not quality:
        data.pop("quality", None)
    return data


def scratch_dir(prefix: str) -> Path:
    """A new folder for the run's engine logs and files, left behind for a look."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextmanager
def default_engine(space: Space, log_path: Path,
                   pool: CpuSlotPool | None = None) -> Iterator[RunningEngine]:
    """One vLLM engine for the space's default trial (its fixed settings, vLLM's defaults),
    on one slot of ``pool`` (default: a pool of one slot over every core); stopped and its
    devices released on the way out."""
    from autotune.devices import CpuSlotPool
    from autotune.engines.vllm import VllmLauncher, engine_config

    pool = pool or CpuSlotPool(slots=1)
    devices = pool.acquire(1)
    try:
        engine = VllmLauncher().start(engine_config(space, {}, is_default=True), devices,
                                      log_path)
        try:
            yield engine
        finally:
            engine.stop()
    finally:
        pool.release(devices)
