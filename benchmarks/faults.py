"""Fault benchmark: real quickstart studies (short workload, real vLLM CPU engines) with one
fault injected into each, and what the study made of it.

Faults, in one run: the engine killed with SIGKILL mid-trial; the engine killed with SIGKILL
during its warm-up (right after ``/health`` first answered), in the default trial that records
the quality reference; the engine stopped with SIGSTOP mid-trial; the port the engine is given
taken by another process; the controller killed with SIGKILL mid-trial, then the study resumed;
PostgreSQL connections cut repeatedly under two workers sharing a study; PostgreSQL stopped for
longer than the heartbeat grace under two workers; a worker killed with SIGKILL right after it
claimed a trial; a worker on a host without the model. For each it prints:

- trials lost: the study's budget minus the trials it holds as finished (complete, failed or
  rejected), plus any trial left "running" (goal 0);
- measured twice: configurations with more than one complete measurement (goal 0);
- engines left: vLLM processes of this run alive after the study ended (goal 0);
- detect s: seconds from the injection to the study's reaction (the trial recorded, the
  engine gone, the worker carrying on);
- finished: whether the study reached its budget with nobody stepping in (a controller killed
  on purpose is resumed by hand: "resumed").

    .venv/bin/python benchmarks/faults.py [--model DIR] [--only NAME ...]
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from common import ROOT, add_model_option, arg_parser, demo_model

from autotune.store import open_catalog
from autotune.testing.pg_server import PostgresServer
from autotune.testing.processes import SESSION_MARKER  # marks this run's engines
from autotune.testing.spaces import small_space

BUDGET = 2  # trial 1 is the one hit: it runs after the default (trial 0)
HEALTH_ANSWERED = '"GET /health HTTP/1.1" 200'  # uvicorn's access line in the engine log
PORT_HOLDER = '''
import os, socket, sys, time
argv = sys.argv[1:]
marker = os.environ["AUTOTUNE_FAULT_MARKER"]
if not os.path.exists(marker):  # the first start only: another process takes the port
    open(marker, "w").close()
    port = int(argv[argv.index("--port") + 1])
    if os.fork() == 0:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        time.sleep(90)
        os._exit(0)
    time.sleep(0.5)
os.execv(argv[0], argv)
'''


def engine_processes() -> list[int]:
    """Live processes of this run's engines: their guards (and sentinels), the API servers and
    what they spawned (``VLLM::EngineCore``, ``VLLM::Worker``: renamed, so a match on the
    server's command line alone misses them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        engine = b"vllm.entrypoints.openai.api_server" in cmdline or cmdline.startswith(b"VLLM::")
        if engine and state != "Z" and SESSION_MARKER.encode() in environ:
            found.append(int(entry))
    return found


@dataclass
class Result:
    fault: str
    lost: int
    twice: int
    engines_left: int
    detect_s: float | None
    note: str
    finished: str = "-"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "autotune.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(check: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"no {what} within {timeout_s:.0f}s")


def rows(url: str, name: str) -> list:
    catalog = open_catalog(url)
    return catalog.list_trials(name) if catalog.has_schema() else []


def running_trial(url: str, name: str, number: int) -> bool:
    return any(r.number == number and r.state == "running" for r in rows(url, name))


def serving(log: Path) -> bool:
    """The engine answered its first measured request (its log shows the completions)."""
    return log.exists() and "POST /v1/completions" in log.read_text(errors="replace")


def settle(url: str, name: str) -> Result:
    trials = rows(url, name)
    finished = [r for r in trials if r.state in ("complete", "failed", "rejected")]
    left_running = sum(r.state == "running" for r in trials)
    complete = collections.Counter(
        json.dumps([r.params, r.is_default], sort_keys=True)
        for r in trials if r.state == "complete")
    return Result("", max(0, BUDGET - len(finished)) + left_running,
                  sum(n - 1 for n in complete.values() if n > 1), len(engine_processes()),
                  None, f"{len(trials)} rows: " + ", ".join(
                      f"{state} {n}" for state, n in collections.Counter(
                          r.state for r in trials).items()))


def finished_after(url: str, name: str, number: int, since: float) -> float | None:
    for r in rows(url, name):
        if r.number == number and r.state != "running" and r.finished_at is not None:
            return time.time() - since
    return None


def is_guard(pid: int) -> bool:
    try:
        return b"autotune.engines.guard" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def engine_signal(sig: int, url: str, name: str, logs: Path, number: int) -> Result:
    """Signal the engine processes (not their guard) of trial ``number`` once it is serving;
    detect s: until every process of that engine, its guard included, is gone (the fault
    noticed and the engine torn down; the trial may then start it again)."""
    proc = cli("study", "start", "--space", str(logs / "space.yaml"), "--storage", url,
               "--name", name, "--trials", str(BUDGET), "--log-dir", str(logs))
    log = logs / name / f"trial-{number:04d}.log"
    wait_for(lambda: running_trial(url, name, number) and serving(log), 600, "serving engine")
    tree = engine_processes()
    pids = [pid for pid in tree if not is_guard(pid)]
    injected = time.time()
    for pid in pids:
        os.kill(pid, sig)
    detect = wait_for(lambda: not set(tree) & set(engine_processes())
                      and time.time() - injected, 600, "the engine torn down")
    if sig == signal.SIGSTOP:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    proc.wait(timeout=900)
    result = settle(url, name)
    result.detect_s = float(detect)  # type: ignore[arg-type]
    reason = [r.failure_reason for r in rows(url, name) if r.number == number]
    result.note += f"; trial {number}: {(reason[0] or '')[:70]}"
    return by_itself(result, proc)


def port_taken(url: str, name: str, logs: Path, python: str) -> Result:
    wrapper = logs / "hold_port.py"
    wrapper.write_text(PORT_HOLDER)
    data = yaml.safe_load((logs / "space.yaml").read_text())
    data["engine"]["command"] = [python, str(wrapper), python, "-m",
                                 "vllm.entrypoints.openai.api_server"]
    space = logs / "space-port.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    started = time.time()
    proc = cli("study", "start", "--space", str(space), "--storage", url, "--name", name,
               "--trials", str(BUDGET), "--log-dir", str(logs),
               env={"AUTOTUNE_FAULT_MARKER": str(logs / "port-taken")})
    # detect s: from the study's start until the trial starts its engine again (the taken
    # port noticed, that start torn down).
    retry_log = logs / name / "trial-0000.attempt-2.log"
    detect = wait_for(lambda: (retry_log.exists() or finished_after(url, name, 0, started))
                      and time.time() - started, 900, "first trial's second start")
    proc.wait(timeout=900)
    result = settle(url, name)
    result.detect_s = float(detect)  # type: ignore[arg-type]
    first = [r for r in rows(url, name) if r.number == 0][0]
    result.note += f"; trial 0 {first.state}: {(first.failure_reason or 'measured')[:60]}"
    return by_itself(result, proc)


def controller_kill(url: str, name: str, logs: Path) -> Result:
    args = ("study", "start", "--space", str(logs / "space.yaml"), "--storage", url, "--name",
            name, "--trials", str(BUDGET), "--log-dir", str(logs))
    proc = cli(*args)
    log = logs / name / "trial-0001.log"
    wait_for(lambda: running_trial(url, name, 1) and serving(log), 600, "serving engine")
    injected = time.time()
    proc.kill()
    proc.wait()
    detect = wait_for(lambda: not engine_processes() and time.time() - injected, 60,
                      "engine gone after the controller's death")
    resumed = cli(*args)
    resumed.wait(timeout=900)
    result = settle(url, name)
    result.detect_s = float(detect)  # type: ignore[arg-type]
    result.note += "; resumed once"
    result.finished = "resumed" if resumed.returncode == 0 and result.lost == 0 else "no"
    return result


def postgres_cut(logs: Path, server: PostgresServer) -> Result:
    from sqlalchemy import create_engine, text

    name = "pg-cut"
    url = shared_study(server, logs, name)
    workers = [worker(url, name, logs, i) for i in range(2)]
    wait_for(lambda: any(r.state == "running" for r in rows(url, name)), 600,
             "a running trial")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    injected = time.time()
    cut = 0
    with admin.connect() as connection:
        while time.time() - injected < 20:
            cut += connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar() or 0
            time.sleep(1.0)
    admin.dispose()
    for proc in workers:
        proc.wait(timeout=1200)
    result = settle(url, name)
    result.detect_s = None
    result.note += f"; {cut} connections cut in 20 s"
    return by_itself(result, *workers)

def on_postgres(scenario: Callable[[Path, PostgresServer], Result]
                ) -> Callable[[Path, str], Result]:
    """``scenario`` on a PostgreSQL server of its own (the SQLite URL is not used)."""

    def run(logs: Path, url: str) -> Result:
        server = PostgresServer().start()
        try:
            return scenario(logs, server)
        finally:
            server.stop()

    return run


def by_itself(result: Result, *procs: subprocess.Popen[str]) -> Result:
    """``finished``: the budget reached and every process exited 0 without help."""
    done = result.lost == 0 and all(p.returncode == 0 for p in procs)
    result.finished = "yes" if done else "no"
    return result


def warmup_kill(url: str, name: str, logs: Path) -> Result:
    """SIGKILL the default trial's engine as soon as ``/health`` first answered (it is then
    tokenizing and warming up), with the quality probe on: the start must count as a passing
    fault (the trial starts a new engine) and the quality reference must still be recorded.
    detect s: until that engine's processes are gone."""
    data = yaml.safe_load((logs / "space.yaml").read_text())
    data["quality"] = {"prompts": str(ROOT / "evals" / "demo-tasks.jsonl"), "num_prompts": 8,
                       "max_tokens": 8}
    space = logs / "space-quality.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = cli("study", "start", "--space", str(space), "--storage", url, "--name", name,
               "--trials", str(BUDGET), "--log-dir", str(logs))
    log = logs / name / "trial-0000.log"
    wait_for(lambda: log.exists() and HEALTH_ANSWERED in log.read_text(errors="replace"), 600,
             "the engine's first /health")
    tree = engine_processes()
    injected = time.time()
    for pid in tree:
        if not is_guard(pid):
            os.kill(pid, signal.SIGKILL)
    detect = wait_for(lambda: not set(tree) & set(engine_processes())
                      and time.time() - injected, 600, "the engine torn down")
    proc.wait(timeout=900)
    result = settle(url, name)
    result.detect_s = float(detect)  # type: ignore[arg-type]
    trials = rows(url, name)
    first = [r for r in trials if r.number == 0][0]
    graded = [r.number for r in trials if r.number != 0
              and r.metrics.get("quality_top1_agreement") is not None]
    result.note += (f"; trial 0 {first.state}: {(first.failure_reason or 'measured')[:50]}; "
                    f"quality compared with its reference in trials {graded or 'none'}")
    return by_itself(result, proc)


def shared_study(server: PostgresServer, logs: Path, name: str) -> str:
    """A fresh PostgreSQL database holding the study ``name`` (created, nothing run)."""
    url = server.new_database()
    subprocess.run([sys.executable, "-m", "autotune.cli", "study", "start", "--space",
                    str(logs / "space.yaml"), "--storage", url, "--name", name, "--trials",
                    str(BUDGET), "--no-run"], check=True, capture_output=True)
    return url


def worker(url: str, name: str, logs: Path, slot: int, space: Path | None = None
           ) -> subprocess.Popen[str]:
    return cli("worker", "--study", name, "--storage", url, "--space",
               str(space or logs / "space.yaml"), "--devices", f"cpu:{slot}",
               "--log-dir", str(logs / f"w{slot}"))


def postgres_outage(logs: Path, server: PostgresServer, outage_s: float = 45.0) -> Result:
    """PostgreSQL stopped for ``outage_s`` (longer than the 30 s heartbeat grace) while two
    workers measure: the workers wait it out (database retry) and no trial is failed as stale
    for an outage they survived. detect s: from the server's return to the first heartbeat
    or result written after it."""
    name = "pg-outage"
    url = shared_study(server, logs, name)
    workers = [worker(url, name, logs, i) for i in range(2)]
    wait_for(lambda: sum(r.state == "running" for r in rows(url, name)) >= 1
             and all(serving(p) for p in running_logs(logs)), 900, "a serving trial")
    server.pause()
    time.sleep(outage_s)
    server.resume()
    back = time.time()
    detect = wait_for(lambda: heartbeat_after(url, back) and time.time() - back, 300,
                      "a heartbeat after the outage")
    for proc in workers:
        proc.wait(timeout=1200)
    result = settle(url, name)
    result.detect_s = float(detect)  # type: ignore[arg-type]
    stale = [r.number for r in rows(url, name) if r.failure_kind == "worker_lost"]
    result.note += (f"; outage {outage_s:.0f} s; trials failed as lost: {stale or 'none'}; "
                    f"worker exits {[p.returncode for p in workers]}")
    return by_itself(result, *workers)


def worker_killed_claiming(logs: Path, server: PostgresServer) -> Result:
    """SIGKILL a worker as soon as its claim shows a running trial (before its engine serves),
    then start another worker: the orphaned claim is failed as lost and its configuration run
    again, once. detect s: from the kill to the orphaned trial leaving "running"."""
    name = "claim-kill"
    url = shared_study(server, logs, name)
    first = worker(url, name, logs, 0)
    wait_for(lambda: any(r.state == "running" for r in rows(url, name)), 600, "a claim")
    first.kill()
    first.wait()
    injected = time.time()
    orphan = [r.number for r in rows(url, name) if r.state == "running"]
    second = worker(url, name, logs, 1)
    detect = wait_for(lambda: not any(r.number in orphan and r.state == "running"
                                      for r in rows(url, name)) and time.time() - injected,
                      600, "the orphaned claim failed as lost")
    second.wait(timeout=1200)
    result = settle(url, name)
    result.detect_s = float(detect)  # type: ignore[arg-type]
    result.note += f"; killed while claiming trial {orphan}; one worker left"
    return by_itself(result, second)


def worker_without_model(logs: Path, server: PostgresServer) -> Result:
    """Two workers on one space whose model path is ``~/...``: one of them on a host where it
    does not exist (an empty ``HOME``). That worker refuses to claim (exit 2, naming the path)
    and the other finishes the study. detect s: the bad worker's time to its exit."""
    name = "no-model"
    data = yaml.safe_load((logs / "space.yaml").read_text())
    home = Path.home()
    model = Path(data["model"]["path"])
    if model.is_relative_to(home):  # the same file on both hosts, read against each HOME
        data["model"]["path"] = "~/" + str(model.relative_to(home))
    space = logs / "space-home.yaml"
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    url = server.new_database()
    subprocess.run([sys.executable, "-m", "autotune.cli", "study", "start", "--space",
                    str(space), "--storage", url, "--name", name, "--trials", str(BUDGET),
                    "--no-run"], check=True, capture_output=True)
    empty_home = logs / "empty-home"
    empty_home.mkdir()
    started = time.time()
    bad = cli("worker", "--study", name, "--storage", url, "--space", str(space), "--devices",
              "cpu:1", "--log-dir", str(logs / "w1"), env={"HOME": str(empty_home)})
    good = worker(url, name, logs, 0, space)
    bad.wait(timeout=600)
    detect = time.time() - started
    said = (bad.stdout.read() if bad.stdout else "").strip().splitlines()
    good.wait(timeout=1200)
    result = settle(url, name)
    result.detect_s = detect
    claimed = [r.number for r in rows(url, name) if r.devices == "cpu:1"]
    result.note += (f"; bad worker exit {bad.returncode}, claimed {claimed or 'nothing'}: "
                    f"{(said[-1] if said else '')[:60]}")
    return by_itself(result, good)


def running_logs(logs: Path) -> list[Path]:
    """The newest engine log of each worker."""
    found = []
    for folder in logs.glob("w*"):
        runs = sorted(folder.rglob("trial-*.log"), key=lambda p: p.stat().st_mtime)
        if runs:
            found.append(runs[-1])
    return found


def heartbeat_after(url: str, since: float) -> bool:
    """Some trial of the database beat or finished after ``since`` (epoch seconds)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            beat = connection.execute(text(
                "SELECT max(heartbeat) FROM trial_heartbeats")).scalar()
            done = connection.execute(text("SELECT max(datetime_complete) FROM trials")).scalar()
    except Exception:  # noqa: BLE001 - the server may still be starting
        return False
    finally:
        engine.dispose()
    latest = max((t.timestamp() for t in (beat, done) if t is not None), default=0.0)
    return latest > since


def main() -> None:
    parser = arg_parser(__doc__)
    add_model_option(parser)
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()
    model = demo_model(args.model)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="autotune-faults-") as tmp:
        base = Path(tmp)
        data = small_space(base, model)
        data["search"] = {**data.get("search", {}), "trials": BUDGET, "seed": 1}
        scenarios: dict[str, Callable[[Path, str], Result]] = {
            "engine kill -9": lambda d, url: engine_signal(signal.SIGKILL, url, "kill9", d, 1),
            "engine SIGSTOP": lambda d, url: engine_signal(signal.SIGSTOP, url, "sigstop", d, 1),
            "port taken": lambda d, url: port_taken(url, "port", d, sys.executable),
            "controller kill -9, resume": lambda d, url: controller_kill(url, "ctl", d),
            "engine kill -9 in warm-up": lambda d, url: warmup_kill(url, "warmup", d),
            "PostgreSQL cut, 2 workers": on_postgres(postgres_cut),
            "PostgreSQL down 45 s": on_postgres(postgres_outage),
            "worker kill -9 claiming": on_postgres(worker_killed_claiming),
            "worker without the model": on_postgres(worker_without_model),
        }
        for fault, run in scenarios.items():
            if args.only and fault not in args.only:
                continue
            where = base / "".join(c if c.isalnum() else "-" for c in fault)
            where.mkdir(exist_ok=True)
            (where / "space.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            print(f"--- {fault} ...", flush=True)
            started = time.monotonic()
            try:
                result = run(where, f"sqlite:///{where / 'study.db'}")
            except Exception as exc:  # noqa: BLE001 - report it, go on to the next fault
                result = Result(fault, -1, -1, len(engine_processes()), None,
                                f"scenario error: {type(exc).__name__}: {exc}")
            result.fault = fault
            results.append(result)
            print(f"    done in {time.monotonic() - started:.0f}s: {result.note}", flush=True)
    print()
    print(f"{'fault':<28} {'lost':>5} {'twice':>6} {'engines left':>13} {'detect s':>9} "
          f"{'finished':>9}")
    for r in results:
        detect = f"{r.detect_s:9.1f}" if r.detect_s is not None else f"{'-':>9}"
        print(f"{r.fault:<28} {r.lost:>5} {r.twice:>6} {r.engines_left:>13} {detect} "
              f"{r.finished:>9}")
    for r in results:
        print(f"  {r.fault}: {r.note}")


if __name__ == "__main__":
    main()
