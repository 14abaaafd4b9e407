"""``autotune devices``: the device inventory a study would use on this host."""

from __future__ import annotations

from typing import Annotated

import typer

from autotune.cli.common import console
from autotune.cli.render import gpu_table, print_cpu_slots


def devices(
    parallel: Annotated[str, typer.Option(help="slots for N parallel trials, or auto")] = "auto",
) -> None:
    """Print the device inventory autotune would use on this host."""
    from autotune.devices import CpuSlotPool, NvmlGpuPool

    gpus = NvmlGpuPool.discover()
    if gpus is not None:
        console.print(gpu_table(gpus))
        return
    console.print("no NVIDIA GPU found (NVML unavailable or no device): trials run on the CPU")
    print_cpu_slots(CpuSlotPool.for_parallel(None if parallel == "auto" else int(parallel)))
