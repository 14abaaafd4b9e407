"""Trials on a Ray cluster: the controller keeps the proposer and the store, each trial runs as a
Ray task on a node that has the devices it needs.

``resources`` is the controller's view of the cluster, without Ray: which resource a trial asks
for (``GPU`` = tensor parallel × pipeline parallel on GPU nodes, ``autotune_cpu_slot`` on CPU
nodes), how many trials fit at once, and the refusal, with the numbers, of a trial no node can
hold. ``ray_runner`` is the trial runner the study uses (``--executor ray``): on the node, the
ordinary ``autotune.trial.TrialRunner`` starts the engine under its guard on the devices Ray
assigned (the NVML pool's checks apply there), measures and tears down; the outcome, the engine
log's tail and the node it ran on come back. A node lost mid-trial fails that attempt as
``worker_lost`` and the trial runs once more on a live node.

Ray is an optional extra (``pip install 'autotune[ray]'``): only ``ray_runner`` imports it, inside
its functions, and ``connect`` says plainly when it is missing. docs/distributed.md tells when to
choose Ray over PostgreSQL workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.lazy import lazy_attributes

if TYPE_CHECKING:
    from autotune.cluster.ray_runner import RayTrialRunner, WorkerLost, connect
    from autotune.cluster.resources import (
        CPU_SLOT,
        ClusterDevices,
        NodeResources,
        RayMissingError,
    )

# Each name's module, imported on first use (autotune.lazy).
_HOMES = {
    "CPU_SLOT": "autotune.cluster.resources",
    "ClusterDevices": "autotune.cluster.resources",
    "NodeResources": "autotune.cluster.resources",
    "RayMissingError": "autotune.cluster.resources",
    "RayTrialRunner": "autotune.cluster.ray_runner",
    "connect": "autotune.cluster.ray_runner",
    "WorkerLost": "autotune.cluster.ray_runner",
}

__all__ = [
    "CPU_SLOT",
    "ClusterDevices",
    "NodeResources",
    "RayMissingError",
    "RayTrialRunner",
    "WorkerLost",
    "connect",
]

__getattr__ = lazy_attributes(__name__, _HOMES)
