"""Run the dashboard with uvicorn, loopback-only unless asked otherwise."""

from __future__ import annotations

import ipaddress
import os
import stat
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from autotune.errors import OptionError

LOCALHOST = "localhost"


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost`` or any loopback address (127/8,
    ``::1``)."""
    if host.lower() == LOCALHOST:
        return True
    address = _address(host)
    return address is not None and address.is_loopback


def allowed_host_names(host: str) -> list[str] | None:
    """The ``Host`` header names a loopback dashboard answers (None: any, not on loopback).

    A page elsewhere can rebind its own name to a loopback address; its requests then carry
    that name, which is not one of ours."""
    if not is_loopback(host):
        return None
    if host.lower() == LOCALHOST:  # resolves to both families
        return [LOCALHOST, "127.0.0.1", "[::1]"]
    address = _address(host)
    assert address is not None
    literal = f"[{address.compressed}]" if address.version == 6 else address.compressed
    return [LOCALHOST, literal]


def shown_address(host: str) -> str:
    """``host`` as it goes in a URL."""
    if host.lower() == LOCALHOST or _address(host) == ipaddress.ip_address("127.0.0.1"):
        return LOCALHOST
    address = _address(host)
    return f"[{address.compressed}]" if address is not None and address.version == 6 else host


def read_token_file(path: Path) -> tuple[str, list[str]]:
    """The token in ``path`` (surrounding whitespace dropped) and warnings about the file."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OptionError(f"--token-file {path}: cannot read the token: {reason}") from exc
    token = text.strip()
    if not token:
        raise OptionError(f"--token-file {path}: the file is empty; write the token in it")
    warnings = []
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and os.name == "posix":
        warnings.append(f"the token file {path} is readable by other users: chmod 600 {path}")
    return token, warnings


def bind_warnings(host: str, token: str | None) -> list[str]:
    """What to tell the user before listening on ``host``."""
    if is_loopback(host):
        return []
    lines = [f"the dashboard listens on {host}, not only on this machine: whoever reaches the "
             "port can read every study in the storage"]
    if token is None:
        lines.append("no token is set: pass --token-file PATH (or set AUTOTUNE_DASHBOARD_TOKEN) "
                     "so that every request must carry it")
    return lines


def serve(
    storage_url: str, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
    log_dir: Path | None = None,
) -> None:
    """Serve the dashboard over ``storage_url`` until interrupted."""
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from autotune.dashboard.app import create_app
    from autotune.store import open_catalog

    if token is None and not is_loopback(host):
        raise OptionError(
            f"refusing to listen on {host} without a token: whoever reaches the port could read "
            "every study in the storage; pass --token-file PATH (or set "
            "AUTOTUNE_DASHBOARD_TOKEN), or listen on 127.0.0.1")
    for line in bind_warnings(host, token):
        print(f"warning: {line}", file=sys.stderr)
    app = create_app(open_catalog(storage_url), token, log_dir=log_dir)
    names = allowed_host_names(host)
    if names is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=names)
    storage = make_url(storage_url).render_as_string(hide_password=True)
    print(f"autotune dashboard for {storage} on http://{shown_address(host)}:{port}/"
          + (" (append ?token=T once)" if token else ""), file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
