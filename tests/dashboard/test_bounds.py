"""The dashboard marks a bound (every load level held the SLOs: autotune.metrics.bound_mark):
the trials payload carries each trial's marks for the trade-off plot and the table, and the
trial, compare and studies pages print them."""

from __future__ import annotations

import html
import re

import pytest

from tests.support.bounds import NAME, bound_study_url
from tests.support.dashboard import decode_trials, study_id

NOTE = "≥ / ≤: a bound, not an exact figure"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return bound_study_url(tmp_path_factory.mktemp("bounds"))


def visible(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_trials_payload_carries_the_marks(url: str, client_for) -> None:
    client = client_for(url)
    sid = study_id(url, NAME)
    trials = {t["number"]: t for t in decode_trials(client.get(f"/api/studies/{sid}/trials")
                                                    .json())}
    assert trials[0]["bounds"] == {"capacity_rps": "≥", "throughput_per_device_at_capacity": "≥",
                                   "interactivity_at_capacity": "≤"}
    assert trials[1]["bounds"] == {} and trials[2]["bounds"] == {}
    best = client.get(f"/api/studies/{sid}").json()["best"]
    assert best["capacity_rps"]["trial"] == 0 and best["capacity_rps"]["bound"] == "≥"
    assert best["interactivity_at_capacity"]["bound"] in ("≤", "")


def test_the_trial_and_compare_pages_mark_bounds(url: str, client_for) -> None:
    client = client_for(url)
    sid = study_id(url, NAME)
    page = visible(client.get(f"/studies/{sid}/trials/0").text)
    assert "capacity_rps ↑ ≥ 36.0 req/s" in page
    assert "interactivity_at_capacity ↑ ≤ 72.0 tok/s" in page
    assert "throughput_per_device_at_capacity ≥ 2,304 tok/s" in page
    assert NOTE in page and "capacity at SLO ≥ 36.0 req/s" in page  # the load curve's summary
    exact = visible(client.get(f"/studies/{sid}/trials/1").text)
    assert "capacity_rps ↑ 9.00 req/s ≤0.25x" in exact
    assert "interactivity_at_capacity ↑ 72.0 tok/s ≥1.00x" in exact and NOTE not in exact
    compare = visible(client.get(f"/studies/{sid}/compare?trials=0,1").text)
    assert "capacity_rps ↑ ≥ 36.0 req/s 9.00 req/s" in compare and NOTE in compare
