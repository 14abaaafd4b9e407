"""Packing benchmark: a simulated 40-trial study with mixed TP sizes on a fake 8-GPU node.

Replays the allocator autotune's pools use (autotune.devices.base.Allocator) in simulated time:
``--parallel auto`` on 8 GPUs means 8 trial slots, each asking the next trial and waiting for
its TP-size GPUs. Durations are drawn from what GPU trials take (engine start 60–240 s growing
with TP, benchmark 120–300 s, 15% of trials failing at startup). Prints device-busy fraction
and makespan for one-at-a-time, strict FIFO packing, and autotune's packing, side by side.

    .venv/bin/python benchmarks/packing.py [--trials 40] [--seeds 20]
"""

from __future__ import annotations

import random
import statistics

from common import arg_parser

from autotune.devices.base import DEFAULT_MAX_BYPASS, Allocator

GPUS = 8


def draw_trials(n: int, seed: int) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    trials = []
    for _ in range(n):
        tp = rng.choices([1, 2, 4], weights=[5, 3, 2])[0]
        startup = rng.uniform(60, 120) * (1 + 0.5 * (tp - 1))
        duration = startup if rng.random() < 0.15 else startup + rng.uniform(120, 300)
        trials.append((tp, duration))
    return trials


def simulate(trials: list[tuple[int, float]], slots: int, max_bypass: int) -> tuple[float, float]:
    """(makespan s, busy fraction of device-time) for one packing policy."""
    allocator = Allocator(range(GPUS), max_bypass=max_bypass)
    queue = list(enumerate(trials))
    waiting: dict[int, object] = {}
    running: list[tuple[float, int, tuple[int, ...]]] = []
    now = 0.0
    while queue or waiting or running:
        while queue and len(waiting) + len(running) < slots:
            index, (tp, _) = queue.pop(0)
            waiting[index] = allocator.submit(tp)
        for request in allocator.grant():
            index = next(i for i, r in waiting.items() if r is request)
            del waiting[index]
            running.append((now + trials[index][1], index, request.granted))
        running.sort()
        end, _, ids = running.pop(0)
        now = end
        allocator.release(ids)
    busy = sum(tp * d for tp, d in trials)
    return now, busy / (GPUS * now)


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    rows = {"one at a time": [], "strict FIFO, 8 slots": [], "autotune, 8 slots": []}
    for seed in range(args.seeds):
        trials = draw_trials(args.trials, seed)
        rows["one at a time"].append(simulate(trials, 1, DEFAULT_MAX_BYPASS))
        rows["strict FIFO, 8 slots"].append(simulate(trials, GPUS, 0))
        rows["autotune, 8 slots"].append(simulate(trials, GPUS, DEFAULT_MAX_BYPASS))
    print(f"{args.trials} trials (TP 1/2/4 at 50/30/20%), {GPUS} GPUs, {args.seeds} seeds; "
          "median [worst] over seeds")
    print(f"{'policy':<24}{'makespan (h)':>20}{'device-time busy':>24}{'speed-up':>12}")
    base = statistics.median(m for m, _ in rows["one at a time"])
    for name, results in rows.items():
        makespans = [m for m, _ in results]
        busy = [b for _, b in results]
        print(f"{name:<24}{statistics.median(makespans) / 3600:>13.2f} "
              f"[{max(makespans) / 3600:>4.2f}]{statistics.median(busy):>16.1%} "
              f"[{min(busy):>5.1%}]{base / statistics.median(makespans):>11.2f}x")
    goal = statistics.median(b for _, b in rows["autotune, 8 slots"])
    print(f"goal ≥ 85% of device-time busy: {'met' if goal >= 0.85 else 'NOT met'} "
          f"({goal:.1%} median)")


if __name__ == "__main__":
    main()
