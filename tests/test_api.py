"""The Ozeki-compatible API through Flask's test client, on simulated lines."""

from __future__ import annotations

import base64
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from gateway.api.responses import HEAD
from gateway.calls import Gateway
from gateway.lines.simulated import SimulatedLine
from tests.conftest import PASSWORD, USER, Answer, call_api, simulated_line, wait_until
from tests.support import decode_wav, needs_multimon, seed_example

Api = Callable[..., Answer]


def place(api: Api, dialed: str = "5551234", **params: str) -> str:
    answer = api(command="Call", Dialed=dialed, **params)
    assert answer.code == 200, answer
    return answer.text("CallId")


def recording(gateway: Gateway, call_id: str, line: str = "line1") -> Path:
    recorder = gateway.lines[line].recorder
    assert recorder is not None
    return recorder.path(call_id)


# -- the answer's shape --------------------------------------------------------


def test_answer_is_the_seed_shape_byte_for_byte(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api", query_string={
        "command": "ListActiveCalls", "Username": USER, "Password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert response.data.decode() == (
        '<?xml version="1.0"?>\n'
        '<Response xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
        "  <Code>200</Code>\n"
        "  <Message>Command successfully executed</Message>\n"
        "  <ActiveCalls>\n"
        "  </ActiveCalls>\n"
        "</Response>\n"
    )


def test_the_fast_path_answers_as_flask_does(make_app: Callable[..., Flask]) -> None:
    """/api is answered in front of Flask (issue 17); every answer must be what
    Flask's own route gives, to the byte and header, and what is not /api
    must still reach Flask. Two gateways, the same requests in the same order."""
    from werkzeug.test import Client

    from gateway.api.views import ApiFastPath

    fast_app = make_app(server={"max_request_bytes": 2048})
    flask_app = make_app(server={"max_request_bytes": 2048})
    assert isinstance(fast_app.wsgi_app, ApiFastPath)
    fast = Client(fast_app.wsgi_app)
    slow = Client(flask_app.wsgi_app.wsgi_app)  # type: ignore[attr-defined]
    auth = {"Username": USER, "Password": PASSWORD}
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    calls: dict[int, str] = {}

    def same(method: str, path: str = "/api", **kwargs: Any) -> bytes:
        got = [client.open(path, method=method, environ_base={"REMOTE_ADDR": "127.0.0.1"},
                           **kwargs) for client in (fast, slow)]
        bodies = [r.data for r in got]
        for i, body in enumerate(bodies):  # each gateway numbers and times its own calls
            found = re.search(rb"<CallId>(\w+)</CallId>", body)
            if found:
                calls[i] = found.group(1).decode()
            if i in calls:
                body = body.replace(calls[i].encode(), b"CALL")
            bodies[i] = re.sub(rb"(<(?:StartTime|RingDuration|TalkDuration)>)[^<]*", rb"\1-",
                               body)
            # /healthz: the two gateways started a moment apart.
            bodies[i] = re.sub(rb'("uptime_s": )[0-9.]+', rb"\1-", bodies[i])
        heads = [(r.status, list(r.headers.items())) for r in got]
        assert heads[0] == heads[1], (method, path, kwargs)
        assert bodies[0] == bodies[1], (method, path, kwargs)
        return bodies[0]

    same("GET", query_string={"command": "ListActiveCalls", **auth})
    same("HEAD", query_string={"command": "ListActiveCalls", **auth})
    same("POST", data={"command": "ListActiveCalls", **auth})
    same("GET", query_string={"command": "listactivecalls"}, headers={"Authorization": basic})
    same("GET", query_string={"command": "ListActiveCalls"})
    same("GET", query_string={"command": "ListActiveCalls", "Username": USER,
                              "Password": "wrong"})
    same("GET", query_string={"command": "SendDTMF", "Username": "listener",
                              "Password": "listen-only"})
    same("GET", query_string={"command": "Nonsense\r\ncode=200", **auth})
    same("GET", query_string="command=SendDTMF&Keys=1&Keys=2&callid=%ff&"
         + urllib.parse.urlencode(auth))
    same("GET", query_string={"command": "HangUp", "CallId": "nosuch", **auth})
    same("POST", data={"command": "ListActiveCalls", "pad": "x" * 4096, **auth})
    same("POST", data=b"\xff\xfe", content_type="application/x-www-form-urlencoded")
    assert b"<CallId>" in same("GET", query_string={"command": "Call", "Dialed": "1", **auth})
    for i in (0, 1):
        client = (fast, slow)[i]
        sent = client.get("/api", query_string={"command": "SendDTMF", "CallId": calls[i],
                                                "Keys": "1", "Party": "all", **auth},
                          environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert b"<Code>200</Code>" in sent.data
    assert b"CALL" in same("GET", query_string={"command": "ListActiveCalls", **auth})
    same("GET", query_string={"command": "HangUp", "CallId": "x", **auth})
    # Not /api, or not a method of it: Flask's own answers.
    same("PUT", query_string={"command": "ListActiveCalls", **auth})
    same("OPTIONS")
    same("GET", "/api/", query_string={"command": "ListActiveCalls", **auth})
    same("GET", "/", query_string={"command": "ListActiveCalls", **auth})
    same("GET", "/healthz")


def test_seed_file_shape_matches_ours() -> None:
    """The seed's example answer, whitespace folded, is what we render."""
    from gateway.api.responses import render
    from gateway.codes import Code

    _, example = seed_example()
    assert example.startswith('<?xml version="1.0"?> <Response xmlns:xsi')
    assert " ".join(render(Code.OK).split()) == " ".join(example.split())
    assert render(Code.OK).startswith(HEAD)


# -- authentication and access -------------------------------------------------


def test_no_credentials_304(api: Api) -> None:
    answer = api(auth=False, command="ListActiveCalls")
    assert (answer.code, answer.message) == (304, "Authentication required")


@pytest.mark.parametrize(("user", "password"), [(USER, "wrong"), ("nobody", PASSWORD)])
def test_wrong_credentials_305(client, user: str, password: str) -> None:  # type: ignore[no-untyped-def]
    answer = call_api(client, auth=False, command="ListActiveCalls", Username=user,
                      Password=password)
    assert (answer.code, answer.message) == (305, "Authentication failed, bad username or password")


def test_basic_auth_is_accepted(client) -> None:  # type: ignore[no-untyped-def]
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    response = client.get("/api?command=ListActiveCalls",
                          headers={"Authorization": f"Basic {token}"})
    assert Answer(response.data).code == 200
    bad = base64.b64encode(f"{USER}:nope".encode()).decode()
    response = client.get("/api?command=ListActiveCalls", headers={"Authorization": f"Basic {bad}"})
    assert Answer(response.data).code == 305


def test_user_without_the_command_306(api: Api) -> None:
    assert api(auth=False, command="ListActiveCalls", Username="listener",
               Password="listen-only").code == 200
    answer = api(auth=False, command="SendDTMF", Keys="1", Party="all", Username="listener",
                 Password="listen-only")
    assert (answer.code, answer.message) == (306, "User is not allowed to use API in ACL")


@pytest.mark.parametrize(
    ("server", "address", "code"),
    [
        ({"allow": ["10.0.0.0/8"]}, "127.0.0.1", 307),
        ({"allow": ["10.0.0.0/8"]}, "10.1.2.3", 200),
        ({"deny": ["10.1.0.0/16"]}, "10.1.2.3", 307),
        ({"deny": ["10.1.0.0/16"]}, "10.2.2.3", 200),
        ({"allow": ["::1/128"]}, "::1", 200),
    ],
)
def test_address_lists_307(make_app: Callable[..., Flask], server: dict[str, list[str]],
                           address: str, code: int) -> None:
    client = make_app(server=server).test_client()
    response = client.get("/api", query_string={
        "command": "ListActiveCalls", "Username": USER, "Password": PASSWORD},
        environ_base={"REMOTE_ADDR": address})
    answer = Answer(response.data)
    assert answer.code == code
    if code == 307:
        assert answer.message == "Use API from this address is forbidden"


def test_repeated_failures_lock_the_address_out(make_app: Callable[..., Flask]) -> None:
    client = make_app(auth={"lockout_failures": 3, "lockout_seconds": 60}).test_client()

    def attempt(password: str, address: str = "10.9.9.9") -> int:
        response = client.get("/api", query_string={
            "command": "ListActiveCalls", "Username": USER, "Password": password},
            environ_base={"REMOTE_ADDR": address})
        return Answer(response.data).code

    assert [attempt("guess1"), attempt("guess2"), attempt("guess3")] == [305, 305, 305]
    # Locked: even the right password is refused from that address...
    assert attempt(PASSWORD) == 307
    # ...but not from another one.
    assert attempt(PASSWORD, "10.9.9.10") == 200


def test_lockout_ends_after_its_time(make_app: Callable[..., Flask]) -> None:
    client = make_app(auth={"lockout_failures": 2, "lockout_seconds": 0.5}).test_client()

    def attempt(password: str) -> int:
        return call_api(client, auth=False, command="ListActiveCalls", Username=USER,
                        Password=password).code

    assert [attempt("a"), attempt("b"), attempt(PASSWORD)] == [305, 305, 307]
    wait_until(lambda: attempt(PASSWORD) == 200, timeout=3)


def test_passwords_never_reach_the_log(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api(command="ListActiveCalls")
    api(auth=False, command="ListActiveCalls", Username=USER, Password="sEcReT-wrong")
    api(command="SendDTMF", Keys="1", Party="all")
    assert caplog.records, "the API logs one line per command"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert PASSWORD not in text and "sEcReT-wrong" not in text
    assert "command=ListActiveCalls" in text and f"user={USER}" in text


# -- commands --------------------------------------------------------------------


def test_unknown_command_301(api: Api) -> None:
    answer = api(command="Teleport")
    assert (answer.code, answer.message) == (301, "Not implemented command: 'Teleport'")


def test_missing_command_301(api: Api) -> None:
    assert api().code == 301


@needs_multimon
def test_call_then_senddtmf_then_hangup(api: Api, gateway: Gateway) -> None:
    call_id = place(api)
    assert 5 <= len(call_id) <= 8 and call_id.isalnum()
    driver = gateway.lines["line1"].driver
    assert driver.hook.value == "off-hook"
    answer = api(command="SendDTMF", CallId=call_id, Party="caller", Keys="01234")
    assert (answer.code, answer.message) == (200, "Command successfully executed")
    assert api(command="HangUp", CallId=call_id).code == 200
    assert driver.hook.value == "on-hook"
    assert decode_wav(recording(gateway, call_id)) == "01234"
    answer = api(command="SendDTMF", CallId=call_id, Party="caller", Keys="1")
    assert (answer.code, answer.message) == (601, f"Call not found with ID '{call_id}'")


@needs_multimon
def test_get_and_post_are_the_same_and_names_ignore_case(api: Api, gateway: Gateway) -> None:
    call_id = place(api, "123", method="POST")
    assert api("POST", command="senddtmf", callid=call_id, PARTY="CALLEE", keys="45").code == 200
    assert api("GET", COMMAND="SendDtmf", CallID=call_id, party="All", Keys="6").code == 200
    assert api(command="hangup", CALLID=call_id).code == 200
    assert decode_wav(recording(gateway, call_id)) == "456"


@needs_multimon
def test_callid_may_be_omitted_with_exactly_one_call(api: Api, gateway: Gateway) -> None:
    answer = api(command="SendDTMF", Keys="1", Party="all")
    assert answer.code == 302 and "'CallId'" in answer.message
    call_id = place(api)
    assert api(command="SendDTMF", Keys="9", Party="all").code == 200
    assert api(command="HangUp").code == 200
    assert decode_wav(recording(gateway, call_id)) == "9"


@pytest.mark.parametrize(
    ("params", "parameter", "detail"),
    [
        ({"Party": "caller"}, "Keys", ""),
        ({"Keys": "", "Party": "caller"}, "Keys", ""),
        ({"Keys": "12x", "Party": "caller"}, "Keys", "invalid key 'x' at position 3"),
        ({"Keys": "1" * 129, "Party": "caller"}, "Keys", "more than the maximum 128"),
        ({"Keys": "1"}, "Party", ""),
        ({"Keys": "1", "Party": "everyone"}, "Party", "'everyone' is not one of caller"),
        ({"Keys": "1", "Party": "all", "Duration": "39"}, "Duration", "39 ms is outside 40"),
        ({"Keys": "1", "Party": "all", "Duration": "fast"}, "Duration", "not a whole number"),
        ({"Keys": "1", "Party": "all", "Gap": "5001"}, "Gap", "outside 50 to 5000 ms"),
    ],
)
def test_senddtmf_bad_parameters_302(api: Api, params: dict[str, str], parameter: str,
                                     detail: str) -> None:
    call_id = place(api)
    answer = api(command="SendDTMF", CallId=call_id, **params)
    assert answer.code == 302
    assert answer.message.startswith(
        f"Missing or invalid parameter '{parameter}' for command 'SendDTMF'")
    assert detail in answer.message


def test_repeated_parameter_with_different_values_302(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/api?command=SendDTMF&Keys=1&Keys=2&Party=all&Username={USER}"
                          f"&Password={PASSWORD}")
    answer = Answer(response.data)
    assert answer.code == 302 and "'Keys'" in answer.message and "more than once" in answer.message


def test_unknown_call_601(api: Api) -> None:
    answer = api(command="SendDTMF", CallId="nope1", Keys="1", Party="all")
    assert (answer.code, answer.message) == (601, "Call not found with ID 'nope1'")
    assert api(command="HangUp", CallId="nope1").code == 601


def test_call_parameters_302(api: Api) -> None:
    assert "'Dialed'" in api(command="Call").message
    answer = api(command="Call", Dialed="+3612345")
    assert answer.code == 302 and "invalid key '+' at position 1" in answer.message
    answer = api(command="Call", Dialed="123", Url="file:///etc/passwd")
    assert answer.code == 302 and "'Url'" in answer.message
    assert api(command="Call", Dialed="123", RingTime="soon").code == 302


def test_no_free_line_402(api: Api) -> None:
    place(api)
    answer = api(command="Call", Dialed="777")
    assert (answer.code, answer.message) == (
        402, "Call connect to '777' failed with result state 'NoFreeLine'")


def test_an_ended_call_frees_its_line_only_once_on_hook(
        api: Api, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between a call's end and its line going on hook (slow on a modem), no
    Call is let onto the line (its off hook would be dropped by the on hook
    still to come) and the call is not yet among the ended ones."""
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    call_id = place(api)
    putting_down, release = threading.Event(), threading.Event()
    real_on_hook = driver.on_hook

    def slow_on_hook() -> None:
        putting_down.set()
        release.wait(30)
        real_on_hook()

    monkeypatch.setattr(driver, "on_hook", slow_on_hook)
    hang_up = threading.Thread(target=lambda: api(command="HangUp", CallId=call_id))
    hang_up.start()
    try:
        assert putting_down.wait(10)
        assert gateway.recent == [] and gateway.active_calls() == []
        answer = api(command="Call", Dialed="777")
        assert (answer.code, answer.message) == (
            402, "Call connect to '777' failed with result state 'NoFreeLine'")
        assert driver.hook.value == "off-hook"
    finally:
        release.set()
        hang_up.join(10)
    assert [c.call_id for c in gateway.recent] == [call_id]
    assert driver.hook.value == "on-hook"
    place(api)


def test_two_lines_take_two_calls(make_app: Callable[..., Flask]) -> None:
    client = make_app([simulated_line("a"), simulated_line("b")]).test_client()
    first = call_api(client, command="Call", Dialed="1")
    second = call_api(client, command="Call", Dialed="2")
    assert first.code == second.code == 200
    listed = call_api(client, command="ListActiveCalls")
    sources = sorted(c.findtext("Source") or "" for c in listed.root.iter("Call"))
    assert sources == ["a", "b"]


def test_list_active_calls_has_every_field(api: Api) -> None:
    call_id = place(api, "5551234")
    answer = api(command="ListActiveCalls")
    calls = answer.root.findall("ActiveCalls/Call")
    assert len(calls) == 1
    fields = {child.tag: child.text for child in calls[0]}
    # Ozeki's fields in Ozeki's order, then ours: the keys the far end pressed.
    assert list(fields) == ["CallId", "Source", "CallerId", "Destination", "CallerDialed",
                            "CalleeDialed", "StartTime", "RingDuration", "TalkDuration",
                            "CallState", "DtmfReceived"]
    assert fields["CallId"] == call_id
    assert fields["Destination"] == fields["CallerDialed"] == "5551234"
    assert fields["CallState"] == "InCall"
    assert float(fields["RingDuration"] or 0) > 0
    assert len(fields["StartTime"] or "") == len("2019-04-09 10:34:07")


def test_line_fault_801_puts_line_on_hook_and_next_call_works(api: Api, gateway: Gateway) -> None:
    call_id = place(api)
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    driver.fail_after_digits = 2
    answer = api(command="SendDTMF", CallId=call_id, Keys="12345", Party="all")
    assert answer.code == 801
    assert answer.message == "Line 'line1' fault: simulated hardware fault"
    assert driver.hook.value == "on-hook"
    assert api(command="ListActiveCalls").root.findall("ActiveCalls/Call") == []
    new_call = place(api)
    assert api(command="SendDTMF", CallId=new_call, Keys="1", Party="all").code == 200


def test_unexpected_error_is_800_and_well_formed(api: Api, gateway: Gateway,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    call_id = place(api)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.lines["line1"].driver, "emit", broken)
    answer = api(command="SendDTMF", CallId=call_id, Keys="1", Party="all")
    assert (answer.code, answer.message) == (800, "Internal error, see the gateway's log")
    assert b"Traceback" not in answer.body and b"a bug" not in answer.body
    assert any("a bug" in (r.exc_text or "") for r in caplog.records)
    # A bug in a driver must not leave the line seized.
    assert gateway.lines["line1"].driver.hook.value == "on-hook"
    assert api(command="ListActiveCalls").root.findall("ActiveCalls/Call") == []


def test_full_queue_802_and_nothing_lost(make_app: Callable[..., Flask]) -> None:
    app = make_app([simulated_line(queue_size=2)])
    gateway = app.extensions["dtmf_gateway"]
    call_id = call_api(app.test_client(), command="Call", Dialed="1").text("CallId")
    # Hold the line with a job of our own, so the queue's state does not
    # depend on how fast this machine runs the requests.
    # It must be running, not queued, before the sends: a job still queued
    # takes one of the two places, and four would be refused.
    release, running = threading.Event(), threading.Event()

    def hold() -> bool:
        running.set()
        return release.wait(30)

    holding = gateway.lines["line1"].worker.submit(hold)
    assert running.wait(10)
    results: list[int] = []

    def send() -> None:
        results.append(call_api(app.test_client(), command="SendDTMF", CallId=call_id,
                                Keys="1", Party="all").code)

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    # Two wait in the queue; the other three are refused at once, while the
    # line is still held.
    wait_until(lambda: len(results) == 3)
    assert results == [802, 802, 802]
    assert gateway.lines["line1"].worker.depth == 2
    release.set()
    for t in threads:
        t.join()
    assert holding.result(5) is True
    assert sorted(results) == [200, 200, 802, 802, 802]


def test_ringing_call_refuses_senddtmf_303(api: Api, gateway: Gateway) -> None:
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    driver.ring("5550000")
    calls = api(command="ListActiveCalls").root.findall("ActiveCalls/Call")
    assert [c.findtext("CallState") for c in calls] == ["Ringing"]
    assert calls[0].findtext("Source") == "5550000"
    call_id = calls[0].findtext("CallId") or ""
    answer = api(command="SendDTMF", CallId=call_id, Keys="1", Party="all")
    assert answer.code == 303
    assert answer.message.startswith("Command 'SendDTMF' cannot be used here")
    assert api(command="HangUp", CallId=call_id).code == 200


def test_oversized_request_is_refused(make_app: Callable[..., Flask]) -> None:
    client = make_app(server={"max_request_bytes": 1024}).test_client()
    response = client.post("/api", data={"command": "SendDTMF", "Keys": "1" * 5000,
                                         "Username": USER, "Password": PASSWORD})
    answer = Answer(response.data)
    assert answer.code == 300 and "larger than 1024 bytes" in answer.message


def test_control_characters_and_bad_utf8_get_codes(client) -> None:  # type: ignore[no-untyped-def]
    auth = f"Username={USER}&Password={PASSWORD}"
    for query in ("command=SendDTMF&Keys=%FF%FE&Party=all",
                  "command=HangUp&CallId=%00%1B%5B31m",
                  "command=%00%FF"):
        response = client.get(f"/api?{query}&{auth}")
        answer = Answer(response.data)  # parses: well-formed XML
        assert answer.code in (301, 302, 601), (query, answer)


def test_client_text_cannot_forge_log_lines(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.api")
    api(command="HangUp", CallId="x\napi user=admin code=200 forged")
    api(command="Evil\r\ncommand=SendDTMF")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.api"]
    assert len(lines) == 2
    assert all("\n" not in line and "\r" not in line for line in lines)
    assert "call=x\\napi\\x20user\\x3dadmin" in lines[0]
    assert lines[0].count(" code=") == 1 and lines[1].count(" command=") == 1
