"""GPU check: real NVML inventory, allocation and utilisation sampling under a PyTorch load.

Run it on any machine with NVIDIA GPUs, PyTorch and nvidia-ml-py (vLLM is not needed):

    python benchmarks/gpu_check.py [--seconds 5]

It prints the inventory autotune sees, allocates every GPU through the pool (one set of all,
then one GPU at a time), runs a matmul loop on the first allocated GPU while sampling NVML
utilisation every 0.5 s, checks that the memory is back after the load is freed, and prints
what it measured. Exit code 1 when no GPU is found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from common import arg_parser

from autotune.devices.nvml import NvmlGpuPool
from autotune.devices.sampling import UtilisationSampler

LOAD = """
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.float16)
b = torch.randn(8192, 8192, device="cuda:0", dtype=torch.float16)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    (a @ b).sum().item()
"""


def matmul_load(env: dict[str, str], seconds: float) -> subprocess.Popen[str]:
    """A PyTorch load in its own process (like an engine), confined by the trial's env."""
    proc = subprocess.Popen([sys.executable, "-c", LOAD, str(seconds)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def main() -> int:
    parser = arg_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    pool = NvmlGpuPool.discover(release_timeout_s=30)
    if pool is None:
        print("no NVIDIA GPU found through NVML")
        return 1
    print(f"inventory: {pool.describe()}")
    for gpu in pool.inventory():
        print(f"  {gpu}")
    print(f"topology levels (lower = closer): {pool.levels or 'single GPU'}")
    everything = pool.acquire(pool.capacity)
    print(f"allocated all: {everything.ids} env={everything.env}")
    pool.release(everything)
    one = pool.acquire(1)
    print(f"allocated one: {one.ids} env={one.env}")
    index = one.ids[0]
    load = matmul_load(one.env, args.seconds)
    with UtilisationSampler(pool, one, lambda: [load.pid], interval_s=0.5) as sampler:
        load.wait()
    print(f"under a {args.seconds:.0f}s fp16 matmul load on GPU {index}: {sampler.summary()}")
    print(f"samples: {[round(u) for u in sampler.util]}")
    started = time.monotonic()
    pool.release(one)
    print(f"released GPU {index} after {time.monotonic() - started:.1f}s of memory polling; "
          f"stuck: {pool.stuck() or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
