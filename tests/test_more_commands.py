"""Speak over HTTP, the call-control commands an analog line cannot do, a
shorter password for an existing client, and Ozeki XE's dialect."""

from __future__ import annotations

import http.client
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.lines.base import LineDriver
from tests.conftest import Answer, call_api, wait_until
from tests.live import Answer as LiveAnswer
from tests.live import LiveServer, query
from tests.support import Receiver


def api_of(app: Flask) -> Callable[..., Answer]:
    client = app.test_client()
    return lambda **params: call_api(client, **params)


def test_speak_over_http_says_it_on_the_line(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    api = api_of(app)
    call_id = api(command="Call", Dialed="1").text("CallId")
    answer = api(command="Speak", CallId=call_id, Text="Hello there", Voice="en-gb")
    assert answer.code == 200, answer
    gateway: Gateway = app.extensions["dtmf_gateway"]
    events = [what for _, what in gateway.lines["line1"].driver.events]
    assert "speak all en-gb 'Hello there'" in events
    assert api(command="Speak", CallId=call_id).code == 302  # no Text
    bad = api(command="Speak", CallId=call_id, Text="x", Party="boss")
    assert bad.code == 302 and "'Party'" in bad.message
    assert api(command="Speak", CallId="nosuch", Text="x").code == 601


def test_speak_on_a_line_that_cannot_is_303(make_app: Callable[..., Flask],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    gateway: Gateway = app.extensions["dtmf_gateway"]
    driver = gateway.lines["line1"].driver
    # The base class's speak is what a tone-only driver (MT8880) inherits.
    monkeypatch.setattr(driver, "speak", LineDriver.speak.__get__(driver))
    api = api_of(app)
    call_id = api(command="Call", Dialed="1").text("CallId")
    answer = api(command="Speak", CallId=call_id, Text="hello")
    assert answer.code == 303
    assert answer.message == ("Command 'Speak' cannot be used here: a simulated line cannot "
                              "speak")
    # The call is still up: a command the line cannot do is no fault.
    assert api(command="SendDTMF", CallId=call_id, Keys="1", Party="all").code == 200


@pytest.mark.parametrize("command", ["Hold", "Unhold", "AttendedTransfer", "Forward"])
def test_what_an_analog_line_cannot_do_is_303_with_the_reason(
        make_app: Callable[..., Flask], command: str) -> None:
    api = api_of(make_app())
    call_id = api(command="Call", Dialed="1").text("CallId")
    answer = api(command=command, CallId=call_id, Target="200")
    assert answer.code == 303 and answer.message.startswith(
        f"Command '{command}' cannot be used here: an")
    assert "analog line" in answer.message or "PBX" in answer.message


def test_inside_ozml_it_is_reported_and_the_script_goes_on(
        make_app: Callable[..., Flask], receiver: Receiver) -> None:
    app = make_app()
    api = api_of(app)
    doc = "<Response><Hold/><SendDTMF Keys='7' Party='all'/></Response>"
    call_id = api(command="Call", Dialed="1", ResponseOzML=doc,
                  ErrorUrl=f"{receiver.url}/error").text("CallId")
    (error,) = receiver.wait_for("Error")
    assert error["Code"] == "303" and "'Hold'" in error["Message"]
    gateway: Gateway = app.extensions["dtmf_gateway"]
    wait_until(lambda: any(c.call_id == call_id for c in gateway.recent))
    events = [what for _, what in gateway.lines["line1"].driver.events]
    assert any(e.startswith("emit all 1 symbols 1 digits") for e in events)


def passwd(tmp_path: Path, config: str, password: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.toml"
    path.write_text(config)
    return subprocess.run([sys.executable, "-m", "gateway", "passwd", "HTTP_User_1",
                           "--config", str(path)], input=password + "\n",
                          capture_output=True, text=True, timeout=60)


def test_a_shorter_password_only_where_the_config_allows_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    refused = passwd(tmp_path, "", "qwe123")
    assert refused.returncode == 2
    assert refused.stderr == "dtmf-gateway: error: a password needs at least 8 characters\n"
    allowed = passwd(tmp_path, "[auth]\nmin_password_length = 6\n", "qwe123")
    assert allowed.returncode == 0, allowed.stderr
    still = passwd(tmp_path, "[auth]\nmin_password_length = 6\n", "qwe12")
    assert still.stderr == ("dtmf-gateway: error: a password needs at least 6 characters "
                            "(auth.min_password_length)\n")
    from gateway.app import create_app
    from gateway.config import from_mapping

    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        app = create_app(from_mapping({"auth": {"min_password_length": 6}}, base_dir=tmp_path))
    app.extensions["dtmf_gateway"].close(5)
    assert "auth.min_password_length is 6" in caplog.text


def test_ozeki_xe_clients_dialect_end_to_end(tmp_path: Path) -> None:
    """Commands at ``/`` with lower-case parameter names, as XE clients send them."""
    server = LiveServer(tmp_path, '[[line]]\nname = "line1"\ndriver = "simulated"\n'
                        'record_dir = "rec"\ntime_scale = 0.05\n')
    try:
        def xe(params: str) -> LiveAnswer:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            try:
                conn.request("GET", f"/?{params}&username=HTTP_User_1&password=qwe123")
                response = conn.getresponse()
                return LiveAnswer(response.status, response.read())
            finally:
                conn.close()

        call = xe("command=Call&dialed=1&apiextension=9000")
        assert call.code == 200, call
        call_id = call.text("CallId")
        assert xe(f"command=SendDTMF&callid={call_id}&keys=12&party=caller").code == 200
        assert xe(f"command=Speak&callid={call_id}&text=hi").code == 200
        listed = xe("command=ListActiveCalls")
        assert listed.root.findtext("ActiveCalls/Call/CallId") == call_id
        assert xe(f"command=Hold&callid={call_id}").code == 303
        assert xe(f"command=HangUp&callid={call_id}").code == 200
        assert query(server.port, {"command": "ListActiveCalls"}).root.find(
            "ActiveCalls/Call") is None
    finally:
        assert server.stop() == 0
