"""Read-only web dashboard over a study storage (FastAPI + Plotly; pages in ``web/``).

``create_app(catalog, token=None)`` builds the app over a ``Catalog``
(``autotune.store.open_catalog(url)``), ``serve(storage_url, ...)`` opens one and runs the app
with uvicorn. Both are imported on first use so that ``autotune --help`` does not load FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from autotune.dashboard.app import create_app

        return create_app
    if name == "serve":
        from autotune.dashboard.server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
