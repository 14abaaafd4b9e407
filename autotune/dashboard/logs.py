"""The tail of a trial's engine log, read only where the trial record says the log is.

A record's ``log_path`` comes from the storage, which the dashboard does not trust to name files
it may show: only a regular ``*.log`` file is read, the path may not step up (``..``), and once
symbolic links are resolved the file must still lie in the directory the path names, and that
directory must lie inside the dashboard's log folder (``autotune dashboard --log-dir``, default
$AUTOTUNE_LOG_DIR or ``autotune_logs``: where studies write their logs by default). A study's own
log folder is not recorded with it, so the folder the dashboard was told about is the one
trusted. Anything else, or a log that is gone (another machine, a cleaned folder), gives None and
the page shows the excerpt stored with the record instead. A relative path is taken from the
dashboard's working directory, as the study's was.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TAIL_LINES = 40
# Enough for 40 long lines; a log of any size costs one seek and one read.
TAIL_BYTES = 64 * 1024
# Colour and cursor escapes (vLLM colours its log on a terminal), and other control characters.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


def refusal(log_path: str | None, root: Path) -> str | None:
    """Why ``log_path`` is not served (None: it may be, if it can be read)."""
    if not log_path:
        return "the trial recorded no log"
    path = Path(log_path)
    try:
        inside = path.parent.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        return (f"{log_path} is outside the dashboard's log folder {root}: the dashboard serves "
                "only logs inside it (autotune dashboard --log-dir DIR)")
    if path.suffix != ".log" or ".." in path.parts:
        return f"{log_path} is not a *.log file the dashboard serves"
    return None


def safe_log_file(log_path: str | None, root: Path) -> Path | None:
    """The file ``log_path`` names, if it is a readable ``*.log`` inside its own directory,
    inside ``root``."""
    if refusal(log_path, root) is not None:
        return None
    assert log_path is not None
    path = Path(log_path)
    try:
        directory = path.parent.resolve(strict=True)
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if target.parent != directory or not target.is_file():
        return None
    return target


def log_tail(log_path: str | None, root: Path, lines: int = TAIL_LINES) -> str | None:
    """The last ``lines`` lines of the log, without terminal escapes; None if it may not or
    cannot be read (see the module's docstring)."""
    target = safe_log_file(log_path, root)
    if target is None:
        return None
    try:
        with open(target, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - TAIL_BYTES))
            data = log.read(TAIL_BYTES)
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    if size > TAIL_BYTES:  # the first line was cut by the seek
        text = text.partition("\n")[2]
    kept = text.splitlines()[-lines:]
    return "\n".join(_ESCAPES.sub("", line) for line in kept)
