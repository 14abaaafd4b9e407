"""Measure a grid of configurations with the real vLLM CPU engine, for replayed search studies.

Every configuration is run exactly as a study runs a trial: the space file (``--space``; its
``quality`` section dropped, ``measurement.max_repeats`` set to 0, the workload optionally
shortened with ``--requests`` etc.), a ``TrialRunner`` with a ``CpuSlotPool`` and the vLLM
launcher, so the recorded figures are what a study would have recorded. A space with a
``ladder:`` is measured with ``ladder.early_stop`` off, so every level is recorded (grid format
v2: the row's ``levels``); a replay applies the early stop itself. Known-invalid combinations
are kept in the grid: the runner rejects them before launch and they are recorded as
``rejected``. The vLLM-default configuration is measured twice: once as the study's default
trial (no swept flag passed, ``"default": true``) and once with its nominal values as explicit
flags (an ordinary grid point, when the axes hold those values).

One JSON line per configuration is appended as soon as it is measured (format:
docs/grid-format.md); a killed run resumes by skipping the configurations already in the file
(the file must have been measured with the same space), except those measured while other
processes competed for the host (``"disturbed": true``; the grid runs no repeat): they are moved
to ``<out>.disturbed.jsonl`` and measured again. Configurations are measured in slabs
(each slab completes a full product of the axes) and in a seeded random order inside a slab, so
a run cut short still leaves a complete product, and slow drift of the host is not confounded
with any one parameter.

    .venv/bin/python benchmarks/measure_grid.py \
        --space benchmarks/grids/quickstart-cpu-ladder.space.yaml \
        --out benchmarks/grids/quickstart-cpu-ladder.jsonl --parallel 1
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import itertools
import json
import os
import queue
import random
import shutil
import threading
import time
from collections.abc import Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotune.bench.ladder import levels_of
from autotune.bench.metrics import finite_metrics
from autotune.devices import CpuSlotPool
from autotune.engines import create
from autotune.engines.process import stop_all
from autotune.errors import SpaceError
from autotune.space.model import Space, load_space
from autotune.trial import TrialOutcome, TrialRunner
from autotune.trial_state import FailureKind

SPACE_FILE = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart-cpu.yaml"

# The axes (``--axis`` replaces one). A slab is a full product; later slabs add one more value
# of one axis, so the union of the finished slabs is always a full product too. ``draft`` is
# shorthand: 0 = no speculative decoding, else ngram with this draft length.
# The grid of benchmarks/grids/quickstart-cpu.jsonl (a space without a ladder):
AXES: dict[str, list[Any]] = {
    "quantization": ["none", "fp8"],  # int8 is a no-op on this dense model (vLLM 0.32)
    "max_num_batched_tokens": [256, 512, 2048],
    "max_num_seqs": [8, 32, 128],
    "enable_chunked_prefill": [True, False],
    "draft": [0, 2],
}
EXTRA_SLABS: list[tuple[str, Any]] = [("draft", 4)]
# A space with a ladder (search_spaces/quickstart-cpu.yaml): each configuration costs a
# start (~30 s) plus the main measurement and every ladder level on 2 cores, so 24 points (and
# the default trial). Prefix caching is the axis the shared-prefix workload is about.
LADDER_AXES: dict[str, list[Any]] = {
    "quantization": ["none", "fp8"],
    "max_num_batched_tokens": [512, 2048],
    "max_num_seqs": [8, 32, 128],
    "enable_chunked_prefill": [True],
    "enable_prefix_caching": [True, False],
    "draft": [0],
}


class GridSetupError(ValueError):
    """A space, axis or output file the grid cannot be measured with."""


def params_of(point: dict[str, Any]) -> dict[str, Any]:
    """Grid point → the space's parameter names (the draft length only exists with ngram)."""
    params = {k: v for k, v in point.items() if k != "draft"}
    if "draft" in point:
        if point["draft"]:
            params["speculative_method"] = "ngram"
            params["num_speculative_tokens"] = point["draft"]
        else:
            params["speculative_method"] = "none"
    return params


def parse_axes(items: list[str], base: dict[str, list[Any]],
               parameters: Container[str] | None = None) -> dict[str, list[Any]]:
    """``NAME=V1,V2`` (values read as YAML scalars: true, 128, fp8) replace ``base``'s axes;
    a default axis for a parameter the space lacks (not in ``parameters``) is left out."""
    axes = {k: list(v) for k, v in base.items()
            if parameters is None or (k == "draft" and "speculative_method" in parameters)
            or k in parameters}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            raise GridSetupError(f"--axis {item!r}: expected NAME=V1,V2,...")
        axes[name.strip()] = [yaml.safe_load(v.strip()) for v in values.split(",")]
    return axes


def parse_slabs(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise GridSetupError(f"--extra-slab {item!r}: expected NAME=VALUE")
        out.append((name.strip(), yaml.safe_load(value.strip())))
    return out


def check_axes(space: Space, axes: dict[str, list[Any]], extra: list[tuple[str, Any]]) -> None:
    """Every axis is a parameter of the space, and every parameter that is always active has
    an axis (a replayed search may only ask for values the grid holds)."""
    named = {k for k in axes if k != "draft"}
    drafts = list(axes.get("draft", [])) + [v for a, v in extra if a == "draft"]
    if drafts:
        named.add("speculative_method")
    if any(drafts):
        named.add("num_speculative_tokens")
    unknown = sorted(n for n in named if n not in space.parameters)
    if unknown:
        raise GridSetupError(f"--axis: {', '.join(unknown)} is not a parameter of the space "
                             f"(its parameters: {', '.join(space.parameters)})")
    missing = sorted(n for n, spec in space.parameters.items()
                     if spec.when is None and n not in named)
    if missing:
        raise GridSetupError(f"no axis for parameter {', '.join(missing)}: give it one with "
                             "--axis NAME=VALUE (one value fixes it)")
    for axis, _ in extra:
        if axis not in axes:
            raise GridSetupError(f"--extra-slab {axis}: not an axis ({', '.join(axes)})")
    for name, values in axes.items():
        if not values:
            raise GridSetupError(f"--axis {name}: no value")


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


def grid_space(space_file: Path, model_dir: str, workload: dict[str, Any]
               ) -> tuple[Space, dict[str, Any]]:
    """The space as a study would load it, made affordable for a grid: no quality probe, one
    measurement per configuration, every ladder level measured (early stop off), and the
    workload changes of ``workload`` (``num_requests``, ``concurrency``, ``input_tokens``,
    ``output_tokens``; None leaves the space's)."""
    try:
        load_space(space_file)  # the file's own errors, with its line numbers
    except SpaceError as exc:
        raise GridSetupError(str(exc)) from None
    data = yaml.safe_load(space_file.read_text())
    data.pop("quality", None)  # the probe needs a reference trial; the grid measures load only
    data["model"]["path"] = model_dir
    data["model"]["build_demo"] = False
    data.setdefault("measurement", {})["max_repeats"] = 0
    if data.get("ladder") is not None:
        data["ladder"]["early_stop"] = False  # every level recorded; a replay stops itself
    wl = data["workload"]
    if workload.get("num_requests") is not None:
        wl["num_requests"] = workload["num_requests"]
    for key in ("input_tokens", "output_tokens"):
        if workload.get(key) is not None:
            if key not in wl.get("prompts", {}):
                raise GridSetupError(f"--{key.replace('_', '-')}: the space's workload.prompts "
                                     f"({wl.get('prompts', {}).get('kind')}) has no {key}")
            wl["prompts"][key] = workload[key]
    if workload.get("concurrency") is not None:
        wl["load"] = {"kind": "concurrency", "concurrency": workload["concurrency"]}
    try:
        return Space.model_validate(data), data
    except ValueError as exc:
        raise GridSetupError(f"{space_file} with the grid's changes: {exc}") from None


def private_model_copy(source: str, target: Path) -> tuple[str, str]:
    """A copy of the demo model only this run reads (another session may rebuild the
    original mid-grid), and the hash of its weights."""
    if not target.exists():
        shutil.copytree(source, target)
    return str(target), _digest(str(target))


def set_aside_disturbed(path: Path) -> int:
    """Move the rows measured while other processes competed for the host (``disturbed``:
    the main measurement's CPU check; the grid runs no repeat) from ``path`` to
    ``<path>.disturbed.jsonl``, so that a resumed run measures them again. Their count."""
    if not path.exists():
        return 0
    kept, aside = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            (aside if "meta" not in row and row.get("disturbed") else kept).append(line)
    if aside:
        with open(path.with_name(path.name + ".disturbed.jsonl"), "a") as out:
            out.write("".join(f"{line}\n" for line in aside))
        path.write_text("".join(f"{line}\n" for line in kept))
    return len(aside)


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


def file_meta(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if "meta" in row:
                return dict(row["meta"])
    return None


def grid_row(params: dict[str, Any], default: bool, outcome: TrialOutcome, wall_s: float
             ) -> dict[str, Any]:
    """One configuration line (docs/grid-format.md), the ladder's levels included."""
    levels = [
        {"load": entry["load"], "metrics": finite_metrics(entry.get("metrics") or {}),
         "timings": {"benchmark_s": round(float((entry.get("metrics") or {})
                                                .get("duration_s", 0.0)), 3)}}
        for entry in levels_of(outcome.measurements)
    ]
    row: dict[str, Any] = {
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
        "wall_s": round(wall_s, 2),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if levels:
        row["levels"] = levels
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=SPACE_FILE, help="the space file")
    parser.add_argument("--out", type=Path, required=True, help="the grid file (JSON Lines)")
    parser.add_argument(
        "--axis", action="append", default=[], metavar="NAME=V1,V2",
        help="the values of one axis (replaces the default axis; draft=0,2 is shorthand for "
             "speculative_method/num_speculative_tokens)",
    )
    parser.add_argument("--extra-slab", action="append", default=None, metavar="NAME=VALUE",
                        help="a later slab adding one value to one axis (replaces the default)")
    parser.add_argument("--requests", type=int, default=None, help="workload.num_requests")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="workload.load: this concurrency")
    parser.add_argument("--input-tokens", type=int, default=None,
                        help="workload.prompts.input_tokens")
    parser.add_argument("--output-tokens", type=int, default=None,
                        help="workload.prompts.output_tokens")
    parser.add_argument("--limit", type=int, default=None,
                        help="measure at most this many configurations in this run")
    parser.add_argument("--parallel", type=int, default=2, help="engines at once (CPU slots)")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/autotune-grid/logs"))
    parser.add_argument("--model-copy", type=Path, default=Path("/tmp/autotune-grid/model"))
    parser.add_argument("--seed", type=int, default=0, help="order of the points in a slab")
    parser.add_argument(
        "--deadline", default=None, help="UTC HH:MM after which no further engine is started"
    )
    parser.add_argument(
        "--lock", type=Path, default=None,
        help="a file locked (flock) around each configuration, so other engine runs on this "
             "host (tests, other benchmarks) interleave instead of sharing the cores",
    )
    args = parser.parse_args()
    try:
        plan = prepare(args)
    except GridSetupError as exc:
        raise SystemExit(f"measure_grid: {exc}") from None
    measure(args, plan)


@dataclass
class Plan:
    """What a run measures: the space (and its data, stored in the meta line), the model it
    copies, the axes, and the configurations not yet in the output file."""

    space: Space
    data: dict[str, Any]
    source: str
    digest: str
    axes: dict[str, list[Any]]
    extra: list[tuple[str, Any]]
    todo: list[tuple[dict[str, Any], bool]]


def prepare(args: argparse.Namespace) -> Plan:
    """Check everything before any file is written or engine started: the space, the axes,
    an existing output's space."""
    try:
        raw = yaml.safe_load(args.space.read_text())
    except OSError as exc:
        raise GridSetupError(f"cannot read {args.space}: {exc.strerror or exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise GridSetupError(f"{args.space}: not a space file (no model section)")
    source = os.path.expanduser(raw["model"]["path"])
    workload = {"num_requests": args.requests, "concurrency": args.concurrency,
                "input_tokens": args.input_tokens, "output_tokens": args.output_tokens}
    space, data = grid_space(args.space, source, workload)  # validated before any copy
    has_ladder = space.ladder is not None
    axes = parse_axes(args.axis, LADDER_AXES if has_ladder else AXES, space.parameters)
    extra = (parse_slabs(args.extra_slab) if args.extra_slab is not None
             else ([] if has_ladder else EXTRA_SLABS))
    check_axes(space, axes, extra)
    stored = {k: v for k, v in data.items() if k != "model"} | {"model": {**data["model"]}}
    meta = file_meta(args.out)
    if meta is not None and "space" in meta and meta["space"] != stored:
        raise GridSetupError(
            f"{args.out} was measured with another space (its meta line): measure this one "
            "into a new file"
        )
    if not Path(source, "model.safetensors").exists():
        raise GridSetupError(f"{args.space}: model.path {source} holds no model.safetensors "
                             "(build the demo model first: autotune demo)")
    aside = set_aside_disturbed(args.out)
    if aside:
        print(f"{aside} disturbed configuration(s) moved to {args.out}.disturbed.jsonl: "
              "measured again", flush=True)
    already = done_keys(args.out)
    rng = random.Random(args.seed)
    todo: list[tuple[dict[str, Any], bool]] = [(space.default_params(), True)]
    for slab in slabs(axes, extra):
        points = [params_of(p) for p in slab]
        rng.shuffle(points)
        todo += [(p, False) for p in points]
    todo = [(p, d) for p, d in todo if key_of(p, d) not in already]
    print(f"{len(already)} configurations already in {args.out}; {len(todo)} to go"
          + (f", {args.limit} in this run" if args.limit is not None else ""), flush=True)
    if args.limit is not None:
        todo = todo[: args.limit]
    return Plan(space, data, source, _digest(source), axes, extra, todo)


@contextmanager
def host_lock(path: Path | None) -> Iterator[None]:
    """An exclusive flock on ``path`` (None: no lock)."""
    if path is None:
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _digest(model_dir: str) -> str:
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()[:16]


def measure(args: argparse.Namespace, plan: Plan) -> None:
    space, data, source, digest = plan.space, plan.data, plan.source, plan.digest
    axes, extra, todo = plan.axes, plan.extra, plan.todo
    if not todo:
        print(f"nothing to measure; {len(done_keys(args.out))} configurations in {args.out}")
        return
    model_dir, copied = private_model_copy(source, args.model_copy)
    if copied != digest:
        raise SystemExit(f"measure_grid: {args.model_copy} holds another model than {source} "
                         f"(weights {copied} vs {digest}): remove it or pass --model-copy")
    space = space.model_copy(update={"model": space.model.model_copy(
        update={"path": model_dir})})
    pool = CpuSlotPool(slots=args.parallel)
    log_dir = args.log_dir / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    log_dir.mkdir(parents=True, exist_ok=True)
    runner = TrialRunner(space, create("vllm"), pool, log_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    write_lock = threading.Lock()
    if not args.out.exists() or not args.out.read_text().strip():
        meta = {
            "space": {k: v for k, v in data.items() if k != "model"} | {"model": data["model"]},
            "model_sha256_16": digest,
            "axes": axes,
            "extra_slabs": extra,
            "devices": pool.describe(),
            "host_cores": os.cpu_count(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        args.out.write_text(json.dumps({"meta": meta}) + "\n")

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
            with host_lock(args.lock):
                outcome = runner.run(number, params, is_default=default)
            if outcome.failure is not None and outcome.failure.kind == FailureKind.INTERRUPTED:
                return  # not a measurement: a resumed run measures it
            row = grid_row(params, default, outcome, time.monotonic() - t0)
            with write_lock:
                with args.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                m = outcome.metrics
                curve = (f"cap={m.get('capacity_rps', 0):5.2f}rps "
                         f"inter={m.get('interactivity_at_capacity', 0):5.1f} "
                         f"levels={len(row.get('levels', []))} " if space.ladder else "")
                print(
                    f"[{time.monotonic() - started:6.0f}s] {outcome.state:9s} "
                    f"{outcome.failure.kind.value if outcome.failure else '':15s} "
                    f"thr={m.get('output_throughput', 0):7.0f} "
                    f"e2e95={m.get('e2e_p95_ms', 0):6.0f} ttft95={m.get('ttft_p95_ms', 0):6.0f} "
                    f"{curve}{'DEFAULT ' if default else ''}{params} ({row['wall_s']:.0f}s)",
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
