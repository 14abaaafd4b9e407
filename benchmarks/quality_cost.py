"""What the quality probe costs per trial, and what it measures, on the CPU demo model.

Starts one vLLM CPU server per configuration (one at a time) on the quickstart's demo model:
the vLLM defaults first (the reference), then each variant. On each server it runs the probe
``--repeats`` times and prints the probe's wall time and metrics per configuration.

    .venv/bin/python benchmarks/quality_cost.py [--prompts 48] [--repeats 3] [--variants int8]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from common import arg_parser, demo_model, space_data

from autotune.devices import CpuSlotPool
from autotune.engines.vllm import VllmLauncher, engine_config
from autotune.quality.probe import QualityProbe
from autotune.space.model import Space

VARIANTS = {
    "int8": {"quantization": "int8"},
    "ngram": {"speculative_method": "ngram", "num_speculative_tokens": 3},
}


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--prompts", type=int, default=48, help="eval rows per probe")
    parser.add_argument("--repeats", type=int, default=3, help="probe runs per server")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--methods", nargs="*", default=[], help="more online --quantization methods to measure"
    )
    args = parser.parse_args()

    data = space_data("cpu-fixed-load")
    data["quality"]["num_prompts"] = args.prompts
    for method in args.methods:
        data["model"]["quantization_variants"][method] = {"method": method}
        data["parameters"]["quantization"]["choices"].append(method)
        VARIANTS[method] = {"quantization": method}
        args.variants.append(method)
    space = Space.model_validate(data)
    demo_model(space.model.resolved_path)
    assert space.quality is not None
    probe = QualityProbe(space.quality)
    base = {**space.default_params(), "speculative_method": "none", "quantization": "none"}
    configs = [("default", base, True)]
    configs += [(name, {**base, **VARIANTS[name]}, False) for name in args.variants]
    pool = CpuSlotPool()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, params, is_default in configs:
            config = engine_config(space, params, is_default=is_default)
            devices = pool.acquire(1)
            started = time.monotonic()
            try:
                engine = VllmLauncher().start(config, devices, Path(tmp) / f"{name}.log")
            except Exception as exc:  # noqa: BLE001 - report the variant and go on
                pool.release(devices)
                results[name] = {"failed": f"{type(exc).__name__}: {exc}"}
                print(name, json.dumps(results[name]), flush=True)
                continue
            startup = time.monotonic() - started
            try:
                runs = []
                for i in range(args.repeats):
                    result = probe.run(
                        engine.base_url, engine.served_name, may_record=is_default and i == 0
                    )
                    runs.append(result.metrics)
            finally:
                engine.stop()
                pool.release(devices)
            seconds = [r["quality_s"] for r in runs]
            results[name] = {
                "startup_s": round(startup, 1),
                "probe_s_median": round(statistics.median(seconds), 2),
                "probe_s": [round(s, 2) for s in seconds],
                "metrics": {k: v for k, v in runs[-1].items() if k != "quality_s"},
                "repeats_identical": all(
                    {k: v for k, v in r.items() if k != "quality_s"}
                    == {k: v for k, v in runs[0].items() if k != "quality_s"}
                    for r in runs
                ),
            }
            print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
