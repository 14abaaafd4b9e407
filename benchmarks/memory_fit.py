"""Memory-fit estimate vs what vLLM logs at start, on real CPU engines.

Starts the real vLLM CPU engine on the quickstart's demo model for a handful of configurations
(explicit KV budgets, budgets vLLM derives from ``gpu_memory_utilization``, dtypes, a
``max_model_len`` that is not a multiple of the block size, one configuration the estimate
rejects), one at a time, only until ``/health`` answers; then prints the estimated and logged
KV-cache tokens (and KV memory) side by side with the relative error. The estimate is
``TrialRunner.memory_estimate`` without calibration, i.e. what a study's first trial predicts.

    .venv/bin/python benchmarks/memory_fit.py            # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/memory_fit.py --from-logs autotune_logs/STUDY

``--from-logs`` starts nothing: it re-reads the engine logs of an earlier study or grid run
(their "non-default args" line gives the flags) and compares the same way.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from common import arg_parser, space_data

from autotune.devices import CpuSlotPool
from autotune.engines.base import EngineConfig
from autotune.engines.failures import EngineFailure
from autotune.engines.vllm import VllmLauncher, engine_config
from autotune.model import memory_fit
from autotune.space.model import Space
from autotune.trial import TrialRunner

GIB = 1024**3

# name → engine flags replacing the quickstart's fixed flags (dtype float16, eager, 1G KV).
CONFIGS: dict[str, dict[str, Any]] = {
    "quickstart (1G KV)": {},
    "float32, 1G KV": {"dtype": "float32"},
    "256M KV, max_model_len 1000": {"kv_cache_memory_bytes": "256M", "max_model_len": 1000},
    "auto budget, util 0.25": {"kv_cache_memory_bytes": None, "gpu_memory_utilization": 0.25},
    "auto budget, util 0.35, fp8 weights": {
        "kv_cache_memory_bytes": None, "gpu_memory_utilization": 0.35,
        "quantization": "fp8_per_channel", "max_num_seqs": 32,
    },
    "predicted misfit: 200K KV": {"kv_cache_memory_bytes": "200K"},
}


def base_space() -> dict[str, Any]:
    data = space_data("quickstart-cpu", quality=False)
    data["model"]["build_demo"] = False
    data["objectives"] = [{"metric": "output_throughput", "direction": "maximize"}]
    return data


def config_for(data: dict[str, Any], overrides: dict[str, Any]) -> tuple[Space, EngineConfig]:
    data = {**data, "model": dict(data["model"]), "engine": dict(data["engine"])}
    flags = dict(data["engine"]["flags"])
    for name, value in overrides.items():
        if name == "max_model_len":
            data["model"]["max_model_len"] = value
        elif value is None:
            flags.pop(name, None)
        else:
            flags[name] = value
    data["engine"]["flags"] = flags
    data["parameters"] = {k: v for k, v in data["parameters"].items() if k not in flags}
    space = Space.model_validate(data)
    return space, engine_config(space, {}, is_default=True)


def row(name: str, predicted: memory_fit.MemoryEstimate | None, log: str, outcome: str) -> str:
    logged = memory_fit.LoggedMemory.parse(log)
    est = predicted.kv_tokens if predicted else None
    error = ""
    if est is not None and logged.kv_tokens:
        error = f"{est / logged.kv_tokens - 1:+.2%}"
    est_gib = f"{max(predicted.kv_memory, 0) / GIB:.3f}" if predicted else "-"
    log_gib = f"{logged.kv_memory_gib:.3f}" if logged.kv_memory_gib is not None else "-"
    return (f"| {name} | {est if est is not None else '-'} | "
            f"{logged.kv_tokens if logged.kv_tokens is not None else '-'} | {error} | "
            f"{est_gib} | {log_gib} | {outcome} |")


HEADER = ("| configuration | KV tokens estimated | KV tokens logged | error | "
          "KV GiB estimated | KV GiB logged | outcome |\n|---|---:|---:|---:|---:|---:|---|")


def run_engines(log_dir: Path) -> None:
    data = base_space()
    data["model"]["path"] = os.path.expanduser(data["model"]["path"])
    pool = CpuSlotPool(slots=1)
    launcher = VllmLauncher()
    print(HEADER, flush=True)
    for i, (name, overrides) in enumerate(CONFIGS.items()):
        space, config = config_for(data, overrides)
        runner = TrialRunner(space, launcher, pool, log_dir)
        predicted = runner.memory_estimate(config)
        misfit = predicted.misfit() if predicted else None
        devices = pool.acquire(1)
        log_path = log_dir / f"{i}.log"
        started = time.monotonic()
        try:
            engine = launcher.start(config, devices, log_path)
        except EngineFailure as failure:
            outcome = f"failed: {failure.kind.value}"
        else:
            engine.stop()
            outcome = f"started in {time.monotonic() - started:.0f} s"
        finally:
            pool.release(devices)
        if misfit:
            outcome += f"; predicted misfit: {misfit}"
        print(row(name, predicted, log_path.read_text(errors="replace"), outcome), flush=True)
        non_kv = memory_fit.LoggedMemory.parse(log_path.read_text(errors="replace")).non_kv_gib
        if non_kv is not None:
            print(f"|   worker resident memory besides the KV cache (logged) | | | | | "
                  f"{non_kv:.2f} | |", flush=True)


_ARGS = re.compile(r"non-default args: (\{.*\})")


def from_logs(directory: Path) -> None:
    data = base_space()
    pool = CpuSlotPool(slots=1)
    print(HEADER)
    for path in sorted(directory.rglob("*.log")):
        text = path.read_text(errors="replace")
        found = _ARGS.search(text)
        if not found:
            continue
        args = ast.literal_eval(found.group(1))
        data["model"]["path"] = args["model"]
        overrides = {k: args.get(k) for k in ("kv_cache_memory_bytes", "gpu_memory_utilization",
                                              "dtype", "quantization", "max_num_seqs",
                                              "max_num_batched_tokens", "enforce_eager")}
        overrides["max_model_len"] = args.get("max_model_len", data["model"]["max_model_len"])
        space, config = config_for(data, overrides)
        predicted = TrialRunner(space, VllmLauncher(), pool, directory).memory_estimate(config)
        print(row(path.name, predicted, text, ""))


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--from-logs", type=Path, default=None)
    args = parser.parse_args()
    if args.from_logs:
        from_logs(args.from_logs)
        return
    with tempfile.TemporaryDirectory(prefix="autotune-memory-fit-") as tmp:
        run_engines(Path(tmp))


if __name__ == "__main__":
    main()
