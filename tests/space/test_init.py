"""``autotune init``: a starting space from a model's config.json and the devices found, on the
demo model (CPU) and on GPU config.json files with fake NVML devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autotune import cli
from autotune.devices import nvml
from autotune.space.model import load_space
from tests.support.fake_nvml import FakeNvml

# The shapes of Llama 3.1 8B and 70B (their config.json fields the memory fit reads).
LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
            "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "bfloat16",
            "max_position_embeddings": 131072, "tie_word_embeddings": False}
LLAMA_70B = {**LLAMA_8B, "hidden_size": 8192, "intermediate_size": 28672,
             "num_attention_heads": 64, "num_hidden_layers": 80}


def run_init(*args: str):
    return CliRunner().invoke(cli.app, ["init", *args])


def model_dir(tmp_path: Path, config: dict, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def gpus(monkeypatch):
    """NVML with the given GPUs: ``gpus(n)`` → n fake H100 80GB."""
    def install(count: int) -> None:
        monkeypatch.setattr(nvml, "load_nvml", lambda: FakeNvml(
            names=["NVIDIA H100 80GB HBM3"] * count))
    return install


def test_demo_model_on_cpu(tmp_path: Path, demo_model: Path) -> None:
    out = tmp_path / "demo.yaml"
    result = run_init("--model", str(demo_model), "--devices", "cpu", "-o", str(out),
                      "--max-model-len", "512")
    assert result.exit_code == 0, result.output
    space = load_space(out)
    assert space.engine.devices == "cpu"
    assert space.engine.command[:2] == ["{python}", "-m"]
    assert space.model.max_model_len == 512
    assert space.engine.flags["dtype"] == "float16"
    assert space.parameters["quantization"].choices == ["none", "fp8"]
    assert "tensor_parallel_size" not in space.parameters  # one CPU engine per slot
    assert "gpu_memory_utilization" not in space.parameters  # the KV budget is fixed
    assert out.read_text().startswith("# Starting space for")


def test_gpu_space_follows_the_memory_fit(tmp_path: Path, gpus) -> None:
    gpus(8)
    out = tmp_path / "llama70.yaml"
    model = model_dir(tmp_path, LLAMA_70B, "llama-70b")
    result = run_init("--model", str(model), "-o", str(out))
    assert result.exit_code == 0, result.output
    space = load_space(out)
    assert space.engine.devices == "gpu" and space.engine.command == ["vllm", "serve"]
    assert space.parameters["tensor_parallel_size"].choices == [1, 2, 4, 8]
    assert space.parameters["quantization"].choices == ["none", "fp8"]
    assert space.model.quantization_variants["fp8"].method == "fp8"
    utilization = space.parameters["gpu_memory_utilization"]
    assert (utilization.low, utilization.high) == (0.5, 0.95)
    assert space.model.max_model_len == 4096  # the context (131072) capped


def test_a_model_too_big_for_one_gpu_gets_fixed_quantization(tmp_path: Path, gpus) -> None:
    gpus(1)
    out = tmp_path / "llama70.yaml"
    model = model_dir(tmp_path, LLAMA_70B, "llama-70b")
    result = run_init("--model", str(model), "-o", str(out))
    assert result.exit_code == 0, result.output
    space = load_space(out)
    # 141 GB of bf16 weights cannot fit 80 GB; fp8 (~70 GB) only from 0.9 of it
    assert "quantization" not in space.parameters
    assert space.engine.flags["quantization"] == "fp8"
    assert "tensor_parallel_size" not in space.parameters
    assert space.parameters["gpu_memory_utilization"].low == pytest.approx(0.9)


def test_tensor_parallel_sizes_divide_the_heads(tmp_path: Path, gpus) -> None:
    gpus(8)
    out = tmp_path / "odd.yaml"
    model = model_dir(tmp_path, {**LLAMA_8B, "num_attention_heads": 12,
                                 "num_key_value_heads": 12, "hidden_size": 1536},
                      "twelve-heads")
    assert run_init("--model", str(model), "-o", str(out)).exit_code == 0
    assert load_space(out).parameters["tensor_parallel_size"].choices == [1, 2, 4]


def test_nothing_fits_is_an_error_and_writes_nothing(tmp_path: Path, gpus) -> None:
    gpus(1)
    out = tmp_path / "huge.yaml"
    huge = {**LLAMA_70B, "num_hidden_layers": 400}
    result = run_init("--model", str(model_dir(tmp_path, huge, "huge")), "-o", str(out))
    assert result.exit_code == 2
    assert "does not fit" in result.output
    assert list(tmp_path.glob("*.yaml")) == [] and list(tmp_path.glob(".*tmp")) == []


def test_an_existing_file_needs_force(tmp_path: Path, gpus) -> None:
    gpus(2)
    out = tmp_path / "mine.yaml"
    out.write_text("name: mine\n")
    model = model_dir(tmp_path, LLAMA_8B, "llama-8b")
    refused = run_init("--model", str(model), "-o", str(out))
    assert refused.exit_code == 2 and "--force" in refused.output
    assert out.read_text() == "name: mine\n"
    forced = run_init("--model", str(model), "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert yaml.safe_load(out.read_text())["model"]["path"] == str(model)


def test_a_model_without_config_is_refused(tmp_path: Path) -> None:
    result = run_init("--model", str(tmp_path / "nothing"), "--devices", "cpu",
                      "-o", str(tmp_path / "x.yaml"))
    assert result.exit_code == 2
    assert "no config.json" in result.output
    assert not (tmp_path / "x.yaml").exists()
