"""OzML UserInput, GoTo and DtmfEntered on a call, with the far end's keys
handed to the call layer as a line's hearing hands them (the lines' own
hearing of keys is tested with each driver and the simulated exchange)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask

from gateway import ozml
from gateway.calls import Gateway
from gateway.errors import OzmlError
from tests.conftest import Answer, call_api, wait_until
from tests.support import Receiver, decode_wav, needs_multimon


def far_end_presses(gateway: Gateway, keys: str, line: str = "line1") -> None:
    for key in keys:
        gateway._key_heard(gateway.lines[line], key, 80)


def spoken(gateway: Gateway, text: str, line: str = "line1") -> int:
    """How often the line has said ``text`` (the simulated line logs each Speak)."""
    return sum(1 for _, what in gateway.lines[line].driver.events
               if what.startswith("speak") and repr(text) in what)


class Run:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.gateway: Gateway = app.extensions["dtmf_gateway"]

    def call(self, doc: str, **params: str) -> str:
        answer = self.api(command="Call", Dialed="1", ResponseOzML=doc, **params)
        assert answer.code == 200, answer
        return answer.text("CallId")

    def api(self, **params: str) -> Answer:
        return call_api(self.app.test_client(), **params)

    def ended(self, call_id: str, timeout: float = 30) -> str:
        wait_until(lambda: any(c.call_id == call_id for c in self.gateway.recent), timeout)
        return next(c for c in self.gateway.recent if c.call_id == call_id).end_reason

    def heard(self, call_id: str) -> str:
        return decode_wav(self.gateway.lines["line1"].recorder.path(call_id))  # type: ignore[union-attr]


@pytest.fixture
def run(make_app: Callable[..., Flask]) -> Run:
    return Run(make_app())


MENU = """<Response>
  <UserInput Timeout="5" Repeat="true">
    <InitialCommands><Speak>Press one or two.</Speak></InitialCommands>
    <Inputs>
      <Input Key="1"><SendDTMF Keys="11" Party="all"/></Input>
      <Input Key="2"><SendDTMF Keys="22" Party="all"/></Input>
    </Inputs>
  </UserInput>
</Response>"""


@needs_multimon
def test_a_menu_runs_the_chosen_entry_and_the_call_ends_after_it(run: Run) -> None:
    call_id = run.call(MENU)
    wait_until(lambda: spoken(run.gateway, "Press one or two.") == 1)
    far_end_presses(run.gateway, "2")
    assert run.ended(call_id) == "CallConnected script ended"
    assert run.heard(call_id) == "22"


@needs_multimon
def test_a_wrong_key_plays_the_menu_again(run: Run) -> None:
    call_id = run.call(MENU)
    wait_until(lambda: spoken(run.gateway, "Press one or two.") == 1)
    far_end_presses(run.gateway, "9")
    wait_until(lambda: spoken(run.gateway, "Press one or two.") == 2)
    far_end_presses(run.gateway, "1")
    run.ended(call_id)
    assert run.heard(call_id) == "11"


def test_timeout_repeats_the_prompt_or_goes_on(run: Run) -> None:
    doc = """<Response><UserInput Timeout="0.5" Repeat="TRUE">
      <InitialCommands><Speak>Menu.</Speak></InitialCommands>
      <Inputs><Input Key="1"><Hangup/></Input></Inputs></UserInput></Response>"""
    call_id = run.call(doc)
    wait_until(lambda: spoken(run.gateway, "Menu.") >= 3, timeout=30)
    far_end_presses(run.gateway, "1")
    run.ended(call_id)
    once = """<Response><UserInput timeout="0.5">
      <InitialCommands><Speak>Once.</Speak></InitialCommands>
      <Inputs><Input key="1"><Hangup/></Input></Inputs></UserInput>
      <Speak>After the menu.</Speak></Response>"""
    second = run.call(once)
    run.ended(second)
    assert spoken(run.gateway, "Once.") == 1 and spoken(run.gateway, "After the menu.") == 1


def test_a_key_cuts_the_prompt_short(run: Run) -> None:
    # Barge-in: the caller need not sit through a 60 s prompt to choose.
    doc = """<Response><UserInput Timeout="30">
      <InitialCommands><Speak>Prompt.</Speak><Delay>60</Delay><Speak>Never said.</Speak>
      </InitialCommands>
      <Inputs><Input Key="5"><Speak>Chosen.</Speak></Input></Inputs></UserInput></Response>"""
    call_id = run.call(doc)
    # The prompt has begun (its keys flushed): a key from now on barges in.
    wait_until(lambda: spoken(run.gateway, "Prompt.") == 1)
    started = time.monotonic()
    far_end_presses(run.gateway, "5")
    run.ended(call_id)
    assert time.monotonic() - started < 10
    assert spoken(run.gateway, "Chosen.") == 1 and spoken(run.gateway, "Never said.") == 0


def test_nested_menus_and_the_back_key(run: Run) -> None:
    doc = """<Response><UserInput Timeout="10">
      <InitialCommands><Speak>Top.</Speak></InitialCommands>
      <Inputs>
        <Input Key="1"><UserInput Timeout="10" BackKey="*">
          <InitialCommands><Speak>Sub.</Speak></InitialCommands>
          <Inputs><Input Key="3"><Speak>Three.</Speak></Input></Inputs>
        </UserInput></Input>
        <Input Key="2"><Speak>Two.</Speak></Input>
      </Inputs></UserInput></Response>"""
    call_id = run.call(doc)
    wait_until(lambda: spoken(run.gateway, "Top.") == 1)
    far_end_presses(run.gateway, "1")
    wait_until(lambda: spoken(run.gateway, "Sub.") == 1)
    far_end_presses(run.gateway, "*")
    wait_until(lambda: spoken(run.gateway, "Top.") == 2)
    far_end_presses(run.gateway, "2")
    run.ended(call_id)
    assert spoken(run.gateway, "Two.") == 1 and spoken(run.gateway, "Three.") == 0


@needs_multimon
def test_collected_digits_go_to_the_url_and_its_answer_runs(run: Run,
                                                            receiver: Receiver) -> None:
    # As Ozeki's own PHP example answers: a blank line before the declaration.
    receiver.answers["/pin"] = ("\n<?xml version='1.0'?>"
                                "<Response><SendDTMF Keys='9' Party='all'/></Response>")
    doc = (f"<Response><UserInput enteredUrl='{receiver.url}/pin' digits='4' timeout='10' "
           "repeat='true'><InitialCommands><Speak>PIN please.</Speak></InitialCommands>"
           "</UserInput></Response>")
    call_id = run.call(doc)
    wait_until(lambda: spoken(run.gateway, "PIN please.") == 1)
    far_end_presses(run.gateway, "1234")
    (entered,) = receiver.wait_for("DtmfEntered")
    assert entered["DtmfDigits"] == "1234" and entered["CallId"] == call_id
    assert entered["Line"] == "line1" and entered["Dialed"] == "1"
    run.ended(call_id)
    assert run.heard(call_id) == "9"


def test_a_finish_key_and_a_timeout_end_the_entry_early(run: Run, receiver: Receiver) -> None:
    receiver.answers["/digits"] = "<Response/>"
    doc = (f"<Response><UserInput ForwardToUrl='{receiver.url}/digits' MaxDigits='8' "
           "MinDigits='2' FinishKey='#' Timeout='1'><InitialCommands><Speak>Go.</Speak>"
           "</InitialCommands></UserInput></Response>")
    first_call = run.call(doc)
    wait_until(lambda: spoken(run.gateway, "Go.") == 1)
    far_end_presses(run.gateway, "42#")
    run.ended(first_call)
    second = run.call(doc)
    wait_until(lambda: spoken(run.gateway, "Go.") == 2)
    far_end_presses(run.gateway, "777")  # then nothing: the timeout sends what came
    first, then = receiver.wait_for("DtmfEntered", count=2)
    assert (first["DtmfDigits"], then["DtmfDigits"]) == ("42", "777")
    assert then["CallId"] == second


@pytest.mark.parametrize("how", ["404", "hang", "garbage"])
def test_a_forward_url_that_fails_ends_the_call_on_hook(
        make_app: Callable[..., Flask], receiver: Receiver, how: str) -> None:
    run = Run(make_app(server={"notify_timeout_s": 1.0}))
    if how == "hang":
        receiver.delays["/pin"] = 5.0
        receiver.answers["/pin"] = "<Response/>"
    elif how == "garbage":
        receiver.answers["/pin"] = "<html>not OzML"
    doc = (f"<Response><UserInput enteredUrl='{receiver.url}/pin' digits='2'>"
           "<InitialCommands><Speak>Go.</Speak></InitialCommands></UserInput></Response>")
    call_id = run.call(doc, ErrorUrl=f"{receiver.url}/error")
    wait_until(lambda: spoken(run.gateway, "Go.") == 1)
    far_end_presses(run.gateway, "12")
    assert run.ended(call_id).startswith(("DtmfEntered failed", "bad OzML"))
    (error,) = receiver.wait_for("Error")
    assert error["CallId"] == call_id
    assert run.gateway.lines["line1"].driver.hook.value == "on-hook"


@needs_multimon
def test_goto_runs_the_fetched_document_in_place(run: Run, receiver: Receiver) -> None:
    receiver.answers["/menu"] = "<Response><SendDTMF Keys='5' Party='all'/></Response>"
    doc = (f"<Response><GoTo>{receiver.url}/menu</GoTo>"
           "<SendDTMF Keys='6' Party='all'/></Response>")
    call_id = run.call(doc)
    run.ended(call_id)
    (fetched,) = receiver.wait_for("GoTo")
    assert fetched["CallId"] == call_id
    assert run.heard(call_id) == "56"


def test_a_goto_loop_ends_the_call(run: Run, receiver: Receiver) -> None:
    receiver.answers["/loop"] = f"<Response><GoTo Url='{receiver.url}/loop'/></Response>"
    call_id = run.call(f"<Response><GoTo Url='{receiver.url}/loop'/></Response>")
    run.ended(call_id)
    assert len(receiver.wait_for("GoTo", count=16)) == 16


def test_http_clients_see_the_keys_and_get_each_one(run: Run, receiver: Receiver) -> None:
    answer = run.api(command="Call", Dialed="1", DtmfUrl=f"{receiver.url}/key")
    call_id = answer.text("CallId")
    far_end_presses(run.gateway, "1#")
    keys = receiver.wait_for("DtmfEntered", count=2)
    assert [k["DtmfDigits"] for k in keys] == ["1", "#"]
    assert all(k["CallId"] == call_id for k in keys)
    listed = run.api(command="ListActiveCalls")
    assert listed.root.findtext("ActiveCalls/Call/DtmfReceived") == "1#"


@pytest.mark.parametrize(("doc", "code", "detail"), [
    ("<Response><UserInput Digits='x'/></Response>", 302, "'x' is not a whole number"),
    ("<Response><UserInput Repeat='maybe'/></Response>", 302, "not true or false"),
    ("<Response><UserInput BackKey='**'/></Response>", 302, "not one DTMF key"),
    ("<Response><UserInput><Inputs><Input Key='x'/></Inputs></UserInput></Response>", 302,
     "'X' is not a key"),
    ("<Response><UserInput><Other/></UserInput></Response>", 302, "neither InitialCommands"),
    ("<Response><UserInput enteredUrl='ftp://x/'/></Response>", 302, "not an http"),
    ("<Response><GoTo>file:///etc/passwd</GoTo></Response>", 302, "not an http"),
    ("<Response><UserInput><Inputs><Input Key='1'><Bogus/></Input></Inputs></UserInput>"
     "</Response>", 301, "Bogus"),
])
def test_a_bad_document_is_refused_whole(doc: str, code: int, detail: str) -> None:
    with pytest.raises(OzmlError) as info:
        ozml.parse(doc)
    assert info.value.code == code and detail in str(info.value.detail)


def test_limits_count_nested_blocks() -> None:
    nested = "<Response>" + "<UserInput><Inputs><Input Key='1'>" * 9 + \
        "</Input></Inputs></UserInput>" * 9 + "</Response>"
    with pytest.raises(OzmlError, match="nested deeper"):
        ozml.parse(nested)
    many = ("<Response><UserInput><Inputs><Input Key='1'>" + "<Hangup/>" * 300
            + "</Input></Inputs></UserInput></Response>")
    with pytest.raises(OzmlError, match="more than 256 commands"):
        ozml.parse(many)
    menu = ozml.parse(MENU)
    # A menu's line time: its prompt, its wait for a key, its longest entry.
    assert ozml.line_seconds(menu) == pytest.approx(len("Press one or two.") / 10 + 5 + 0.4)
