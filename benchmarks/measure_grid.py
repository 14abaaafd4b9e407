"""Measure a grid of configurations with the real vLLM CPU engine, for replayed search studies.

Every configuration is run exactly as a study runs a trial: the quickstart space file (its
``quality`` section dropped, ``measurement.max_repeats`` set to 0, a shorter workload), a
``TrialRunner`` with a ``CpuSlotPool`` and the vLLM launcher, so the recorded figures are what a
study would have recorded. Known-invalid combinations are kept in the grid: the runner rejects
them before launch and they are recorded as ``rejected``. The vLLM-default configuration is
measured twice: once as the study's default trial (no swept flag passed, ``"default": true``)
and once with its nominal values as explicit flags (an ordinary grid point).

One JSON line per configuration is appended as soon as it is measured (format:
docs/grid-format.md); a killed run resumes by skipping the configurations already in the file.
Configurations are measured in slabs (each slab completes a full product of the axes) and in a
seeded random order inside a slab, so a run cut short still leaves a complete product, and slow
drift of the host is not confounded with any one parameter.

    .venv/bin/python benchmarks/measure_grid.py --out benchmarks/grids/quickstart-cpu.jsonl \
        --parallel 2
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import queue
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.devices import CpuSlotPool  # noqa: E402
from autotune.engines import FailureKind, create  # noqa: E402
from autotune.engines.process import stop_all  # noqa: E402
from autotune.space import Space  # noqa: E402
from autotune.trial import TrialRunner, finite_metrics  # noqa: E402

SPACE_FILE = ROOT / "search_spaces" / "quickstart-cpu.yaml"

# The axes. A slab is a full product; later slabs add one more value of one axis, so the
# union of the finished slabs is always a full product too.
AXES: dict[str, list[Any]] = {
    "quantization": ["none", "fp8"],  # int8 is a no-op on this dense model (vLLM 0.32)
    "max_num_batched_tokens": [256, 512, 2048],
    "max_num_seqs": [8, 32, 128],
    "enable_chunked_prefill": [True, False],
    "draft": [0, 2],  # 0 = no speculative decoding, else ngram with this draft length
}
EXTRA_SLABS: list[tuple[str, Any]] = [("draft", 4)]

WORKLOAD = {"num_requests": 48, "input_tokens": 256, "output_tokens": 64, "concurrency": 32}


def params_of(point: dict[str, Any]) -> dict[str, Any]:
    """Grid point → the space's parameter names (the draft length only exists with ngram)."""
    params = {k: v for k, v in point.items() if k != "draft"}
    if point["draft"]:
        params["speculative_method"] = "ngram"
        params["num_speculative_tokens"] = point["draft"]
    else:
        params["speculative_method"] = "none"
    return params


def key_of(params: dict[str, Any], default: bool) -> str:
    return json.dumps({"params": params, "default": default}, sort_keys=True)


def slabs(axes: dict[str, list[Any]], extra: list[tuple[str, Any]]) -> list[list[dict[str, Any]]]:
    done = {k: list(v) for k, v in axes.items()}
    out = [_product(done)]
    for axis, value in extra:
        out.append(_product({**done, axis: [value]}))
        done[axis].append(value)
    return out


def _product(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def grid_space(model_dir: str) -> tuple[Space, dict[str, Any]]:
    """The quickstart space as a study would load it, made affordable for a grid."""
    data = yaml.safe_load(SPACE_FILE.read_text())
    data.pop("quality", None)  # the probe needs a reference trial; the grid measures load only
    data["model"]["path"] = model_dir
    data["model"]["build_demo"] = False
    data.setdefault("measurement", {})["max_repeats"] = 0
    workload = data["workload"]
    workload["num_requests"] = WORKLOAD["num_requests"]
    workload["prompts"]["input_tokens"] = WORKLOAD["input_tokens"]
    workload["prompts"]["output_tokens"] = WORKLOAD["output_tokens"]
    workload["load"] = {"kind": "concurrency", "concurrency": WORKLOAD["concurrency"]}
    return Space.model_validate(data), data


def private_model_copy(source: str, target: Path) -> tuple[str, str]:
    """A copy of the demo model only this run reads (another session may rebuild the
    original mid-grid), and the hash of its weights."""
    if not target.exists():
        shutil.copytree(source, target)
    digest = hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()[:16]
    return str(target), digest


def done_keys(path: Path) -> set[str]:
    keys: set[str] = set()
    if not path.exists():
        return keys
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if "meta" in row:
            continue
        keys.add(key_of(row["params"], bool(row.get("default"))))
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/grids/quickstart-cpu.jsonl")
    parser.add_argument("--parallel", type=int, default=2, help="engines at once (CPU slots)")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/autotune-grid/logs"))
    parser.add_argument("--model-copy", type=Path, default=Path("/tmp/autotune-grid/model"))
    parser.add_argument("--seed", type=int, default=0, help="order of the points in a slab")
    parser.add_argument(
        "--deadline", default=None, help="UTC HH:MM after which no further engine is started"
    )
    args = parser.parse_args()

    source = os.path.expanduser(yaml.safe_load(SPACE_FILE.read_text())["model"]["path"])
    model_dir, digest = private_model_copy(source, args.model_copy)
    space, data = grid_space(model_dir)
    pool = CpuSlotPool(slots=args.parallel)
    log_dir = args.log_dir / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    log_dir.mkdir(parents=True, exist_ok=True)
    runner = TrialRunner(space, create("vllm"), pool, log_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    write_lock = threading.Lock()
    if not args.out.exists() or not args.out.read_text().strip():
        meta = {
            "space": {k: v for k, v in data.items() if k != "model"}
            | {"model": {**data["model"], "path": os.path.expanduser(source)}},
            "model_sha256_16": digest,
            "axes": AXES,
            "extra_slabs": EXTRA_SLABS,
            "devices": pool.describe(),
            "host_cores": os.cpu_count(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        args.out.write_text(json.dumps({"meta": meta}) + "\n")

    already = done_keys(args.out)
    rng = random.Random(args.seed)
    todo: list[tuple[dict[str, Any], bool]] = [(space.default_params(), True)]
    for slab in slabs(AXES, EXTRA_SLABS):
        points = [params_of(p) for p in slab]
        rng.shuffle(points)
        todo += [(p, False) for p in points]
    todo = [(p, d) for p, d in todo if key_of(p, d) not in already]
    print(f"{len(already)} configurations already in {args.out}; {len(todo)} to go", flush=True)

    deadline = None
    if args.deadline:
        hh, mm = (int(x) for x in args.deadline.split(":"))
        now = time.gmtime()
        deadline = time.time() + ((hh * 60 + mm) - (now.tm_hour * 60 + now.tm_min)) * 60

    work: queue.Queue[tuple[int, dict[str, Any], bool]] = queue.Queue()
    for number, (params, default) in enumerate(todo):
        work.put((number, params, default))
    started = time.monotonic()

    def worker() -> None:
        while not runner.stop_event.is_set():
            if deadline is not None and time.time() > deadline:
                return
            try:
                number, params, default = work.get_nowait()
            except queue.Empty:
                return
            t0 = time.monotonic()
            outcome = runner.run(number, params, is_default=default)
            if outcome.failure is not None and outcome.failure.kind == FailureKind.INTERRUPTED:
                return  # not a measurement: a resumed run measures it
            row = {
                "params": params,
                "default": default,
                "state": outcome.state,
                "failure_kind": outcome.failure.kind.value if outcome.failure else None,
                "failure_reason": outcome.failure.reason if outcome.failure else None,
                "metrics": finite_metrics(outcome.metrics),
                "flags": outcome.flags,
                "devices": outcome.devices,
                "disturbed": outcome.disturbed,
                "notes": outcome.notes,
                "timings": {k: round(v, 2) for k, v in outcome.timings.items()},
                "wall_s": round(time.monotonic() - t0, 2),
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with write_lock:
                with args.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                m = outcome.metrics
                print(
                    f"[{time.monotonic() - started:6.0f}s] {outcome.state:9s} "
                    f"{outcome.failure.kind.value if outcome.failure else '':15s} "
                    f"thr={m.get('output_throughput', 0):7.0f} "
                    f"e2e95={m.get('e2e_p95_ms', 0):6.0f} ttft95={m.get('ttft_p95_ms', 0):6.0f} "
                    f"{'DEFAULT ' if default else ''}{params} ({row['wall_s']:.0f}s)",
                    flush=True,
                )

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.parallel)]
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.5)
    except KeyboardInterrupt:
        runner.stop_event.set()
        stop_all()
        for thread in threads:
            thread.join()
    print(
        f"done in {time.monotonic() - started:.0f}s; {len(done_keys(args.out))} configurations "
        f"in {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
