"""Newcomer benchmark: how long a fresh clone takes to its first Pareto front.

``--phase all`` (the default) clones this repository into a temporary directory and runs
README's first command there (``bash scripts/quickstart.sh``) with a fresh, empty HOME, so
nothing is cached: not pip's downloads, not the demo model, not vLLM's caches. It prints the
phases: install (until ``scripts/setup.sh``'s stamp appears), the demo model's build (until
its recipe file appears), every trial (from the study's database: wall time, engine start,
measuring) and the first front (the end-of-study summary). It takes about 10 minutes of both
cores: run it on an otherwise idle machine.

``--phase model`` builds the demo model of a baseline recipe (``autotune/model/demo.py`` at
``--baseline``, from git) and the current recipe into temporary directories, each in its own
process, and prints their wall and CPU times side by side, the current model's hash (built
``--builds`` times: the hashes must agree) and its accuracy per task on the shipped eval set
(``evals/demo-tasks.jsonl``), scored greedily with ``transformers`` (no vLLM).

    .venv/bin/python benchmarks/newcomer.py [--phase all|model] [--baseline REF] [--builds 2]
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from common import ROOT, arg_parser, scratch_dir

# The last commit with the 6-minute recipe ("digit-tasks-1"): the "before" of issue #14.
DEFAULT_BASELINE = "8352a25"
EVAL_SET = ROOT / "evals" / "demo-tasks.jsonl"

BUILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("demo_recipe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.build_demo_model(sys.argv[2])
"""


def build_in_child(recipe_file: Path, target: Path) -> tuple[float, float]:
    """Build ``target`` with the recipe module at ``recipe_file`` in a fresh process;
    (wall s, CPU s of that process, all its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", BUILD, str(recipe_file), str(target)], check=True,
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def weights_hash(target: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(target.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def task_accuracy(target: Path) -> dict[str, float]:
    """Greedy exact-match accuracy per task on the shipped eval set (float32 compute)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autotune.model.demo_training import greedy_answers

    rows = [json.loads(line) for line in EVAL_SET.read_text().splitlines() if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    torch.set_num_threads(1)  # a tiny model: more threads only wait on each other when busy
    answers = greedy_answers(model, tokenizer, [r["prompt"] for r in rows])
    right: dict[str, list[bool]] = {}
    for answer, row in zip(answers, rows, strict=True):
        right.setdefault(row["task"], []).append(answer == row["answer"])
        right.setdefault("all", []).append(answer == row["answer"])
    return {task: sum(hits) / len(hits) for task, hits in right.items()}


def model_phase(baseline: str, builds: int, skip_baseline: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="newcomer-model-") as tmp:
        work = Path(tmp)
        rows: list[tuple[str, float, float, str]] = []
        if not skip_baseline:
            old = work / "old_demo_model.py"
            old.write_text(subprocess.run(
                ["git", "show", f"{baseline}:autotune/demo_model.py"], cwd=ROOT, check=True,
                capture_output=True, text=True).stdout)
            wall, cpu = build_in_child(old, work / "old")
            rows.append((f"baseline ({baseline})", wall, cpu, weights_hash(work / "old")))
        hashes = set()
        for i in range(builds):
            target = work / f"new-{i}"
            wall, cpu = build_in_child(ROOT / "autotune" / "model" / "demo.py", target)
            hashes.add(weights_hash(target))
            rows.append((f"current, build {i + 1}", wall, cpu, weights_hash(target)))
        print(f"\n{'recipe':<26} {'wall s':>8} {'CPU s':>8}  weights sha256")
        for name, wall, cpu, digest in rows:
            print(f"{name:<26} {wall:8.1f} {cpu:8.1f}  {digest}")
        recipe = json.loads((work / "new-0" / "autotune-demo.json").read_text())
        print(f"\ncurrent recipe: {json.dumps(recipe)}")
        print("same weights at every build:", "yes" if len(hashes) == 1 else "NO")
        if not skip_baseline:
            # The baseline trains the recipe that made the shipped files: same bytes, same host
            # class, is what "derived deterministically, verified by hash" means here.
            same = weights_hash(work / "old") == weights_hash(work / "new-0")
            print("baseline training reproduces the shipped weights:", "yes" if same else "NO")
        for name, target in (("baseline", work / "old"), ("current", work / "new-0")):
            if target.exists():
                accuracy = task_accuracy(target)
                print(f"{name} accuracy on {EVAL_SET.name}: "
                      + "  ".join(f"{task} {value:.1%}" for task, value in accuracy.items()))


def stamp_line(stream, lines: list[tuple[float, str]]) -> None:
    for raw in iter(stream.readline, ""):
        lines.append((time.time(), raw.rstrip("\n")))
        sys.stdout.write(raw)
        sys.stdout.flush()


def first_mtime(pattern_dir: Path, pattern: str) -> float | None:
    found = sorted(pattern_dir.glob(pattern))
    return min(p.stat().st_mtime for p in found) if found else None


def trial_rows(clone: Path) -> list[dict]:
    """Per trial: wall start/end (Optuna's table) and autotune's phase timings."""
    db = clone / "autotune.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        times = conn.execute(
            "SELECT number, datetime_start, datetime_complete FROM trials ORDER BY number"
        ).fetchall()
    shown = subprocess.run(
        [str(clone / ".venv/bin/autotune"), "study", "show", "quickstart-cpu", "--format",
         "json"], cwd=clone, capture_output=True, text=True)
    by_number = {}
    if shown.returncode == 0:
        by_number = {t["number"]: t for t in json.loads(shown.stdout)["trials"]}
    out = []
    for number, start, end in times:
        trial = by_number.get(number, {})
        out.append({
            "number": number,
            "start": datetime.fromisoformat(start).timestamp() if start else None,
            "end": datetime.fromisoformat(end).timestamp() if end else None,
            "state": trial.get("state", "?"),
            "timings": trial.get("timings", {}),
        })
    return out


def full_phase(ref: str | None, keep: bool) -> None:
    work = scratch_dir("newcomer-")
    clone, home = work / "autotune", work / "home"
    home.mkdir()
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        if ref:
            subprocess.run(["git", "checkout", "--quiet", ref], cwd=clone, check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "VIRTUAL_ENV"))}
        env.update(HOME=str(home), PYTHONPATH="")  # nothing cached: a fresh machine's user
        started = time.time()
        lines: list[tuple[float, str]] = []
        process = subprocess.Popen(["bash", "scripts/quickstart.sh"], cwd=clone, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        reader = threading.Thread(target=stamp_line, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            code = process.wait()
        except KeyboardInterrupt:
            os.killpg(process.pid, signal.SIGINT)
            process.wait()
            raise
        reader.join(timeout=5)
        ended = time.time()
        report(started, ended, code, clone, home, lines)
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(started: float, ended: float, code: int, clone: Path, home: Path,
           lines: list[tuple[float, str]]) -> None:
    installed = first_mtime(clone / ".venv", ".autotune-setup-*")
    model_dir = home / ".cache" / "autotune" / "demo-llama"
    built = first_mtime(model_dir, "autotune-demo.json")
    # the end-of-study summary ("N trial(s) run here[, and K fresh server(s) …] in S s")
    front = next((t for t, line in lines if "trial(s) run here" in line), None)
    trials = trial_rows(clone)
    phases: list[tuple[str, float | None, str]] = []
    phases.append(("install (scripts/setup.sh)", installed and installed - started, ""))
    if built and installed:
        recipe = json.loads((model_dir / "autotune-demo.json").read_text())
        # From the CLI's "building the demo model" line when there is one (the CLI's own
        # start-up is not the model's), else from the end of the install.
        begun = next((t for t, line in lines if "building the demo model" in line), installed)
        phases.append(("demo model", built - begun, f"build_s {recipe.get('build_s')}"))
    previous = built or installed
    for trial in trials:
        timings = trial["timings"]
        detail = "  ".join(f"{k.removesuffix('_s')} {v:.0f}" for k, v in timings.items()
                           if isinstance(v, (int, float)))
        if trial["start"] and trial["end"]:
            phases.append((f"trial {trial['number']} ({trial['state']})",
                           trial["end"] - trial["start"], detail))
        previous = trial["end"] or previous
    if trials and built and trials[0]["start"]:
        phases.append(("study start before trial 0", trials[0]["start"] - built, ""))
    phases.append(("first front (from the start)", front and front - started, ""))
    phases.append(("README's command, all of it", ended - started, f"exit {code}"))
    print(f"\n{'phase':<32} {'s':>7}  detail")
    for name, seconds, detail in phases:
        shown = f"{seconds:7.1f}" if seconds is not None else "      ?"
        print(f"{name:<32} {shown}  {detail}")
    trial_total = sum(t["end"] - t["start"] for t in trials if t["start"] and t["end"])
    startups = sum(t["timings"].get("startup_s") or 0 for t in trials)
    print(f"\n{len(trials)} trials: {trial_total:.0f} s, of which engine starts {startups:.0f} s")


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--phase", choices=["all", "model"], default="all")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help="git ref of the recipe to compare with (--phase model)")
    parser.add_argument("--builds", type=int, default=2,
                        help="builds of the current recipe, hashes compared (--phase model)")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="build only the current recipe (--phase model)")
    parser.add_argument("--ref", help="check this ref out in the clone (--phase all)")
    parser.add_argument("--keep", action="store_true", help="keep the clone (--phase all)")
    args = parser.parse_args()
    if args.phase == "model":
        model_phase(args.baseline, args.builds, args.skip_baseline)
    else:
        full_phase(args.ref, args.keep)


if __name__ == "__main__":
    main()
