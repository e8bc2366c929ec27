"""``/healthz`` and ``/metrics`` through Flask's test client, on simulated lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.lines.simulated import SimulatedLine
from tests.conftest import Answer, call_api, simulated_line

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text page, by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(page: Samples, name: str, **labels: str) -> float:
    return page[(name, frozenset(labels.items()))]


@pytest.fixture
def two_lines(make_app: Callable[..., Flask]) -> Flask:
    return make_app([simulated_line("line1"), simulated_line("line2")])


def api(client: FlaskClient, **params: str) -> Answer:
    return call_api(client, **params)


def healthz(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/healthz")
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    return response.status_code, json.loads(response.data)


def test_healthz_reports_every_line(two_lines: Flask) -> None:
    client = two_lines.test_client()
    status, body = healthz(client)
    assert status == 200
    assert body["status"] == "ok" and body["version"] == __version__
    assert 0 <= body["uptime_s"] < 60
    idle = {"driver": "simulated", "hook": "on-hook", "fault": None, "open": True,
            "in_call": False, "busy": False, "queue_depth": 0}
    assert body["lines"] == {"line1": idle, "line2": idle}

    call_id = api(client, command="Call", Dialed="5551234").text("CallId")
    _, body = healthz(client)
    assert body["lines"]["line1"] == {**idle, "hook": "off-hook", "in_call": True}
    # No password, so no CallId: a CallId is half of what it takes to send keys.
    assert call_id not in json.dumps(body)


def test_healthz_needs_no_password_but_the_api_does(two_lines: Flask) -> None:
    client = two_lines.test_client()
    assert client.get("/healthz").status_code == 200
    assert call_api(client, auth=False, command="ListActiveCalls").code != 200


def test_metrics_count_what_happened(two_lines: Flask) -> None:
    client = two_lines.test_client()
    call_id = api(client, command="Call", Dialed="5551234").text("CallId")
    for keys in ("123", "45*#"):
        assert api(client, command="SendDTMF", CallId=call_id, Party="all", Keys=keys).code == 200
    assert api(client, command="SendDTMF", CallId=call_id, Party="all", Keys="12x").code == 302
    assert call_api(client, auth=False, command="HangUp").code != 200
    assert api(client, command="HangUp", CallId=call_id).code == 200

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    page = samples(response.data.decode())
    assert value(page, "dtmf_gateway_commands_total", command="SendDTMF", code="200") == 2
    assert value(page, "dtmf_gateway_commands_total", command="SendDTMF", code="302") == 1
    assert value(page, "dtmf_gateway_commands_total", command="Call", code="200") == 1
    assert value(page, "dtmf_gateway_commands_total", command="HangUp", code="200") == 1
    # The keys of both SendDTMF requests reached line1 (dialling is not counted).
    assert value(page, "dtmf_gateway_digits_total", line="line1") == 7
    assert "dtmf_gateway_digits_total" not in {n for n, labels in page
                                               if ("line", "line2") in labels}
    # 7 digits at 100/100 ms and a call set-up, at time_scale 0.05: real seconds passed.
    assert value(page, "dtmf_gateway_line_busy_seconds_total", line="line1") > 0
    assert value(page, "dtmf_gateway_request_seconds_count", command="SendDTMF") == 3
    assert value(page, "dtmf_gateway_request_seconds_bucket", command="SendDTMF", le="+Inf") == 3
    assert value(page, "dtmf_gateway_queue_depth", line="line1") == 0
    assert value(page, "dtmf_gateway_calls_total", direction="outbound", end="normal") == 1
    assert value(page, "dtmf_gateway_line_up", line="line1", driver="simulated") == 1
    assert value(page, "dtmf_gateway_line_off_hook", line="line1") == 0
    assert value(page, "dtmf_gateway_build_info", version=__version__) == 1
    assert value(page, "process_resident_memory_bytes") > 0


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(two_lines: Flask) -> None:
    response = two_lines.test_client().get("/metrics", headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
    assert response.content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert response.data.decode().endswith("# EOF\n")


def test_a_faulted_line_makes_healthz_503_until_it_works_again(two_lines: Flask) -> None:
    client = two_lines.test_client()
    gateway = two_lines.extensions["dtmf_gateway"]
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    call_id = api(client, command="Call", Dialed="1").text("CallId")
    driver.fail_after_digits = 1
    answer = api(client, command="SendDTMF", CallId=call_id, Party="all", Keys="123")
    assert answer.code == 801

    status, body = healthz(client)
    assert status == 503 and body["status"] == "fault"
    line1 = body["lines"]["line1"]
    assert line1["fault"] == "simulated hardware fault"
    assert (line1["hook"], line1["in_call"]) == ("on-hook", False)
    assert body["lines"]["line2"]["fault"] is None
    page = samples(client.get("/metrics").data.decode())
    assert value(page, "dtmf_gateway_line_up", line="line1", driver="simulated") == 0
    assert value(page, "dtmf_gateway_line_up", line="line2", driver="simulated") == 1
    assert value(page, "dtmf_gateway_line_faults_total", line="line1") == 1

    # A new call prefers the healthy line; the faulted one is used when it is
    # the only one free, opens afresh, and once it works, so does /healthz.
    assert api(client, command="Call", Dialed="2").code == 200
    assert healthz(client)[0] == 503
    assert api(client, command="Call", Dialed="3").code == 200
    assert healthz(client)[0] == 200


@pytest.mark.parametrize(("setting", "address", "status"), [
    ("on", "192.0.2.7", 200),
    ("loopback", "127.0.0.1", 200),
    ("loopback", "::1", 200),
    ("loopback", "::ffff:127.0.0.1", 200),
    ("loopback", "192.0.2.7", 403),
    ("off", "127.0.0.1", 404),
])
@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_access_setting(
    make_app: Callable[..., Flask], path: str, setting: str, address: str, status: int
) -> None:
    app = make_app(health={path.strip("/"): setting})
    response = app.test_client().get(path, environ_base={"REMOTE_ADDR": address})
    assert response.status_code == status
    # The other page keeps its own setting.
    other = "/metrics" if path == "/healthz" else "/healthz"
    assert app.test_client().get(other, environ_base={"REMOTE_ADDR": address}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_the_servers_deny_list_applies(make_app: Callable[..., Flask], path: str) -> None:
    client = make_app(server={"deny": ["192.0.2.0/24"]}).test_client()
    assert client.get(path, environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 403
    assert client.get(path, environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code == 200


def test_two_apps_on_one_gateway_share_the_registry(two_lines: Flask) -> None:
    from gateway.app import create_app

    gateway = two_lines.extensions["dtmf_gateway"]
    again = create_app(gateway.config, gateway)  # registering the collectors twice would raise
    page = samples(again.test_client().get("/metrics").data.decode())
    assert value(page, "dtmf_gateway_line_up", line="line2", driver="simulated") == 1
