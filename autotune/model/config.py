"""Find and read a model's config.json: in its local folder, or in the Hugging Face hub cache.

One lookup for every reader (rules, the memory fit, warm start): a local directory's own
config.json; else, for a hub id (``org/name``), the cached snapshot's, under the cache that
``huggingface_hub`` would use (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub,
``~/.cache/huggingface/hub``); else nothing. Never downloads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG = "config.json"
# A hub repo id: "name" or "org/name" of letters, digits, "_", "-" and "." (huggingface_hub's
# validate_repo_id, which also refuses "--" and ".." anywhere).
_REPO_ID = re.compile(r"[\w][\w.-]*(/[\w][\w.-]*)?")


@dataclass(frozen=True)
class ModelConfig:
    """A config.json that was found and parsed: where it is, and its contents."""

    path: Path
    config: dict[str, Any]


def hub_cache() -> Path:
    """The Hugging Face hub cache directory, read from the environment at each call."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(os.path.expandvars(hub)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def is_repo_id(model: str) -> bool:
    return bool(_REPO_ID.fullmatch(model)) and "--" not in model and ".." not in model


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # a dangling link into blobs/
        return 0.0


def candidates(model: str) -> list[Path]:
    """Where ``model``'s config.json may be, best first: the local folder's alone when it has
    one; else the hub cache's snapshot that ``refs/main`` names, then the other snapshots,
    newest first."""
    local = Path(model).expanduser() / CONFIG
    if local.is_file():
        return [local]
    if not is_repo_id(model):
        return []
    repo = hub_cache() / ("models--" + model.replace("/", "--"))
    found = sorted((repo / "snapshots").glob(f"*/{CONFIG}"), key=_mtime, reverse=True)
    try:
        main = repo / "snapshots" / (repo / "refs" / "main").read_text().strip() / CONFIG
    except OSError:
        return found
    return [main, *(p for p in found if p != main)] if main in found else found


def find_model_config(model: str) -> ModelConfig | None:
    """The first of ``candidates(model)`` that parses as a JSON object; None when none does."""
    for path in candidates(model):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return ModelConfig(path, data)
    return None


def read_model_config(model: str) -> dict[str, Any]:
    """``find_model_config(model)``'s contents; {} when there is none (nothing is known)."""
    found = find_model_config(model)
    return found.config if found is not None else {}
