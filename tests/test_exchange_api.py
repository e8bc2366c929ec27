"""Calls that follow the line, end to end through the API, on a simulated
line whose far end is an exchange configured in the config alone: each
result with its code or notification, the far end's keys and hang-up, the
line on hook after; and the real server with the scenario in its file.

Lines run at time_scale 0.05 (a line second in 50 ms of wall clock). What
the gateway decides is decided on the line's own timeline, which stands
still while the gateway works, so a loaded machine only slows them down.
The far party's keys come 4 s of line time or more after the call is
connected (an outbound call is connected 2 s after a far party answers
with speech, the set-up's confirm_s, and 5 s after a silent one, when the
ringback's next ring is overdue): what follows the connect runs at the
line's pace, here 200 ms of wall clock for the call layer to take the call
first.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.detect import Dtmf, Listener
from gateway.errors import LineFault
from gateway.lines.base import HookState
from gateway.lines.simulated import SimulatedLine
from gateway.tones import read_wav
from tests.conftest import Answer, call_api, simulated_line, wait_until
from tests.live import LiveServer
from tests.sox_signals import needs_sox
from tests.support import Receiver, decode_wav, needs_multimon

Api = Callable[..., Answer]

NUMBERS: dict[str, Any] = {
    "100": {"rings": 2, "press": [{"at_s": 6.0, "keys": "1#"}], "hang_up_s": 10.0},
    "200": {"result": "busy"},
    "300": {"result": "no-answer"},
    "400": {"result": "sit"},
    "500": {"result": "congestion"},
    "600": {"rings": 1, "answer": "silence"},
}


def exchange_line(time_scale: float = 0.05, numbers: dict[str, Any] | None = None,
                  **exchange: Any) -> dict[str, Any]:
    return simulated_line(time_scale=time_scale,
                          exchange={"numbers": numbers or NUMBERS, **exchange})


class Line:
    """A gateway on one simulated line with an exchange, and its API."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()
        self.gateway: Gateway = app.extensions["dtmf_gateway"]
        driver = self.gateway.lines["line1"].driver
        assert isinstance(driver, SimulatedLine) and driver.exchange is not None
        self.driver = driver

    def api(self, **params: str) -> Answer:
        return call_api(self.client, **params)

    def call(self, dialed: str, **params: str) -> Answer:
        return self.api(command="Call", Dialed=dialed, **params)

    def send(self, call_id: str, keys: str) -> Answer:
        return self.api(command="SendDTMF", CallId=call_id, Keys=keys, Party="all")

    def states(self) -> list[str]:
        return [c.state.value for c in self.gateway.active_calls()]

    def on_hook_and_idle(self) -> bool:
        return self.driver.hook is HookState.ON_HOOK and not self.gateway.active_calls()


@pytest.fixture
def line(make_app: Callable[..., Flask]) -> Callable[..., Line]:
    def make(*lines: dict[str, Any], **sections: Any) -> Line:
        return Line(make_app(list(lines) or [exchange_line()], **sections))

    return make


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_answered_after_two_rings_rings_first_and_connects_then(
        line: Callable[..., Line], receiver: Receiver) -> None:
    ln = line()
    receiver.answers["/connected"] = "<Response><Delay>30</Delay></Response>"
    answers: list[Answer] = []
    placing = threading.Thread(target=lambda: answers.append(
        ln.call("100", Url=f"{receiver.url}/connected")))
    placing.start()
    seen: list[str] = []

    def ringing() -> bool:
        seen.extend(ln.states())
        return "Ringing" in seen or not placing.is_alive()

    wait_until(ringing)
    placing.join(30)
    (answer,) = answers
    assert answer.code == 200, answer
    assert "Ringing" in seen and "InCall" not in seen
    (connected,) = receiver.wait_for("CallConnected")
    assert connected["CallId"] == answer.text("CallId") and connected["ConnectTime"]
    assert ln.states() == ["InCall"]
    far = [e.describe() for e in ln.driver.exchange.timeline]  # type: ignore[union-attr]
    assert far[:6] == ["dial-tone", "dial-tone-end", "number 100", "ring 1", "ring 2",
                       "answer speech"]
    assert ln.gateway.lines["line1"].snapshot().report()["exchange"] == "us"  # /healthz


@pytest.mark.parametrize(("dialed", "state", "ring_time"), [
    ("200", "Busy", None), ("500", "Congestion", None),
    ("400", "SpecialInformationTone", None), ("300", "NoAnswer", "15"),
])
def test_a_call_that_does_not_connect_is_402_with_its_state_and_the_line_on_hook(
        line: Callable[..., Line], dialed: str, state: str, ring_time: str | None) -> None:
    ln = line()
    answer = ln.call(dialed, **({"RingTime": ring_time} if ring_time else {}))
    assert (answer.code, answer.message) == (
        402, f"Call connect to '{dialed}' failed with result state '{state}'")
    assert ln.on_hook_and_idle()
    (ended,) = ln.gateway.recent
    assert ended.end_reason == f"call failed: {state}"
    if ring_time:
        # Rang for its RingTime of line time: us rings every 6 s, from 0.5 s
        # after the last digit; the fourth would ring after 18.5 s.
        rings = [e for e in ln.driver.exchange.timeline  # type: ignore[union-attr]
                 if e.kind.value == "ring"]
        assert len(rings) == 3


def test_no_dial_tone_is_402_nodialtone_unless_the_line_gives_none(
        line: Callable[..., Line]) -> None:
    ln = line(exchange_line(dial_tone=False))
    answer = ln.call("600")
    assert (answer.code, answer.message) == (
        402, "Call connect to '600' failed with result state 'NoDialTone'")
    assert ln.on_hook_and_idle()
    assert not ln.driver.exchange.timeline  # type: ignore[union-attr]  # never dialled
    pbx = line({**exchange_line(dial_tone=False), "name": "line1",
                "call_timing": {"expect_dial_tone": False}})
    assert pbx.call("600").code == 200


@pytest.mark.parametrize(("party", "reason"), [
    ({}, "congestion tone"),
    ({"hang_up_tone": "dial"}, "dial tone"),
    ({"hang_up_tone": "busy"}, "busy tone"),
    ({"hang_up_tone": "silence", "loop_break_ms": 600}, "loop current broke for 600 ms"),
    ({"loop_break_ms": 100}, "congestion tone"),  # shorter than a disconnect: a click
])
def test_the_far_end_hanging_up_ends_the_call(
        line: Callable[..., Line], receiver: Receiver, party: dict[str, Any],
        reason: str) -> None:
    ln = line(exchange_line(numbers={"7": {"rings": 1, "hang_up_s": 5.0, **party}}))
    answer = ln.call("7", FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200
    (finished,) = receiver.wait_for("CallFinished")
    assert finished["CallId"] == answer.text("CallId")
    assert finished["Reason"] == f"the far end hung up ({reason})"
    wait_until(ln.on_hook_and_idle)


def test_the_far_partys_keys_are_heard_and_the_gateways_own_never(
        line: Callable[..., Line]) -> None:
    ln = line(exchange_line(numbers={"8": {"rings": 1, "answer": "silence", "press": [
        {"at_s": 9.0, "keys": "9"}, {"at_s": 11.0, "keys": "*0"}]}}))
    answer = ln.call("8")
    assert answer.code == 200
    call = ln.gateway.find(answer.text("CallId"))
    # Our own keys, heard back 20 dB down, before and among the far party's.
    assert ln.send(call.call_id, "9*0#").code == 200
    wait_until(lambda: len(call.keys.all) >= 3)
    assert ln.send(call.call_id, "123").code == 200
    assert call.keys.all == ["9", "*", "0"]
    recording = ln.gateway.lines["line1"].recorder
    assert recording is not None
    assert ln.api(command="HangUp", CallId=call.call_id).code == 200
    # The echo was on the line: a listener told nothing of the gateway's
    # keys hears them in the far end's channel of the recording.
    samples, rate = read_wav(recording.path(call.call_id))
    listener = Listener("us", rate)
    heard = [e.key for e in listener.feed(samples[:, 1]) + listener.flush()
             if isinstance(e, Dtmf)]
    assert sorted(heard) == sorted("9*0#" + "9*0" + "123")


@needs_multimon
def test_the_recording_holds_both_directions(line: Callable[..., Line]) -> None:
    ln = line(exchange_line(numbers={"8": {"rings": 1, "answer": "silence", "press": [
        {"at_s": 9.0, "keys": "456"}]}}))
    answer = ln.call("8")
    call = ln.gateway.find(answer.text("CallId"))
    assert ln.send(call.call_id, "12").code == 200
    assert ln.send(call.call_id, "3").code == 200
    wait_until(lambda: len(call.keys.all) == 3)
    assert ln.api(command="HangUp", CallId=call.call_id).code == 200
    path = ln.gateway.lines["line1"].recorder.path(call.call_id)  # type: ignore[union-attr]
    samples, rate = read_wav(path)
    assert samples.shape[1] == 2 and rate == 8000
    assert decode_wav(path, channel=0) == "123"
    # The far end's channel: its keys, and the echo of ours (20 dB down).
    assert decode_wav(path, channel=1).replace("1", "").replace("2", "").replace(
        "3", "") == "456"


MENU = """<Response>
  <UserInput Timeout="30">
    <InitialCommands>
      <SendDTMF Keys="1234567890" Party="all" Duration="500" Gap="500"/>
    </InitialCommands>
    <Inputs>
      <Input Key="1"><SendDTMF Keys="11" Party="all"/></Input>
      <Input Key="2"><SendDTMF Keys="22" Party="all"/></Input>
    </Inputs>
  </UserInput>
</Response>"""


@needs_multimon
def test_a_menu_chosen_by_the_far_partys_key_over_its_prompt(line: Callable[..., Line]) -> None:
    """OzML UserInput on keys the line itself hears: the far party presses 2
    3.5 s into a 10 s prompt, which stops there (barge-in), and entry 2 runs."""
    ln = line(exchange_line(numbers={"8": {"rings": 1, "answer": "silence", "press": [
        {"at_s": 8.5, "keys": "2"}]}}))
    answer = ln.call("8", ResponseOzML=MENU)
    assert answer.code == 200, answer
    call_id = answer.text("CallId")
    wait_until(lambda: any(c.call_id == call_id for c in ln.gateway.recent))
    (call,) = ln.gateway.recent
    assert call.end_reason == "CallConnected script ended" and call.keys.all == ["2"]
    sent = decode_wav(ln.gateway.lines["line1"].recorder.path(call_id))  # type: ignore[union-attr]
    prompt = sent.removesuffix("22")
    assert sent.endswith("22") and "1234567890".startswith(prompt) and 2 <= len(prompt) <= 6, sent


def test_list_active_calls_shows_the_keys_heard(line: Callable[..., Line]) -> None:
    ln = line(exchange_line(numbers={"8": {"rings": 1, "answer": "silence", "press": [
        {"at_s": 9.0, "keys": "4#"}]}}))
    call = ln.gateway.find(ln.call("8").text("CallId"))
    wait_until(lambda: len(call.keys.all) == 2)
    listed = ln.api(command="ListActiveCalls")
    assert listed.root.findtext("ActiveCalls/Call/DtmfReceived") == "4#"


@needs_sox
def test_play_goes_on_the_lines_timeline_and_comes_back_as_echo(
        line: Callable[..., Line], tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16",
                    str(tmp_path / "media" / "tone.wav"), "synth", "0.5", "sine", "1000",
                    "vol", "0.5"], check=True, capture_output=True)
    ln = line(exchange_line(numbers={"8": {"rings": 1, "answer": "silence"}}))
    call = ln.gateway.find(ln.call("8").text("CallId"))
    started = ln.driver.exchange.now  # type: ignore[union-attr]
    assert ln.api(command="Play", CallId=call.call_id, AudioFile="tone.wav",
                  Repeat="2").code == 200
    assert ln.driver.exchange.now - started >= 1.0  # type: ignore[union-attr]
    assert ln.api(command="HangUp", CallId=call.call_id).code == 200
    samples, _ = read_wav(ln.gateway.lines["line1"].recorder.path(call.call_id))  # type: ignore[union-attr]
    own, far = samples[:, 0].astype(float), samples[:, 1].astype(float)
    # Twice half a second of line time, one after the other (between the
    # two the line's time runs on as a real line's would: no overlap, maybe
    # a gap), each as loud as the file (sox's vol 0.5).
    sounding = np.flatnonzero(np.convolve(np.abs(own), np.ones(16) / 16, "same") > 4000)
    assert abs(len(sounding) - 8000) < 60
    assert np.max(np.abs(own)) < 0.51 * 32767
    # The echo: 20 dB down, 5 ms (40 samples) late.
    sounding = sounding[sounding + 40 < len(far)]
    assert np.sqrt(np.mean(far[sounding + 40] ** 2)) == pytest.approx(
        0.1 * np.sqrt(np.mean(own[sounding] ** 2)), rel=0.02)


def test_time_scale_0_sets_up_at_once_and_lives_the_call_in_real_time(
        line: Callable[..., Line], receiver: Receiver) -> None:
    """No waiting while a command waits on the line (the set-up's 2 rings);
    between commands the far end keeps the wall clock's time, so its key
    1 s after the connect arrives for the call, not before it."""
    ln = line(exchange_line(time_scale=0.0, numbers={"9": {
        "rings": 2, "press": [{"at_s": 3.0, "keys": "5"}], "hang_up_s": 4.0}}))
    answer = ln.call("9", FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200
    call = ln.gateway.find(answer.text("CallId"))
    wait_until(lambda: call.over)
    assert call.keys.all == ["5"]
    (finished,) = receiver.wait_for("CallFinished")
    assert finished["Reason"] == "the far end hung up (congestion tone)"
    assert ln.driver.wall_factor == pytest.approx(0.05)


def test_an_incoming_call_from_a_listed_number_presses_its_keys(
        line: Callable[..., Line], receiver: Receiver) -> None:
    receiver.answers["/incoming"] = "<Response><Delay>30</Delay></Response>"
    ln = line(exchange_line(numbers={"5551234": {
        "answer": "silence", "press": [{"at_s": 4.0, "keys": "42#"}], "hang_up_s": 6.0,
        "loop_break_ms": 500, "hang_up_tone": "silence"}}),
        server={"incoming_url": f"{receiver.url}/incoming"})
    ln.driver.ring("5551234")
    (incoming,) = receiver.wait_for("IncomingCall")
    wait_until(lambda: bool(ln.gateway.recent))
    (call,) = ln.gateway.recent
    assert call.keys.all == ["4", "2", "#"]
    assert call.end_reason == "the far end hung up (loop current broke for 500 ms)"
    assert incoming["CallerId"] == "5551234"


def test_hang_up_while_it_rings_or_sends_stops_the_line_at_once(
        line: Callable[..., Line]) -> None:
    """Whatever waits on the line's far end stops when the line goes on hook:
    the set-up (ringing for ever) and a SendDTMF of 35 s (of line time)."""
    ln = line()
    answers: list[Answer] = []
    placing = threading.Thread(target=lambda: answers.append(ln.call("300")))
    placing.start()
    wait_until(lambda: ln.states() == ["Ringing"])
    (ringing,) = ln.gateway.active_calls()
    assert ln.api(command="HangUp", CallId=ringing.call_id).code == 200
    placing.join(10)
    assert answers[0].code == 601 and ln.on_hook_and_idle()

    call = ln.gateway.find(ln.call("600").text("CallId"))
    sending: list[Answer] = []
    sender = threading.Thread(target=lambda: sending.append(ln.api(
        command="SendDTMF", CallId=call.call_id, Keys="12345", Party="all",
        Duration="2000", Gap="5000")))
    sender.start()
    started = ln.driver.exchange.now  # type: ignore[union-attr]
    wait_until(lambda: ln.driver.exchange.now > started + 3.0)  # type: ignore[union-attr]
    assert ln.api(command="HangUp", CallId=call.call_id).code == 200
    sender.join(10)
    assert sending[0].code == 601 and ln.on_hook_and_idle()


def test_a_recording_that_fails_mid_call_is_a_line_fault(
        line: Callable[..., Line], receiver: Receiver) -> None:
    """The far end's audio is recorded on the line's hearing thread: a write
    that fails there is a hardware fault like a capture device that vanished
    (the call ends, the line on hook and faulted, opened again by its next
    command)."""
    ln = line()
    recorder = ln.gateway.lines["line1"].recorder
    assert recorder is not None
    answer = ln.call("600", FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200

    def full(frames: Any) -> None:
        raise LineFault("cannot record the call: writing x.wav: No space left on device")

    recorder.audio = full  # type: ignore[method-assign]
    (finished,) = receiver.wait_for("CallFinished")
    assert finished["Reason"].startswith("line fault: ")
    assert "No space left on device" in finished["Reason"]
    wait_until(lambda: ln.driver.hook is HookState.ON_HOOK and ln.gateway.lines["line1"].fault
               is not None)
    del recorder.audio  # the disk has room again
    assert ln.call("200").code == 402  # the line opens afresh and hears again


def test_a_line_without_an_exchange_hears_nothing_and_waits_as_before(
        line: Callable[..., Line], make_app: Callable[..., Flask]) -> None:
    gateway: Gateway = make_app([simulated_line()]).extensions["dtmf_gateway"]
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    assert driver.ears is None and driver.exchange is None and not driver.hears
    assert driver.wall_factor == 1.0


# -- the real server, with the scenario in its config file ------------------------------

SCENARIO = """
[server]
notify_allow = ["127.0.0.1/32"]

[[line]]
name = "line1"
driver = "simulated"
time_scale = 0.05
record_dir = "rec"

[line.exchange]

[line.exchange.numbers."100"]
rings = 2
press = [{ at_s = 6.0, keys = "1#" }]
hang_up_s = 10.0

[line.exchange.numbers."200"]
result = "busy"

[line.exchange.numbers."300"]
result = "no-answer"
"""


def test_the_real_server_with_the_scenario_in_its_config_file(
        tmp_path: Path, receiver: Receiver) -> None:
    """100 answers after 2 rings, presses 1# at 6 s and hangs up at 10 s;
    200 is busy; 300 never answers."""
    server = LiveServer(tmp_path, SCENARIO)
    try:
        assert server.api({"command": "Call", "Dialed": "200"}).code == 402
        no_answer = server.api({"command": "Call", "Dialed": "300", "RingTime": "10"})
        assert "'NoAnswer'" in no_answer.message
        answer = server.api({"command": "Call", "Dialed": "100",
                             "FinishedUrl": f"{receiver.url}/finished"})
        assert answer.code == 200, answer
        (finished,) = receiver.wait_for("CallFinished")
        assert finished["Reason"] == "the far end hung up (congestion tone)"
        listed = server.api({"command": "ListActiveCalls"})
        assert listed.code == 200 and listed.root.find("ActiveCalls/Call") is None
        assert "the far end pressed 1" in server.output and "pressed #" in server.output
    finally:
        assert server.stop() == 0
