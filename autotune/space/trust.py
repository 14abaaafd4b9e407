"""The trust boundary of a shared study: whose engine command a worker runs.

A study's space, stored in the database, holds the engine command (``engine.command``, its
flags and environment, the model path, the parameters that become flags). Whoever can write
that database could therefore run commands on every worker. So ``autotune worker`` and
``autotune confirm`` run the stored space only once this machine's own configuration vouches
for it: its local copy of the space file (``--space FILE``: equal to the stored one in every
field but the study's name), or the SHA-256 of the stored text, pinned by the operator
(``--space-sha256 HEX`` or ``AUTOTUNE_SPACE_SHA256``; ``sha256sum`` of the file given to
``study start``). Without either they refuse to start.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autotune.errors import AutotuneError
from autotune.space.model import Space, load_space

# What shapes the command line, listed first when the spaces differ.
COMMAND_SECTIONS = ("engine", "model", "parameters")
SHOWN = 6  # differences named in the refusal
# Sections of a space that choose which configurations run and how many, not how one is
# measured: changing them between runs of a study keeps its trials comparable
# (docs/search-space.md, "Resuming a study").
HARMLESS_SECTIONS = ("name", "search")


class UntrustedSpace(AutotuneError):
    """The study's stored space is not vouched for by this machine's configuration."""

    exit_code = 2


def space_sha256(text: str) -> str:
    """The pin of a space file's text: what ``sha256sum FILE`` prints."""
    return hashlib.sha256(text.encode()).hexdigest()


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


ABSENT = "(absent)"


def changed_fields(old: Space, new: Space, *, exclude: set[str] | None = None,
                   ) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (old value, new value)}`` for each field of the two spaces that
    differs (defaults filled in on both sides, so writing a default out changes nothing;
    :data:`ABSENT` where one side lacks the field), in field order."""
    a = _flat(old.model_dump(mode="json", exclude=exclude))
    b = _flat(new.model_dump(mode="json", exclude=exclude))
    return {k: (a.get(k, ABSENT), b.get(k, ABSENT))
            for k in sorted(set(a) | set(b)) if a.get(k, ABSENT) != b.get(k, ABSENT)}


def differences(stored: Space, local: Space) -> list[str]:
    """``field: stored X, here Y`` for each field that differs (the study's name aside),
    the fields that shape the engine's command line first."""
    changed = changed_fields(stored, local, exclude={"name"})
    keys = sorted(changed, key=lambda k: (k.split(".")[0] not in COMMAND_SECTIONS, k))
    return [f"{k}: stored {changed[k][0]!r}, here {changed[k][1]!r}" for k in keys]


def trusted_space(
    stored_yaml: str, *, study: str, local: Path | None, sha256: str | None,
) -> Space:
    """The study's stored space, once ``local`` (this machine's space file) equals it or its
    text hashes to ``sha256``; raises ``UntrustedSpace`` (exit 2) otherwise, naming what
    differs."""
    if local is None and not sha256:
        raise UntrustedSpace(
            f"study {study!r}: refusing to run the engine command stored in the database "
            "without this machine's own word for it. Pass --space FILE (this machine's copy "
            "of the space file the study was started with) or --space-sha256 HEX (`sha256sum "
            "FILE`; or set AUTOTUNE_SPACE_SHA256). See docs/distributed.md, \"Trust\".")
    if sha256:
        found = space_sha256(stored_yaml)
        if found != sha256.strip().lower():
            raise UntrustedSpace(
                f"study {study!r}: the space stored in the database has sha256 {found}, not "
                f"the pinned {sha256.strip().lower()}: refusing to run its engine command. "
                "Check that --storage and --study name the study you meant; if its space was "
                "changed on purpose, pin the new file's hash.")
    try:
        stored = Space.model_validate(yaml.safe_load(stored_yaml))
    except (ValidationError, yaml.YAMLError) as exc:
        raise UntrustedSpace(f"the space stored with study {study!r} is not valid for this "
                             f"autotune version: {exc}") from None
    if local is not None:
        changed = differences(stored, load_space(local))
        if changed:
            more = f"; and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
            raise UntrustedSpace(
                f"study {study!r}: the space stored in the database differs from {local}: "
                + "; ".join(changed[:SHOWN]) + more + ". Refusing to run it: start the "
                "worker with the study's own space file (or fix the study's).")
    return stored


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def space_changes(stored_yaml: str, space: Space) -> tuple[list[str], list[str]]:
    """How ``space`` differs from the space stored with a study, as ``field: old → new``
    lines (defaults filled in on both sides, so writing a default out changes nothing):
    (changes that can alter a measurement, changes of the ``HARMLESS_SECTIONS``)."""
    try:
        stored = Space.model_validate(yaml.safe_load(stored_yaml))
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        first = str(exc).splitlines()[0]
        return [f"the stored space does not validate with this autotune ({first})"], []
    lines = {k: f"{k}: {ABSENT if old is ABSENT else _shown(old)} → "
                f"{ABSENT if new is ABSENT else _shown(new)}"
             for k, (old, new) in changed_fields(stored, space).items()}
    harmless = [line for k, line in lines.items() if k.split(".")[0] in HARMLESS_SECTIONS]
    return [line for k, line in lines.items() if k.split(".")[0] not in HARMLESS_SECTIONS], \
        harmless
