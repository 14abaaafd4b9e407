"""How autotune marks Optuna trials and studies (user attributes), so any Optuna tool reading
the storage sees the same facts. Read and written only by the store."""

from __future__ import annotations

DEFAULT_ATTR = "autotune:default"  # the vLLM-default trial (passes no flags)
FAILURE_ATTR = "autotune:failure_kind"
STATE_ATTR = "autotune:state"  # autotune's TrialState once the trial is finished
WARM_START_ATTR = "autotune:warm_start"
CONFIG_ATTR = "autotune:config"  # the configuration actually run (snapped ordered choices)
REUSED_FROM_ATTR = "autotune:reused_from"
FALLBACK_ATTR = "autotune:unmeasured_pick"  # queued by the study itself (neighbour, unmeasured)
REFERENCE_ATTR = "autotune:quality_reference"  # study attribute: the quality reference outputs
FRESH_RUNS_ATTR = "autotune:fresh_runs"  # study attribute: fresh-server runs (noise model)
