"""The engine conformance suite (tests/support/engine_suite.py) on the real vLLM CPU build."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from autotune.engines import EngineConfig, EngineLauncher, FailureKind, create
from autotune.engines.vllm import engine_config
from autotune.space import Space
from tests.support.engine_suite import EngineSuite, FailingStart
from tests.support.spaces import small_space

pytestmark = pytest.mark.engine


def _config(tmp_path: Path, demo_model: Path, **params) -> EngineConfig:
    space = Space.model_validate(small_space(tmp_path, demo_model))
    return engine_config(space, params, is_default=not params)


class TestVllmLauncher(EngineSuite):
    runs_processes = True
    serves_http = True

    @pytest.fixture
    def launcher(self) -> EngineLauncher:
        return create("vllm")

    @pytest.fixture
    def serve_config(self, tmp_path: Path, demo_model: Path) -> EngineConfig:
        return _config(tmp_path, demo_model)

    @pytest.fixture
    def failing_start(self, tmp_path: Path, demo_model: Path) -> FailingStart:
        config = _config(tmp_path, demo_model)
        config = replace(config, flags={**config.flags, "quantization": "nosuchquant"})
        return FailingStart(config, FailureKind.UNSUPPORTED, "Unknown quantization method")
