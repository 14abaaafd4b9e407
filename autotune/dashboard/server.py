"""Run the dashboard with uvicorn, loopback-only unless asked otherwise."""

from __future__ import annotations

import ipaddress
import sys

from sqlalchemy.engine import make_url

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warnings(host: str, token: str | None) -> list[str]:
    """What to tell the user before listening on ``host``."""
    if is_loopback(host):
        return []
    lines = [f"the dashboard listens on {host}, not only on this machine: whoever reaches the "
             "port can read every study in the storage"]
    if token is None:
        lines.append("no token is set: pass --token T (or set AUTOTUNE_DASHBOARD_TOKEN) so that "
                     "every request must carry it")
    return lines


def serve(
    storage_url: str, *, host: str = "127.0.0.1", port: int = 8080, token: str | None = None,
) -> None:
    """Serve the dashboard over ``storage_url`` until interrupted."""
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from autotune.dashboard.app import create_app
    from autotune.store import open_catalog

    for line in bind_warnings(host, token):
        print(f"warning: {line}", file=sys.stderr)
    app = create_app(open_catalog(storage_url), token)
    if host in LOOPBACK_NAMES:
        # A page on another site cannot reach us through DNS rebinding.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES))
    shown = "localhost" if host in LOOPBACK_NAMES else host
    storage = make_url(storage_url).render_as_string(hide_password=True)
    print(f"autotune dashboard for {storage} on http://{shown}:{port}/"
          + (" (append ?token=T once)" if token else ""), file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
