"""OzML: parsing, and scripts run on calls with a notification receiver on loopback."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from gateway import ozml
from gateway.errors import OzmlError
from gateway.lines.base import Party
from gateway.lines.simulated import SimulatedLine
from gateway.tones import Timing
from tests.conftest import Answer, call_api, simulated_line, wait_until
from tests.support import Receiver, decode_wav, needs_multimon

SEED_OZML = (
    '<?xml version="1.0"?> <Response> <Speak Party="caller">You will get dtmf keys 123.</Speak>'
    ' <SendDTMF Party="caller" Keys="123"></SendDTMF> <Speak Party="callee">You will get dtmf'
    ' keys 321.</Speak> <SendDTMF Party="callee" Keys="321"></SendDTMF> </Response>'
)
STEREO = {"routing": {"channels": 2, "caller_channels": [0], "callee_channels": [1]}}


def test_seed_document_parses() -> None:
    commands = ozml.parse(SEED_OZML)
    assert [type(c).__name__ for c in commands] == ["Speak", "SendDTMF", "Speak", "SendDTMF"]
    assert commands[1] == ozml.SendDTMF(commands[1].plan, Party.CALLER)  # type: ignore[union-attr]
    assert isinstance(commands[3], ozml.SendDTMF) and commands[3].party is Party.CALLEE


def test_extensions_and_delay() -> None:
    doc = ('<Response><SendDTMF keys="1w2" party="ALL" Duration="60" Gap="70"/>'
           "<Delay>1.5</Delay><Hangup/></Response>")
    send, delay, hangup = ozml.parse(doc)
    assert isinstance(send, ozml.SendDTMF) and send.plan.timing == Timing(60, 70)
    assert delay == ozml.Delay(1.5) and hangup == ozml.Hangup()


@pytest.mark.parametrize(
    ("doc", "code", "detail"),
    [
        ("<Response><SendDTMF Keys='1'", 300, "unclosed token: line 1, column 10"),
        ("not xml", 300, "syntax error"),
        ("<Speak>x</Speak>", 300, "not <Response>"),
        ("<Response><SendEmail To='x@example.com'/></Response>", 301, "SendEmail"),
        ("<Response><SendDTMF Keys='1x' Party='caller'/></Response>", 302, "invalid key 'x'"),
        ("<Response><SendDTMF Keys='1' Party='boss'/></Response>", 302, "'boss' is not one of"),
        ("<Response><SendDTMF Keys='1' Duration='10'/></Response>", 302, "below the minimum 40"),
        ("<Response><Delay>forever</Delay></Response>", 302, "not a number"),
        ("<Response><Delay>-1</Delay></Response>", 302, "outside 0 to 600"),
        (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
            "<Response><Speak>&b;</Speak></Response>",
            300,
            "unsafe XML refused",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<Response><Speak>&x;</Speak></Response>",
            300,
            "unsafe XML refused",
        ),
    ],
)
def test_bad_documents(doc: str, code: int, detail: str) -> None:
    with pytest.raises(OzmlError) as info:
        ozml.parse(doc)
    assert info.value.code == code
    assert detail in info.value.detail


def test_response_ozml_errors_answer_the_call_command(api: Callable[..., Answer]) -> None:
    answer = api(command="Call", Dialed="1", ResponseOzML="<Response><SendDTMF")
    assert answer.code == 300
    assert answer.message.startswith("Error occured during parsing message: '")
    answer = api(command="Call", Dialed="1", ResponseOzML="<Response><SendSms/></Response>")
    assert (answer.code, answer.message) == (301, "Not implemented command: 'SendSms'")
    # Nothing was dialled for a refused script.
    assert api(command="ListActiveCalls").root.findall("ActiveCalls/Call") == []


@needs_multimon
def test_seed_ozml_from_url_reaches_each_party(make_app: Callable[..., Flask],
                                               receiver: Receiver) -> None:
    """The seed's example: caller and callee get different keys. With a
    two-output line the caller's channel must carry only the caller's keys."""
    app = make_app([simulated_line(**STEREO)])
    gateway = app.extensions["dtmf_gateway"]
    receiver.answers["/connected"] = SEED_OZML
    client = app.test_client()
    answer = call_api(client, command="Call", Dialed="5551234",
                      Url=f"{receiver.url}/connected", FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200
    call_id = answer.text("CallId")
    (connected,) = receiver.wait_for("CallConnected")
    assert connected["CallId"] == call_id and connected["Dialed"] == "5551234"
    assert connected["Line"] == "line1"
    (finished,) = receiver.wait_for("CallFinished")  # the script's end hangs up
    assert finished["CallId"] == call_id
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    assert driver.hook.value == "on-hook"
    path = gateway.lines["line1"].recorder.path(call_id)
    assert decode_wav(path, channel=0) == "123"
    assert decode_wav(path, channel=1) == "321"
    log = path.with_suffix(".log").read_text()
    assert "speak caller" in log and "speak callee" in log


@needs_multimon
def test_inline_response_ozml_with_delay_and_hangup(api: Callable[..., Answer],
                                                   gateway) -> None:  # type: ignore[no-untyped-def]
    doc = ("<Response><SendDTMF Keys='12' Party='all'/><Delay>0.2</Delay>"
           "<SendDTMF Keys='3' Party='all'/><Hangup/><SendDTMF Keys='9' Party='all'/></Response>")
    call_id = api(command="Call", Dialed="1", ResponseOzML=doc).text("CallId")
    wait_until(lambda: not api(command="ListActiveCalls").root.findall("ActiveCalls/Call"))
    assert decode_wav(gateway.lines["line1"].recorder.path(call_id)) == "123"


def test_url_that_fails_hangs_up_and_reports_to_error_url(api: Callable[..., Answer],
                                                         gateway, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    answer = api(command="Call", Dialed="1", Url=f"{receiver.url}/missing",
                 ErrorUrl=f"{receiver.url}/error")
    assert answer.code == 200
    (error,) = receiver.wait_for("Error")
    assert error["CallId"] == answer.text("CallId")
    assert "HTTP 404" in error["Message"]
    wait_until(lambda: gateway.lines["line1"].driver.hook.value == "on-hook")
    assert api(command="ListActiveCalls").root.findall("ActiveCalls/Call") == []


def test_url_answering_garbage_hangs_up(api: Callable[..., Answer], gateway,  # type: ignore[no-untyped-def]
                                        receiver: Receiver) -> None:
    receiver.answers["/garbage"] = "<html>oops"
    api(command="Call", Dialed="1", Url=f"{receiver.url}/garbage",
        ErrorUrl=f"{receiver.url}/error")
    (error,) = receiver.wait_for("Error")
    assert error["Code"] == "300"
    # Not what the URL answered (the parser's position in it): the class only.
    assert error["Message"] == ("Error occured during parsing message: 'the answer to "
                                "CallConnected is not OzML this gateway runs (its log says why)'")
    wait_until(lambda: not api(command="ListActiveCalls").root.findall("ActiveCalls/Call"))


def test_hanging_url_times_out_without_blocking_other_lines(make_app: Callable[..., Flask],
                                                            receiver: Receiver) -> None:
    app = make_app([simulated_line("a"), simulated_line("b")],
                   server={"notify_timeout_s": 1.0})
    client = app.test_client()
    receiver.delays["/slow"] = 3.0
    receiver.answers["/slow"] = "<Response/>"
    slow = call_api(client, command="Call", Dialed="1", Url=f"{receiver.url}/slow",
                    ErrorUrl=f"{receiver.url}/error")
    assert slow.code == 200
    # The other line works while line a waits for its URL (only /slow is held
    # back, longer than the timeout).
    receiver.wait_for("CallConnected")
    other = call_api(client, command="Call", Dialed="2")
    assert other.code == 200
    assert call_api(client, command="SendDTMF", CallId=other.text("CallId"), Keys="1",
                    Party="all").code == 200
    (error,) = receiver.wait_for("Error", timeout=30)
    assert error["CallId"] == slow.text("CallId") and "timed out" in error["Message"]


def test_speak_on_a_tone_only_line_reports_303(make_app: Callable[..., Flask],
                                               receiver: Receiver,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.lines.base import LineDriver

    app = make_app()
    driver = app.extensions["dtmf_gateway"].lines["line1"].driver
    # The base class's speak is what a tone-only driver (MT8880) inherits.
    monkeypatch.setattr(driver, "speak", LineDriver.speak.__get__(driver))
    doc = "<Response><Speak>hello</Speak><SendDTMF Keys='1' Party='all'/></Response>"
    call_api(app.test_client(), command="Call", Dialed="1", ResponseOzML=doc,
             ErrorUrl=f"{receiver.url}/error")
    (error,) = receiver.wait_for("Error")
    assert error["Code"] == "303"
    assert error["Message"].startswith("Command 'Speak' cannot be used here")


@needs_multimon
def test_incoming_call_posts_incomingcall_and_runs_its_ozml(make_app: Callable[..., Flask],
                                                            receiver: Receiver) -> None:
    app = make_app(server={"incoming_url": f"{receiver.url}/incoming"})
    receiver.answers["/incoming"] = "<Response><SendDTMF Keys='4#' Party='caller'/></Response>"
    gateway = app.extensions["dtmf_gateway"]
    driver = gateway.lines["line1"].driver
    driver.ring("5550100")
    (incoming,) = receiver.wait_for("IncomingCall")
    assert incoming["Caller"] == "5550100" and incoming["Line"] == "line1"
    call_id = incoming["CallId"]
    wait_until(lambda: not gateway.active_calls())
    assert driver.hook.value == "on-hook"
    recorder = gateway.lines["line1"].recorder
    assert decode_wav(recorder.path(call_id)) == "4#"
    # The recording begins once the line has answered.
    assert "off-hook" in [what for _, what in driver.events]
    logged = [ln.split(" ", 1)[1] for ln in recorder.log_path(call_id).read_text().splitlines()]
    assert logged[0] == f"call {call_id} begins" and "off-hook" not in logged


def test_unanswered_ring_is_one_call_that_ends_when_ringing_stops(
    make_app: Callable[..., Flask]
) -> None:
    app = make_app([simulated_line(call_timing={"ring_timeout_ms": 500})])
    gw = app.extensions["dtmf_gateway"]
    driver = gw.lines["line1"].driver
    for _ in range(3):  # three rings of one cadence
        driver.ring()
    assert len(gw.active_calls()) == 1
    wait_until(lambda: not gw.active_calls(), timeout=5)
    assert gw.recent[-1].end_reason == "caller gave up"


def test_credentials_in_a_notification_url_are_sent_as_basic_auth(
    api: Callable[..., Answer], receiver: Receiver
) -> None:
    import base64

    receiver.answers["/hook"] = "<Response><Hangup/></Response>"
    url = receiver.url.replace("http://", "http://integrator:s%40cret@") + "/hook"
    assert api(command="Call", Dialed="1", Url=url).code == 200
    receiver.wait_for("CallConnected")
    assert receiver.authorization[0] == "Basic " + base64.b64encode(b"integrator:s@cret").decode()


def test_notification_errors_never_show_url_passwords(
    api: Callable[..., Answer], receiver: Receiver
) -> None:
    url = receiver.url.replace("http://", "http://integrator:topsecret@") + "/missing"
    api(command="Call", Dialed="1", Url=url, ErrorUrl=f"{receiver.url}/error")
    (error,) = receiver.wait_for("Error")
    assert "HTTP 404" in error["Message"] and "topsecret" not in error["Message"]
