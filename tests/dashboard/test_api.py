"""The dashboard's pages and JSON endpoints over real storages (FastAPI TestClient)."""

from __future__ import annotations

import re
import shutil

import pytest

from autotune.metrics import natural_direction
from autotune.results.export import export_yaml
from autotune.results.report import load_report, pareto_front
from autotune.store import open_catalog
from tests.support.dashboard import (
    HOSTILE,
    HOSTILE_PARAM,
    MIXED,
    MIXED_KINDS,
    ONLY_FAILED,
    QUICKSTART,
    QUICKSTART_DB,
    decode_trials,
    study_id,
)


def assert_no_trace(text: str) -> None:
    assert "Traceback" not in text
    assert 'File "' not in text
    assert "sqlite:///" not in text


# ---- studies -------------------------------------------------------------------------------


def test_studies_lists_counts_best_and_gain(studies_url, client_for):
    client = client_for(studies_url)
    studies = {s["name"]: s for s in client.get("/api/studies").json()}
    assert set(studies) == {MIXED, ONLY_FAILED, HOSTILE}

    mixed = studies[MIXED]
    assert mixed["counts"]["total"] == len(MIXED_KINDS)
    assert mixed["counts"]["complete"] == MIXED_KINDS.count("F") + MIXED_KINDS.count("V")
    assert mixed["counts"]["failed"] == MIXED_KINDS.count("X")
    assert mixed["counts"]["running"] == MIXED_KINDS.count("R")
    assert mixed["hardware"] == "CPU, 2 core(s), 1 engine slot"
    assert mixed["updated_at"]

    report = load_report(open_catalog(studies_url), MIXED)
    feasible = [t for t in report.trials if t.state == "complete" and t.feasible]
    best_throughput = max(feasible, key=lambda t: t.metrics["output_throughput"])
    best = mixed["best"]["output_throughput"]
    assert best["trial"] == best_throughput.number
    assert best["value"] == pytest.approx(best_throughput.metrics["output_throughput"], rel=1e-5)
    assert best["gain"] == pytest.approx(
        report.gains(best_throughput)["output_throughput"], rel=1e-5)
    best_latency = min(feasible, key=lambda t: t.metrics["e2e_p95_ms"])
    assert mixed["best"]["e2e_p95_ms"]["trial"] == best_latency.number

    failed = studies[ONLY_FAILED]
    assert failed["counts"]["failed"] == 3 and failed["counts"]["complete"] == 0
    assert all(b["trial"] is None and b["gain"] is None for b in failed["best"].values())


def test_recorded_quickstart_study(quickstart_url, client_for):
    client = client_for(quickstart_url)
    [study] = client.get("/api/studies").json()
    assert study["name"] == QUICKSTART
    assert study["counts"]["complete"] == 3
    # Every trial of the recording missed the TTFT SLO: no feasible best, no Pareto front.
    assert all(b["trial"] is None for b in study["best"].values())
    payload = client.get(f"/api/studies/{study['id']}/trials").json()
    trials = decode_trials(payload)
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert [t["feasible"] for t in trials] == [False, False, False]
    assert trials[0]["is_default"]
    assert trials[1]["metrics"]["output_throughput"] == pytest.approx(1136.12, rel=1e-5)
    assert payload["pareto_front"] == []
    page = client.get(f"/studies/{study['id']}")
    assert page.status_code == 200
    assert "quickstart-cpu" in page.text


def test_studies_page_embeds_the_studies(studies_url, client_for):
    page = client_for(studies_url).get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert MIXED in page.text
    assert '<script src="/static/studies.js" defer></script>' in page.text


def test_empty_storage(empty_url, client_for):
    client = client_for(empty_url)
    assert client.get("/api/studies").json() == []
    page = client.get("/")
    assert page.status_code == 200
    assert "No autotune study in this storage yet" in page.text
    assert client.get("/studies/1").status_code == 404
    assert client.get("/api/studies/1/trials").status_code == 404


# ---- one study -----------------------------------------------------------------------------


def test_trials_and_after(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, MIXED)
    payload = client.get(f"/api/studies/{sid}/trials").json()
    trials = decode_trials(payload)
    assert len(trials) == len(MIXED_KINDS)
    states = {"F": "complete", "V": "complete", "X": "failed", "R": "running"}
    assert [t["state"] for t in trials] == [states[k] for k in MIXED_KINDS]
    assert [t["feasible"] for t in trials] == [k == "F" for k in MIXED_KINDS]
    failed = [t for t in trials if t["state"] == "failed"]
    assert all(t["failure_kind"] and t["failure_reason"] for t in failed)
    assert all(t["metrics"] == {} for t in failed)
    assert payload["metrics"][:2] == ["output_throughput", "e2e_p95_ms"]
    assert payload["directions"]["output_throughput"] == "maximize"
    assert payload["directions"]["ttft_p95_ms"] == "minimize"

    later = decode_trials(client.get(f"/api/studies/{sid}/trials?after=10").json())
    assert [t["number"] for t in later] == list(range(11, len(MIXED_KINDS)))
    assert later == trials[11:]
    assert client.get(f"/api/studies/{sid}/trials?after=999").json()["trials"] == []
    assert client.get(f"/api/studies/{sid}/trials?after=abc").status_code == 400


def test_front_for_objectives_and_any_metrics(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, MIXED)
    report = load_report(open_catalog(studies_url), MIXED)
    assert report.pareto_front
    objectives = client.get(f"/api/studies/{sid}/front").json()
    assert objectives["metrics"] == ["output_throughput", "e2e_p95_ms"]
    assert objectives["front"] == report.pareto_front

    picked = ["request_goodput", "ttft_p99_ms", "tpot_mean_ms"]
    other = client.get(f"/api/studies/{sid}/front?metrics={','.join(picked)}").json()
    assert other["directions"] == ["maximize", "minimize", "minimize"]
    assert other["front"] == pareto_front(report.trials, picked,
                                          [natural_direction(m) for m in picked])
    for bad in ("nope", "a,b,c,d", "output_throughput,nope"):
        response = client.get(f"/api/studies/{sid}/front?metrics={bad}")
        assert response.status_code == 400


def test_study_summary(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, MIXED)
    summary = client.get(f"/api/studies/{sid}").json()
    assert summary["name"] == MIXED
    assert summary["default_trial"] == 0
    assert summary["slos"] == {"ttft_p95_ms": 1500.0, "e2e_p95_ms": 4000.0}
    assert summary["pareto_front"] == load_report(open_catalog(studies_url), MIXED).pareto_front
    page = client.get(f"/studies/{sid}")
    assert page.status_code == 200
    assert '<script type="application/json" id="study-data">' in page.text
    assert 'src="/static/vendor/plotly.min.js"' in page.text


def test_figures(studies_url, client_for):
    client = client_for(studies_url)
    figures = client.get(f"/api/studies/{study_id(studies_url, MIXED)}/figures").json()
    history = figures["history"]
    # Optuna's hypervolume history: one point per trial Optuna knows as finished.
    xs = history["data"][0]["x"]
    finished = len(MIXED_KINDS) - MIXED_KINDS.count("R")
    assert len(xs) == finished
    assert history["data"][0]["y"][-1] > 0
    importance = figures["importance"]
    bars = {name for trace in importance["data"] for name in trace["y"]}
    assert any(name.startswith("max_num_seqs") for name in bars)
    assert len(importance["data"]) == 2  # one series per objective

    only_failed = client.get(f"/api/studies/{study_id(studies_url, ONLY_FAILED)}/figures").json()
    assert only_failed["history"] is None and only_failed["importance"] is None
    assert any("feasible" in note for note in only_failed["notes"])


def test_only_failed_study_pages(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, ONLY_FAILED)
    assert client.get(f"/studies/{sid}").status_code == 200
    assert client.get(f"/api/studies/{sid}/front").json()["front"] == []
    trial = client.get(f"/studies/{sid}/trials/1")
    assert trial.status_code == 200
    assert 'id="failure-kind"' in trial.text
    assert "nothing to export" in trial.text
    assert client.get(f"/studies/{sid}/trials/1/export.yaml").status_code == 409


# ---- trial, export, compare ----------------------------------------------------------------


def test_trial_page_shows_everything(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, MIXED)
    report = load_report(open_catalog(studies_url), MIXED)
    record = next(t for t in report.trials if t.state == "complete" and not t.is_default)
    page = client.get(f"/studies/{sid}/trials/{record.number}")
    assert page.status_code == 200
    text = page.text
    for name, value in record.params.items():
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        assert f"<th>{name}</th><td>{shown}</td>" in text
    for metric in ("ttft", "tpot", "itl", "e2e"):
        assert f"<th>{metric}</th>" in text
    assert "request_goodput" in text and "error_rate" in text
    assert "startup s" in text and "teardown s" in text
    assert "vllm serve demo-llama" in text
    assert f"{record.metrics['output_throughput']:.6g}" in text

    failed = next(t for t in report.trials if t.state == "failed")
    page = client.get(f"/studies/{sid}/trials/{failed.number}").text
    assert f'<span id="failure-kind">{failed.failure_kind}</span>' in page
    assert failed.failure_reason in page
    assert failed.failure_line in page
    assert '<pre id="log" class="log">INFO starting engine' in page

    data = client.get(f"/api/studies/{sid}/trials/{failed.number}").json()
    assert data["failure_kind"] == failed.failure_kind
    assert data["log_excerpt"] == failed.log_excerpt


def test_export_yaml_is_what_autotune_export_writes(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, MIXED)
    report = load_report(open_catalog(studies_url), MIXED)
    record = report.trial(report.pareto_front[0])
    response = client.get(f"/studies/{sid}/trials/{record.number}/export.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert (response.headers["content-disposition"]
            == f'attachment; filename="trial-{record.number}.yaml"')
    assert response.text == export_yaml(report, record)
    assert "max-num-seqs:" in response.text
    page = client.get(f"/studies/{sid}/trials/{record.number}").text
    assert f'href="/studies/{sid}/trials/{record.number}/export.yaml"' in page
    assert 'id="download"' in page


def test_compare_highlights_differing_params(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, MIXED)
    report = load_report(open_catalog(studies_url), MIXED)
    a, b = report.trial(1), report.trial(2)
    page = client.get(f"/studies/{sid}/compare?trials=1,2").text
    rows = re.findall(r'<tr class="param( differs)?"><th>([^<]+)</th>', page)
    flagged = {name for differs, name in rows if differs}
    names = set(a.params) | set(b.params)
    assert {name for _, name in rows} == names
    assert flagged == {n for n in names if a.params.get(n) != b.params.get(n)}
    assert flagged  # two random configurations differ somewhere
    assert 'class="num best"' in page
    assert client.get(f"/studies/{sid}/compare?trials=1").status_code == 400
    assert client.get(f"/studies/{sid}/compare?trials=1,x").status_code == 400
    assert client.get(f"/studies/{sid}/compare?trials=1,999").status_code == 404


# ---- errors, escaping, security ------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/studies/999", "/studies/abc", "/studies/1/trials/999", "/studies/1/trials/x",
    "/studies/999/trials/0/export.yaml", "/studies/999/compare?trials=0,1", "/no/such/page",
])
def test_unknown_ids_give_a_404_page(studies_url, client_for, path):
    response = client_for(studies_url).get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Not Found</h1>" in response.text
    assert_no_trace(response.text)


@pytest.mark.parametrize("path", ["/api/studies/999", "/api/studies/1/trials/999",
                                  "/api/studies/abc/trials"])
def test_unknown_ids_give_a_json_404(studies_url, client_for, path):
    response = client_for(studies_url).get(path)
    assert response.status_code == 404
    assert "detail" in response.json()


def test_failures_inside_give_a_500_page_without_trace(studies_url, client_for, monkeypatch):
    client = client_for(studies_url, raise_server_exceptions=False)

    def broken(self, study_id):  # noqa: ANN001
        raise RuntimeError("secret internals")

    monkeypatch.setattr("autotune.dashboard.data.StudyData.study", broken)
    response = client.get("/studies/1")
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert_no_trace(response.text)


def test_old_schema_asks_for_db_upgrade(tmp_path, client_for):
    path = tmp_path / "old.db"
    shutil.copy(QUICKSTART_DB, path)
    url = f"sqlite:///{path}"
    if not open_catalog(url).schema_behind():
        pytest.skip("the recorded fixture is at the newest schema revision")
    response = client_for(url, raise_server_exceptions=False).get("/")
    assert response.status_code == 503
    assert "autotune db upgrade" in response.text
    assert open_catalog(url).schema_behind()  # the dashboard did not migrate it


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_read_only(studies_url, client_for, method):
    client = client_for(studies_url)
    before = client.get("/api/studies").json()
    for path in ("/", "/api/studies", "/api/studies/1", "/studies/1/trials/0",
                 "/studies/1/trials/0/export.yaml", "/static/study.js"):
        response = client.request(method, path)
        assert response.status_code == 405, path
    assert client.get("/api/studies").json() == before


def test_user_strings_are_escaped(studies_url, client_for):
    client = client_for(studies_url)
    sid = study_id(studies_url, HOSTILE)
    pages = [client.get(p).text for p in (
        "/", f"/studies/{sid}", f"/studies/{sid}/trials/1", f"/studies/{sid}/compare?trials=1,2")]
    for text in pages:
        assert "<script>alert(" not in text
        assert "<img src=x" not in text
        assert "<b>model</b>" not in text
    studies_page, study_page, trial_page, compare_page = pages
    # In JSON embedded in a page, < and > are escaped for the HTML parser.
    assert "\\u003cscript\\u003ealert(" in studies_page
    assert "\\u003cscript\\u003ealert(" in study_page
    assert "&lt;b&gt;model&lt;/b&gt;" in study_page
    assert "&lt;script&gt;alert(&#39;study&#39;)&lt;/script&gt;" in trial_page
    assert "&lt;img src=x onerror=alert(&#39;param&#39;)&gt;" in trial_page
    assert "&lt;img src=x" in compare_page
    # The JSON API returns the strings as data, declared as JSON.
    response = client.get("/api/studies")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert HOSTILE in {s["name"] for s in response.json()}
    trials = decode_trials(client.get(f"/api/studies/{sid}/trials").json())
    assert trials[1]["params"]["note"] == HOSTILE_PARAM


def test_security_headers(studies_url, client_for):
    response = client_for(studies_url).get("/")
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self' 'unsafe-eval'"  # no inline script runs
    assert "connect-src 'self'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_token_is_required_on_every_request(studies_url, client_for):
    client = client_for(studies_url, token="s3cret", follow_redirects=False)
    paths = ["/", "/api/studies", "/studies/1", "/studies/1/trials/0/export.yaml",
             "/static/study.js", "/static/vendor/plotly.min.js", "/no/such/page"]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 401, path
        assert "Studies" not in response.text
    assert client.get("/api/studies", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/studies?token=wrong").status_code == 401
    assert client.get("/api/studies",
                      headers={"Authorization": "Bearer s3cret"}).status_code == 200

    # ?token= once: redirected to the same page without it, the token now in a cookie.
    response = client.get("/studies/1?x=mixed&token=s3cret")
    assert response.status_code == 303
    assert response.headers["location"] == "/studies/1?x=mixed"
    assert "httponly" in response.headers["set-cookie"].lower()
    assert "samesite=strict" in response.headers["set-cookie"].lower()
    for path in paths[:-1]:
        assert client.get(path).status_code == 200, path

    anonymous = client_for(studies_url, token="s3cret")
    assert anonymous.get("/api/studies").status_code == 401


def test_plotly_is_served_by_the_app(studies_url, client_for):
    client = client_for(studies_url)
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "plotly.js v" in response.text[:200]
    for path in ("/", "/studies/1", "/studies/1/trials/1", "/studies/1/compare?trials=1,2"):
        page = client.get(path).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sources and all(s.startswith(("/", "data:")) for s in sources), sources
