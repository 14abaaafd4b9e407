"""The dashboard's FastAPI app: pages, JSON endpoints, token check, read-only guard.

``create_app(catalog)`` builds an app over any storage's ``Catalog``, so tests hand it their own
database. Nothing here writes: every route is a GET, any other method is refused before routing,
and the storage is only read through the catalog (``autotune.dashboard.data``).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import DatabaseError
from starlette.exceptions import HTTPException as StarletteHTTPException

from autotune.dashboard.data import (
    NotFoundError,
    Snapshot,
    StudyData,
    dumps,
    timestamp,
)
from autotune.dashboard.figures import OptunaFigures
from autotune.dashboard.load_curve import load_curve
from autotune.dashboard.logs import log_tail, refusal, safe_log_file
from autotune.dashboard.views import compare_view, trial_view
from autotune.errors import AutotuneError, StudyNotFoundError, TrialNotFoundError
from autotune.results import export_yaml, pick_trial, study_noise_model
from autotune.store.values import TrialView

if TYPE_CHECKING:
    from autotune.store import Catalog

TOKEN_COOKIE = "autotune_dashboard_token"
READ_METHODS = frozenset({"GET", "HEAD"})
# Plotly's WebGL traces (3-D scatter, parallel coordinates) compile shaders with Function(), and
# it injects its own <style>; inline scripts stay forbidden.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def web_root() -> Path:
    """``web/`` beside the package in a checkout, ``autotune/_web`` in an installed wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "web", package / "_web"):
        if (candidate / "templates").is_dir():
            return candidate
    raise AutotuneError("the dashboard's web/ folder (templates, static) is missing from this "
                        "installation; reinstall autotune")


def plotly_js() -> Path:
    path = Path(str(files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise AutotuneError("plotly.min.js is missing from the plotly package; "
                            "reinstall it with `pip install --force-reinstall plotly`")
    return path


def _study(request: Request, study_id: int) -> Snapshot:
    return request.app.state.data.study(study_id)


StudyDep = Annotated[Snapshot, Depends(_study)]


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(catalog: Catalog, token: str | None = None, *,
               log_dir: Path | None = None) -> FastAPI:
    """The dashboard over ``catalog`` (``autotune.store.open_catalog(url)``). With ``token``,
    every request must carry it (header ``Authorization: Bearer T``, cookie, or ``?token=T``
    once, which sets the cookie). Engine logs are served only from inside ``log_dir`` (default:
    the settings' ``log_dir``, where studies write them; ``autotune.dashboard.logs``)."""
    from autotune.settings import Settings

    log_root = log_dir if log_dir is not None else Path(Settings().log_dir)
    web = web_root()
    plotly_path = plotly_js()
    env = Environment(loader=FileSystemLoader(web / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    templates = Jinja2Templates(env=env)
    data = StudyData(catalog)
    figures = OptunaFigures(catalog)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        data.close()

    app = FastAPI(title="autotune dashboard", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.data = data

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def problem(request: Request, status: int, message: str) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": message}, status_code=status)
        title = HTTPStatus(status).phrase
        return page(request, "error.html", status, title=title, message=message)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.method not in READ_METHODS:
            response: Response = problem(request, 405, "the dashboard is read-only")
        elif token is not None and not _authorised(request, token):
            response = problem(request, 401, "this dashboard needs its token: open it once "
                               "with ?token=T, or send the header Authorization: Bearer T")
        elif token is not None and request.query_params.get("token"):
            # Move the token from the address bar into a cookie.
            query = urlencode([(k, v) for k, v in request.query_params.multi_items()
                               if k != "token"])
            response = RedirectResponse(request.url.path + ("?" + query if query else ""), 303)
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if exc.status_code != 404 else "there is no such page"
        return problem(request, exc.status_code, str(message))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        if any(error.get("loc", ("",))[0] == "path" for error in exc.errors()):
            return problem(request, 404, "there is no such study or trial")
        fields = ", ".join(str(e.get("loc", ("?",))[-1]) for e in exc.errors())
        return problem(request, 400, f"invalid query parameter(s): {fields}")

    @app.exception_handler(NotFoundError)
    @app.exception_handler(StudyNotFoundError)
    @app.exception_handler(TrialNotFoundError)
    async def not_found(request: Request, exc: AutotuneError) -> Response:
        message = str(exc) if isinstance(exc, NotFoundError) else "there is no such study"
        return problem(request, 404, message)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this, so the server logs the trace; the page never shows it.
        if isinstance(exc, DatabaseError) and catalog.schema_behind():
            response = problem(request, 503, "autotune's tables in this storage are older than "
                               "this autotune: run `autotune db upgrade --storage URL` once "
                               "(the dashboard itself never writes)")
        else:
            response = problem(request, 500, "the dashboard failed to read the storage; its "
                               "log has the details")
        response.headers.update(SECURITY_HEADERS)
        return response

    def trial_of(snapshot: Snapshot, trial_number: int) -> TrialView:
        record = snapshot.report.trial(trial_number)
        if record is None:
            raise NotFoundError(f"study {snapshot.report.name!r} has no trial {trial_number}")
        return record

    def exported(snapshot: Snapshot, trial_number: int) -> str:
        """What `autotune export NAME --trial N` writes; AutotuneError if N did not complete."""
        record = pick_trial(snapshot.report, number=trial_number, pick=None)
        return export_yaml(snapshot.report, record)

    def json_bytes(payload: bytes) -> Response:
        return Response(payload, media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    def studies_payload() -> list[dict[str, Any]]:
        rows = []
        for record in data.studies():
            summary = data.snapshot(record).summary
            rows.append({key: summary[key] for key in (
                "id", "name", "model", "hardware", "objectives", "counts", "best",
                "default_trial", "updated_at")})
        return rows

    # Pages.

    @app.get("/", include_in_schema=False)
    def studies_page(request: Request) -> Response:
        return page(request, "studies.html", studies=studies_payload())

    @app.get("/studies/{study_id}", include_in_schema=False)
    def study_page(request: Request, snapshot: StudyDep) -> Response:
        return page(request, "study.html", study=snapshot.summary)

    @app.get("/studies/{study_id}/trials/{trial_number}", include_in_schema=False)
    def trial_page(request: Request, snapshot: StudyDep, trial_number: int) -> Response:
        record = trial_of(snapshot, trial_number)
        try:
            yaml_text, export_error = exported(snapshot, trial_number), None
        except AutotuneError as exc:
            yaml_text, export_error = None, str(exc)
        # the catalog's trials (each its own run), not the report's means over fresh servers
        noise = study_noise_model(catalog, snapshot.report.name)
        return page(
            request, "trial.html", study=snapshot.summary, trial=record,
            view=trial_view(snapshot, record, noise.intervals(record), log_root=log_root),
            yaml_text=yaml_text,
            export_error=export_error,
        )

    @app.get("/studies/{study_id}/trials/{trial_number}/export.yaml", include_in_schema=False)
    def export_file(snapshot: StudyDep, trial_number: int) -> Response:
        trial_of(snapshot, trial_number)
        try:
            text = exported(snapshot, trial_number)
        except AutotuneError as exc:
            raise HTTPException(409, str(exc)) from None
        filename = f"trial-{trial_number}.yaml"
        return Response(text, media_type="application/yaml",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/studies/{study_id}/compare", include_in_schema=False)
    def compare_page(
        request: Request, snapshot: StudyDep, trials: Annotated[str, Query()] = "",
    ) -> Response:
        numbers = _numbers(trials)
        if len(numbers) < 2:
            raise HTTPException(400, "pick at least two trials to compare, e.g. ?trials=0,3")
        records = [trial_of(snapshot, n) for n in numbers]
        return page(request, "compare.html", study=snapshot.summary,
                    table=compare_view(snapshot, records))

    # JSON.

    @app.get("/api/studies")
    def api_studies() -> Response:
        return json_bytes(dumps(studies_payload()))

    @app.get("/api/studies/{study_id}")
    def api_study(snapshot: StudyDep) -> Response:
        return json_bytes(dumps(snapshot.summary))

    @app.get("/api/studies/{study_id}/trials")
    def api_trials(snapshot: StudyDep, after: int | None = None) -> Response:
        return json_bytes(snapshot.trials_json(after))

    @app.get("/api/studies/{study_id}/trials/{trial_number}")
    def api_trial(snapshot: StudyDep, trial_number: int) -> Response:
        record = trial_of(snapshot, trial_number)
        payload = snapshot.report.trial_dict(record)
        payload.update(log_excerpt=record.log_excerpt,
                       log_tail=log_tail(record.log_path, log_root),
                       engine_flags=record.engine_flags,
                       model=record.model, started_at=timestamp(record.started_at),
                       finished_at=timestamp(record.finished_at),
                       load_curve=load_curve(record, snapshot.report.slos))
        return json_bytes(dumps(payload))

    @app.get("/api/studies/{study_id}/trials/{trial_number}/log")
    def api_log(snapshot: StudyDep, trial_number: int) -> Response:
        record = trial_of(snapshot, trial_number)
        refused = refusal(record.log_path, log_root)
        if refused is not None:
            raise NotFoundError(refused)
        tail = log_tail(record.log_path, log_root)
        if tail is None or safe_log_file(record.log_path, log_root) is None:
            raise NotFoundError(f"{record.log_path} cannot be read here")
        return Response(tail, media_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/studies/{study_id}/front")
    def api_front(snapshot: StudyDep, metrics: Annotated[str, Query()] = "") -> Response:
        picked = tuple(m for m in metrics.split(",") if m) or tuple(snapshot.report.metrics)
        unknown = [m for m in picked if m not in snapshot.metric_names]
        if unknown or not 1 <= len(picked) <= 3:
            raise HTTPException(400, "metrics: one to three of the study's metric names")
        return json_bytes(dumps({
            "version": snapshot.version, "metrics": picked,
            "directions": [snapshot.direction(m) for m in picked],
            "front": snapshot.front(picked),
        }))

    @app.get("/api/studies/{study_id}/figures")
    def api_figures(snapshot: StudyDep) -> Response:
        payload = data.figures.get(snapshot.study_id, snapshot.updated_at,
                                   lambda _previous: figures.compute(snapshot))
        return json_bytes(dumps(payload))

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> Response:
        return FileResponse(plotly_path, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    # Mounted last: routes match in order, and the vendored plotly.js lives under /static too.
    app.mount("/static", StaticFiles(directory=web / "static"), name="static")
    return app


def _authorised(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    offered = [
        header[len("Bearer "):] if header.startswith("Bearer ") else "",
        request.cookies.get(TOKEN_COOKIE, ""),
        request.query_params.get("token", ""),
    ]
    expected = token.encode()
    return any(hmac.compare_digest(value.encode(), expected) for value in offered if value)


def _numbers(text: str) -> list[int]:
    try:
        return list(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise HTTPException(400, "trials: comma-separated trial numbers, e.g. 0,3") from None
