"""``autotune dashboard``: options, token from the environment, loopback by default, warnings."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from autotune.cli.dashboard import dashboard
from autotune.dashboard.server import bind_warnings, serve


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What uvicorn.run was asked to serve (nothing is served)."""
    calls: dict[str, Any] = {}

    def run(app: Any, **kwargs: Any) -> None:
        calls.update(app=app, **kwargs)

    monkeypatch.setattr("uvicorn.run", run)
    return calls


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(dashboard)
    return app


def test_defaults_and_token_from_environment(studies_url, served):
    result = CliRunner().invoke(cli(), ["--storage", studies_url],
                                env={"AUTOTUNE_DASHBOARD_TOKEN": "from-env"})
    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1" and served["port"] == 8080
    client = TestClient(served["app"], base_url="http://localhost:8080")
    assert client.get("/api/studies").status_code == 401
    assert client.get("/api/studies",
                      headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_options(studies_url, served):
    result = CliRunner().invoke(cli(), ["--storage", studies_url, "--host", "0.0.0.0",
                                        "--port", "9001", "--token", "t0k"])
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("0.0.0.0", 9001)
    assert "warning: the dashboard listens on 0.0.0.0" in result.output
    assert "no token is set" not in result.output
    assert TestClient(served["app"]).get("/").status_code == 401


def test_invalid_storage_is_refused(served):
    result = CliRunner().invoke(cli(), ["--storage", "autotune.db"])
    assert result.exit_code == 2
    assert "not a database URL" in result.output
    assert served == {}


def test_bind_warnings():
    assert bind_warnings("127.0.0.1", None) == []
    assert bind_warnings("localhost", None) == []
    assert bind_warnings("::1", None) == []
    open_without_token = bind_warnings("0.0.0.0", None)
    assert len(open_without_token) == 2 and "--token" in open_without_token[1]
    assert len(bind_warnings("192.168.1.5", "t")) == 1


def test_loopback_refuses_other_host_names(studies_url, served, capsys):
    serve(studies_url)
    assert "warning" not in capsys.readouterr().err
    app = served["app"]
    assert TestClient(app, base_url="http://localhost:8080").get("/").status_code == 200
    assert TestClient(app, base_url="http://127.0.0.1:8080").get("/").status_code == 200
    # A page elsewhere that rebinds its own name to 127.0.0.1 gets nothing.
    assert TestClient(app, base_url="http://attacker.example").get("/").status_code == 400


def test_storage_password_is_not_printed(served, capsys, monkeypatch):
    monkeypatch.setattr("autotune.dashboard.app.create_app",
                        lambda url, token, **_: object())
    serve("postgresql+psycopg://user:hunter2@db.example/autotune", host="10.0.0.1", port=8081,
          token="t0k")
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert "user:***@db.example" in err
    assert "warning: the dashboard listens on 10.0.0.1" in err


@pytest.mark.parametrize("host, name", [("::1", "[::1]"), ("127.0.0.2", "127.0.0.2"),
                                        ("0:0:0:0:0:0:0:1", "[::1]")])
def test_every_loopback_address_refuses_other_host_names(studies_url, served, host, name):
    serve(studies_url, host=host)
    app = served["app"]
    assert TestClient(app, base_url=f"http://{name}:8080").get("/").status_code == 200
    assert TestClient(app, base_url="http://localhost:8080").get("/").status_code == 200
    assert TestClient(app, base_url="http://attacker.example").get("/").status_code == 400


def test_token_from_a_file(studies_url, served, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    result = CliRunner().invoke(cli(), ["--storage", studies_url, "--token-file", str(secret)],
                                env={"AUTOTUNE_DASHBOARD_TOKEN": "from-env"})
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output and "warning" not in result.output
    client = TestClient(served["app"], base_url="http://localhost:8080")
    assert client.get("/api/studies").status_code == 401
    assert client.get("/api/studies", headers={"Authorization": "Bearer from-env"}
                      ).status_code == 401  # the file, named explicitly, wins
    assert client.get("/api/studies", headers={"Authorization": "Bearer s3cret"}
                      ).status_code == 200


@pytest.mark.parametrize("content, expected", [(None, "cannot read"), ("  \n", "is empty")])
def test_unusable_token_file_is_refused(served, tmp_path, content, expected):
    secret = tmp_path / "token"
    if content is not None:
        secret.write_text(content)
    result = CliRunner().invoke(cli(), ["--storage", f"sqlite:///{tmp_path / 'x.db'}",
                                        "--token-file", str(secret)])
    assert result.exit_code == 2, result.output
    assert str(secret) in result.output and expected in result.output
    assert served == {}


def test_token_and_token_file_together_are_refused(served, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    result = CliRunner().invoke(cli(), ["--storage", f"sqlite:///{tmp_path / 'x.db'}",
                                        "--token", "t", "--token-file", str(secret)])
    assert result.exit_code == 2, result.output
    assert "--token-file" in result.output and served == {}


def test_token_on_the_command_line_warns_of_ps(studies_url, served, tmp_path):
    result = CliRunner().invoke(cli(), ["--storage", studies_url, "--token", "t0k"])
    assert result.exit_code == 0, result.output
    assert "visible" in result.output and "--token-file" in result.output
    shared = tmp_path / "token"
    shared.write_text("t0k")
    shared.chmod(0o644)
    result = CliRunner().invoke(cli(), ["--storage", studies_url, "--token-file", str(shared)])
    assert result.exit_code == 0, result.output
    assert "readable by other users" in result.output and "chmod 600" in result.output
