"""Ray benchmark: a study of real vLLM CPU trials on a two-node local Ray cluster, one node
killed during a trial, against the same trials on one node alone.

The cluster (``ray.cluster_utils.Cluster``) has a head without engine slots and two nodes of one
``autotune_cpu_slot`` each, pinned to one core of this host each (``AUTOTUNE_DEVICES``). Both
studies run the same configurations: the vLLM defaults, then a fixed list (queued as a warm
start), so their makespans compare. In the first, the node running trial ``--kill-trial`` is
killed (raylet and workers) once that trial's engine is up; the study goes on with the node
left. The second runs on that one node. Printed: trials lost (the budget minus the trials
finished, plus any left running; goal 0), configurations measured twice (goal 0), engine
processes left on any node (goal 0), both makespans, and where each trial ran.

    .venv/bin/python benchmarks/ray_cluster.py [--model DIR] [--trials 6] [--kill-trial 2]
"""

from __future__ import annotations

import collections
import threading
import time

from common import add_model_option, arg_parser, demo_model, scratch_dir

from autotune.testing.processes import engine_processes  # marks this run's engines
from autotune.testing.spaces import small_space, write_space

SLOT = {"autotune_cpu_slot": 1}
# After the defaults: configurations of the small CPU space, each different.
CONFIGS = [
    {"quantization": "none", "max_num_batched_tokens": 1024, "max_num_seqs": 16,
     "enable_chunked_prefill": True, "speculative_method": "none"},
    {"quantization": "int8", "max_num_batched_tokens": 2048, "max_num_seqs": 32,
     "enable_chunked_prefill": True, "speculative_method": "none"},
    {"quantization": "none", "max_num_batched_tokens": 512, "max_num_seqs": 8,
     "enable_chunked_prefill": False, "speculative_method": "none"},
    {"quantization": "int8", "max_num_batched_tokens": 4096, "max_num_seqs": 64,
     "enable_chunked_prefill": True, "speculative_method": "none"},
    {"quantization": "none", "max_num_batched_tokens": 768, "max_num_seqs": 12,
     "enable_chunked_prefill": True, "speculative_method": "none"},
    {"quantization": "int8", "max_num_batched_tokens": 1536, "max_num_seqs": 24,
     "enable_chunked_prefill": False, "speculative_method": "none"},
]


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def _study(space, url: str, name: str, runner, trials: int, parallel: int,
           on_start=None) -> tuple[float, list]:
    from autotune.study import run_study

    started = time.monotonic()
    result = run_study(space, url, name=name, trials=trials, parallel=parallel,
                       trial_runner=runner, warm_start=CONFIGS[:trials - 1],
                       confirm_stage=False)
    return time.monotonic() - started, result.report.trials


def _summary(trials: list, budget: int) -> tuple[int, int]:
    finished = [t for t in trials if t.state in ("complete", "failed", "rejected")]
    running = [t for t in trials if t.state == "running"]
    lost = max(budget - len(finished), 0) + len(running)
    from autotune.results import configuration_key

    measured = collections.Counter(configuration_key(t) for t in trials if t.state == "complete")
    return lost, sum(1 for n in measured.values() if n > 1)


def main() -> None:
    parser = arg_parser(__doc__)
    add_model_option(parser)
    parser.add_argument("--trials", type=int, default=6, help="trials per study (at most 7)")
    parser.add_argument("--kill-trial", type=int, default=2,
                        help="the trial whose node is killed once its engine is up")
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    from autotune.cluster import connect
    from autotune.space import load_space

    model = demo_model(args.model)
    work = scratch_dir("autotune-ray-")
    space = load_space(write_space(work, small_space(work, model)))
    url = f"sqlite:///{work / 'ray.db'}"
    print(f"scratch folder: {work}")
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {core: cluster.add_node(num_cpus=1, resources=SLOT,
                                    env_vars={"AUTOTUNE_DEVICES": f"cpu:{core}"})
             for core in (0, 1)}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    print(f"local Ray cluster up in {time.monotonic() - t0:.0f}s: {cluster.address}")
    try:
        logs = work / "logs" / "two-nodes"
        runner = connect(space, cluster.address, logs)
        killed: list[tuple[str, float]] = []

        def kill() -> None:
            log = logs / f"trial-{args.kill_trial:04d}.log"
            if not _wait(lambda: args.kill_trial in runner.running_on, 900):
                return
            node_id = runner.running_on[args.kill_trial]
            if not _wait(lambda: log.exists() and "APIServer" in log.read_text(), 300):
                return
            for node in nodes.values():
                if node.node_id == node_id:
                    cluster.remove_node(node, allow_graceful=False)
                    killed.append((node_id, time.monotonic()))

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
        two_s, two = _study(space, url, "two-nodes", runner, args.trials, 2)
        killer.join(timeout=5)
        left_two = _wait(lambda: engine_processes() == [], 90)
        alone = connect(space, cluster.address, work / "logs" / "one-node")
        one_s, one = _study(space, url, "one-node", alone, args.trials, 1)
        left_one = engine_processes()
    finally:
        ray.shutdown()
        cluster.shutdown()

    short = {n.node_id: f"node-{core} (core {core})" for core, n in nodes.items()}
    lost_two, twice_two = _summary(two, args.trials)
    lost_one, twice_one = _summary(one, args.trials)
    print()
    print(f"{'':34} {'two nodes, one killed':>22} {'one node alone':>16}")
    print(f"{'trials lost':34} {lost_two:>22} {lost_one:>16}")
    print(f"{'configurations measured twice':34} {twice_two:>22} {twice_one:>16}")
    print(f"{'engine processes left on any node':34} "
          f"{0 if left_two else len(engine_processes()):>22} {len(left_one):>16}")
    print(f"{'makespan':34} {two_s:>21.0f}s {one_s:>15.0f}s")
    print(f"{'speed-up':34} {one_s / two_s:>21.2f}x")
    if killed:
        print(f"\nkilled {short.get(killed[0][0], killed[0][0])} during trial {args.kill_trial}")
    else:
        print(f"\nno node was killed: trial {args.kill_trial} never ran an engine")
    print("\nwhere each trial ran (two nodes):")
    print(f"{'trial':>5}  {'state':9} {'nodes (attempts)':36} {'output tok/s':>12}  note")
    for t in two:
        where = " -> ".join(short.get(n, n[:12]) for n in runner.ran_on.get(t.number, []))
        figure = t.metrics.get("output_throughput")
        shown = f"{figure:12.1f}" if figure is not None else f"{'-':>12}"
        note = "attempt 1 lost, ran again" if "ran again on a live node" in (
            t.failure_reason or "") else ""
        print(f"{t.number:>5}  {t.state:9} {where:36} {shown}  {note}")
    print("\nwhere each trial ran (one node alone):")
    for t in one:
        where = " -> ".join(short.get(n, n[:12]) for n in alone.ran_on.get(t.number, []))
        print(f"{t.number:>5}  {t.state:9} {where}")


if __name__ == "__main__":
    main()
