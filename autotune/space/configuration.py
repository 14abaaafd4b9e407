"""One value for "a configuration": the parameters a trial runs with, and whether it is vLLM's
own default (which passes no flags, so it is not the twin of its nominal values).

Its ``key()`` is the one identity used everywhere a configuration is compared: reuse of a
measured result, the replay grid, resume of interrupted trials and warm start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PREFIX = "default:"


def params_key(params: Mapping[str, Any]) -> str:
    """Canonical text of a set of parameter values (ints, floats and booleans stay apart)."""
    return json.dumps(dict(params), sort_keys=True, default=str)


@dataclass(frozen=True)
class Configuration:
    params: Mapping[str, Any] = field(default_factory=dict)
    is_default: bool = False

    def key(self) -> str:
        """Equal for the same engine settings; the default trial has a key of its own."""
        text = params_key(self.params)
        return DEFAULT_PREFIX + text if self.is_default else text

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Configuration) and other.key() == self.key()
