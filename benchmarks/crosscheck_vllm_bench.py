"""Cross-check the built-in load driver against `vllm bench serve` on one running server.

Starts one vLLM CPU server on the quickstart's demo model, then measures the same workload
(random prompts, fixed input/output lengths, ignore_eos, fixed concurrency) alternately with
autotune's driver and with vLLM's own benchmark (module ``vllm.benchmarks.serve``, run in a
subprocess so this controller never imports vLLM), and prints both side by side.

    .venv/bin/python benchmarks/crosscheck_vllm_bench.py [--rounds 2] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.bench.driver import Endpoint, HttpLoadDriver  # noqa: E402
from autotune.demo_model import build_demo_model  # noqa: E402
from autotune.devices import CpuSlotPool  # noqa: E402
from autotune.engines.vllm import VllmLauncher, engine_config  # noqa: E402
from autotune.space import Space  # noqa: E402

VLLM_BENCH = (
    "import sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)
ROWS = [
    ("output_throughput", "output_throughput", "tok/s"),
    ("request_throughput", "request_throughput", "req/s"),
    ("ttft_p50_ms", "median_ttft_ms", "ms"),
    ("ttft_p99_ms", "p99_ttft_ms", "ms"),
    ("tpot_mean_ms", "mean_tpot_ms", "ms"),
    ("itl_p50_ms", "median_itl_ms", "ms"),
    ("e2e_p99_ms", "p99_e2el_ms", "ms"),
]


def vllm_bench(
    model_dir: Path, served: str, base_url: str, args: argparse.Namespace, out: Path
) -> dict:
    cmd = [
        sys.executable,
        "-c",
        VLLM_BENCH,
        "--backend",
        "vllm",
        "--base-url",
        base_url,
        "--model",
        served,
        "--tokenizer",
        str(model_dir),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(args.requests),
        "--max-concurrency",
        str(args.concurrency),
        "--request-rate",
        "inf",
        "--ignore-eos",
        "--num-warmups",
        str(args.warmup),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--save-result",
        "--result-dir",
        str(out.parent),
        "--result-filename",
        out.name,
        "--seed",
        "0",
        "--disable-tqdm",
    ]
    subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--model", type=Path, default=Path("~/.cache/autotune/demo-llama"),
                        help="model directory (default: the quickstart's demo model)")
    args = parser.parse_args()

    model_dir = args.model.expanduser()
    if not (model_dir / "config.json").is_file():
        model_dir = build_demo_model(model_dir)
    data = yaml.safe_load((ROOT / "search_spaces" / "quickstart-cpu.yaml").read_text())
    data["model"]["path"] = str(model_dir)
    data["workload"] = {
        "prompts": {
            "kind": "random",
            "input_tokens": args.input_len,
            "output_tokens": args.output_len,
        },
        "num_requests": args.requests,
        "warmup_requests": args.warmup,
        "load": {"kind": "concurrency", "concurrency": args.concurrency},
    }
    space = Space.model_validate(data)
    config = engine_config(space, {}, is_default=True)
    work = Path(tempfile.mkdtemp(prefix="crosscheck-"))
    pool = CpuSlotPool()
    engine = VllmLauncher().start(config, pool.acquire(1), work / "engine.log")
    ours: list[dict] = []
    theirs: list[dict] = []
    try:
        endpoint = Endpoint(engine.base_url, engine.served_name)
        for round_ in range(args.rounds):
            ours.append(HttpLoadDriver().run(endpoint, space.workload, {}).metrics)
            theirs.append(
                vllm_bench(
                    model_dir,
                    engine.served_name,
                    engine.base_url,
                    args,
                    work / f"vllm-bench-{round_}.json",
                )
            )
    finally:
        engine.stop()

    print(
        f"server: vLLM {engine.version}, demo model, CPU; workload: {args.requests} requests, "
        f"{args.input_len} in / {args.output_len} out, concurrency {args.concurrency}, "
        f"{args.rounds} alternating rounds"
    )
    header = f"{'metric':<20}{'autotune driver':>18}{'vllm bench serve':>18}{'difference':>12}"
    print(header)
    print("-" * len(header))
    for ours_key, their_key, unit in ROWS:
        a = statistics.mean(r[ours_key] for r in ours)
        b = statistics.mean(r[their_key] for r in theirs)
        diff = (a - b) / b * 100 if b else float("nan")
        print(f"{ours_key + ' (' + unit + ')':<20}{a:>18.2f}{b:>18.2f}{diff:>11.1f}%")
    per_round = ", ".join(
        f"{o['output_throughput']:.0f} vs {t['output_throughput']:.0f}"
        for o, t in zip(ours, theirs, strict=True)
    )
    print(f"output throughput per round (autotune vs vllm bench): {per_round}")
    a = statistics.mean(r["output_throughput"] for r in ours)
    b = statistics.mean(r["output_throughput"] for r in theirs)
    verdict = "within" if abs(a - b) / b <= 0.05 else "OUTSIDE"
    print(f"output throughput: {verdict} 5% ({(a - b) / b * 100:+.1f}%)")


if __name__ == "__main__":
    main()
