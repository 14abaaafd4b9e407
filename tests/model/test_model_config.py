"""model_config: a local folder's config.json, else the hub cache's snapshot, else nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from autotune.model import config as model_config
from autotune.model.config import find_model_config, hub_cache, read_model_config
from autotune.study.warm_start import model_family


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HOME of our own, so the machine's real cache never answers."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "hub"


def snapshot(hub: Path, repo: str, revision: str, config: object, *, mtime: float) -> Path:
    """A snapshot laid out as huggingface_hub does: the file is a link into blobs/."""
    root = hub / ("models--" + repo.replace("/", "--"))
    blob = root / "blobs" / f"blob-{revision}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_text(config if isinstance(config, str) else json.dumps(config))
    os.utime(blob, (mtime, mtime))
    link = root / "snapshots" / revision / "config.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return link


def test_a_local_folder_wins(tmp_path: Path, cache: Path) -> None:
    local = tmp_path / "org" / "model"
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({"model_type": "llama"}))
    snapshot(cache, "org/model", "abc", {"model_type": "cached"}, mtime=1.0)
    found = find_model_config(str(local))
    assert found is not None
    assert found.path == local / "config.json" and found.config == {"model_type": "llama"}


def test_a_broken_local_config_is_not_replaced_by_the_cache(tmp_path: Path) -> None:
    local = tmp_path / "m"
    local.mkdir()
    (local / "config.json").write_text("{not json")
    assert find_model_config(str(local)) is None
    assert read_model_config(str(local)) == {}


def test_a_hub_id_reads_the_snapshot_refs_main_names(cache: Path) -> None:
    main = snapshot(cache, "org/model", "aaa", {"model_type": "main"}, mtime=1.0)
    snapshot(cache, "org/model", "bbb", {"model_type": "newer"}, mtime=2.0)
    (cache / "models--org--model" / "refs").mkdir()
    (cache / "models--org--model" / "refs" / "main").write_text("aaa\n")
    found = find_model_config("org/model")
    assert found is not None
    assert found.path == main and found.config == {"model_type": "main"}


def test_without_refs_the_newest_readable_snapshot(cache: Path) -> None:
    snapshot(cache, "org/model", "old", {"model_type": "old"}, mtime=1.0)
    snapshot(cache, "org/model", "mid", {"model_type": "mid"}, mtime=2.0)
    snapshot(cache, "org/model", "new", "[1, 2]", mtime=3.0)  # not an object: skipped
    assert read_model_config("org/model") == {"model_type": "mid"}


def test_nothing_cached_or_not_a_repo_id(cache: Path, tmp_path: Path) -> None:
    assert find_model_config("org/absent") is None
    assert read_model_config(str(tmp_path / "no" / "such" / "dir")) == {}
    assert not model_config.is_repo_id("/abs/path")
    assert not model_config.is_repo_id("a/b/c")
    assert not model_config.is_repo_id("org--x/model")
    assert model_config.is_repo_id("gpt2") and model_config.is_repo_id("Qwen/Qwen3-0.6B")


def test_the_cache_directory_follows_huggingface_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert hub_cache() == tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_cache() == tmp_path / "hub"


def test_huggingface_hub_finds_the_same_file(cache: Path) -> None:
    """The fake layout is the real one: huggingface_hub's own lookup agrees."""
    hf = pytest.importorskip("huggingface_hub")
    main = snapshot(cache, "org/model", "c0ffee", {"model_type": "main"}, mtime=1.0)
    (cache / "models--org--model" / "refs").mkdir()
    (cache / "models--org--model" / "refs" / "main").write_text("c0ffee")
    assert hf.try_to_load_from_cache("org/model", "config.json", cache_dir=cache) == str(main)


def test_warm_start_reads_a_cached_hub_model(cache: Path) -> None:
    path = snapshot(cache, "org/model", "abc", {"model_type": "qwen3",
                                                "architectures": ["Qwen3ForCausalLM"]},
                    mtime=1.0)
    family = model_family("org/model")
    assert family.model_type == "qwen3" and family.architectures == ("Qwen3ForCausalLM",)
    assert family.config_path == str(path)
