"""The alsa line hears its line: calls through the API that follow what the far end plays.

The far end is a file the line's capture reads through real ALSA (the file
plugin's ``infile`` behind an ``asym`` device, as a card's capture side
sits behind its name), from off hook on. Each scenario is built here, from
values typed in here: the United States' tones of ITU-T E.180 Supplement 2
made by sox, speech by espeak-ng. A file PCM delivers as fast as it is
read; the line's capture loop paces it to SPEED times real time, and every
decision is taken on the line's own timeline, so a scenario's times are
line seconds and the wall clock only bounds how long a test may take.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from gpiozero.pins.mock import MockConnectedPin

from gateway.calls import Gateway
from gateway.detect import Dtmf, Listener
from gateway.lines.alsa import AlsaLine
from gateway.lines.gpio import pin_factory
from tests.alsa_line import FarEnd, PhoneLine
from tests.alsa_tap import AlsaTap, unplugging_consumer
from tests.conftest import Answer, call_api, wait_until
from tests.sox_signals import needs_espeak, needs_sox
from tests.support import Receiver

pytestmark = [needs_sox, needs_espeak, pytest.mark.usefixtures("mock_pins")]

RATE = 8000
#: Line seconds per wall second: scenarios of 10-20 line seconds take a few.
SPEED = 4.0
RELAY, RING, LOOP = 17, 27, 22
TONES = {"duration_ms": 60, "gap_ms": 60}
DIALED = "5551234"

# The United States' call-progress tones (E.180 Supplement 2), typed in here.
DIAL = (350.0, 440.0)
RINGBACK, RING_CADENCE = (440.0, 480.0), (2000, 4000)
BUSY, BUSY_CADENCE = (480.0, 620.0), (500, 500)
REORDER_CADENCE = (250, 250)
SIT = ((950.0, 0.33), (1400.0, 0.33), (1800.0, 0.33))


def exchange(far: FarEnd) -> FarEnd:
    """Dial tone (the gateway dials once it has heard it: at once, on a file
    PCM), then the exchange's pause while it routes the call."""
    return far.tone(DIAL, 1.2).silence(1.0)


def answered(rings: int = 2) -> FarEnd:
    """Rings, then the far end picks up a second after the last ring and speaks."""
    return (exchange(FarEnd(RATE)).tone(RINGBACK, 6.0 * rings - 4.0, RING_CADENCE)
            .mark("ringback_end").silence(1.0).mark("pick_up")
            .speech("Hello, you have reached the test line.").mark("spoke"))


class Hat:
    """An alsa line on device "hat": playback into a tap file, capture from
    a far-end file; hook relay and ring detect on mock pins."""

    def __init__(self, tap: AlsaTap, make_app: Callable[..., Flask], tmp_path: Path) -> None:
        self.tap = tap
        self.make_app = make_app
        self.dir = tmp_path
        self.infile = tmp_path / "far.raw"
        self.app: Flask | None = None

    def start(self, far: FarEnd, tee: Path | None = None, speed: float = SPEED,
              **options: Any) -> Flask:
        far.write(self.infile)
        self.tap.add("hat_out")
        self.tap.add_capture("hat_in", self.infile, tee)
        self.tap.add_duplex("hat", "hat_out", "hat_in")
        gpio = {"pin_factory": "mock", "hook_relay_pin": RELAY, "ring_detect_pin": RING,
                "hook_settle_ms": 0, "ring_guard_ms": 0, **options.pop("gpio", {})}
        line = {"name": "line1", "driver": "alsa", "device": "hat", "rate": RATE,
                "gpio": gpio, **options}
        self.app = self.make_app([line], tones=TONES, server={"command_timeout_s": 60})
        self.driver.capture_speed = speed
        return self.app

    @property
    def gateway(self) -> Gateway:
        assert self.app is not None
        gateway: Gateway = self.app.extensions["dtmf_gateway"]
        return gateway

    @property
    def driver(self) -> AlsaLine:
        driver = self.gateway.lines["line1"].driver
        assert isinstance(driver, AlsaLine)
        return driver

    def api(self, **params: str) -> Answer:
        assert self.app is not None
        return call_api(self.app.test_client(), **params)

    def call_in_background(self, **params: str) -> tuple[threading.Thread, list[Answer]]:
        """``Call`` on a thread of its own (it answers once the call is decided)."""
        answers: list[Answer] = []
        thread = threading.Thread(target=lambda: answers.append(
            self.api(command="Call", Dialed=DIALED, **params)), daemon=True)
        thread.start()
        return thread, answers

    def states(self) -> list[str]:
        calls = self.api(command="ListActiveCalls").root.findall("ActiveCalls/Call")
        return [c.findtext("CallState") or "" for c in calls]


def relay_history() -> list[bool]:
    return [s.state for s in pin_factory("mock").pin(RELAY).states]


@pytest.fixture
def hat(tap: AlsaTap, make_app: Callable[..., Flask], tmp_path: Path) -> Iterator[Hat]:
    yield Hat(tap, make_app, tmp_path)


def watch_states(hat: Hat, thread: threading.Thread) -> list[str]:
    """The call's states as ListActiveCalls shows them while ``thread`` runs, in order."""
    seen: list[str] = []
    while True:
        running = thread.is_alive()
        for state in hat.states():
            if not seen or seen[-1] != state:
                seen.append(state)
        if not running:
            return seen
        time.sleep(0.02)


# -- an answered call ---------------------------------------------------------------------
def test_a_call_rings_then_connects_when_the_far_end_picks_up(hat: Hat,
                                                              receiver: Receiver) -> None:
    far = answered().silence(30.0)
    hat.start(far)
    receiver.answers["/connected"] = "<Response><Delay>30</Delay></Response>"
    thread, answers = hat.call_in_background(Url=f"{receiver.url}/connected",
                                             FinishedUrl=f"{receiver.url}/finished")
    states = watch_states(hat, thread)
    (answer,) = answers
    assert answer.code == 200, answer
    # Ringing first (ListActiveCalls said so while the ringback played), then
    # connected; the first poll may come after the brief Setup.
    assert states in (["Setup", "Ringing", "InCall"], ["Ringing", "InCall"]), states
    (connected,) = receiver.wait_for("CallConnected")
    assert connected["CallId"] == answer.text("CallId")
    assert connected["StartTime"] <= connected["ConnectTime"]
    assert hat.api(command="HangUp", CallId=answer.text("CallId")).code == 200
    (finished,) = receiver.wait_for("CallFinished")
    # Connected once the ringback had stopped and the answer stood for the
    # set-up's confirm time (2 s) after it: at line time 10 + 2. The capture
    # may run up to 0.2 wall seconds (0.8 line seconds) ahead of the clock;
    # a loaded machine makes it later, never earlier.
    ring_line_s = float(finished["RingDuration"]) * SPEED
    assert far.marks["ringback_end"] + 1.0 < ring_line_s < far.marks["ringback_end"] + 8.0
    # ConnectTime is that moment (Ozeki's timestamps count whole seconds).
    start, connect = (datetime.strptime(connected[k], "%Y-%m-%d %H:%M:%S")
                      for k in ("StartTime", "ConnectTime"))
    assert abs((connect - start).total_seconds() - float(finished["RingDuration"])) <= 1.0
    assert relay_history() == [False, True, False]


# -- calls that do not connect --------------------------------------------------------
def busy() -> FarEnd:
    return exchange(FarEnd(RATE)).tone(BUSY, 20.0, BUSY_CADENCE)


def congestion() -> FarEnd:
    return exchange(FarEnd(RATE)).tone(BUSY, 20.0, REORDER_CADENCE)


def sit() -> FarEnd:
    far = exchange(FarEnd(RATE))
    for _ in range(3):
        far.sequence(SIT).speech("The number you have dialled is not in service.")
    return far


def no_dial_tone() -> FarEnd:
    return FarEnd(RATE).silence(20.0)


def no_answer() -> FarEnd:
    return exchange(FarEnd(RATE)).tone(RINGBACK, 60.0, RING_CADENCE)


@pytest.mark.parametrize(("scenario", "state", "params", "decided_s"), [
    # The tone starts at 2.2 s; busy is recognised some 1.7 s into its
    # cadence (the detectors' own figure), the others sooner.
    (busy, "Busy", {}, 3.0),
    (congestion, "Congestion", {}, 2.5),
    (sit, "SpecialInformationTone", {}, 2.5),
    # No dial tone within dial_tone_wait_ms (3 s of line time).
    (no_dial_tone, "NoDialTone", {}, 3.0),
    # Still ringing RingTime (10 s) after the dialling's end (after 1.5 s:
    # dial tone heard at 0.7 s, then 7 keys of 120 ms).
    (no_answer, "NoAnswer", {"RingTime": "10"}, 11.5),
])
def test_a_call_that_does_not_connect_is_402_with_its_state(
    hat: Hat, receiver: Receiver, scenario: Callable[[], FarEnd], state: str,
    params: dict[str, str], decided_s: float,
) -> None:
    hat.start(scenario())
    answer = hat.api(command="Call", Dialed=DIALED, FinishedUrl=f"{receiver.url}/finished",
                     **params)
    assert (answer.code, answer.message) == (
        402, f"Call connect to '{DIALED}' failed with result state '{state}'")
    # Decided on the line's timeline, never before its time: the capture
    # stopped at on hook, so the line time it had reached is when, or a
    # little after (the capture runs on until the line is released, 4 line
    # seconds per wall second: 6 s is 1.5 s of a loaded machine's delay).
    line_s = hat.driver.ears.time  # type: ignore[union-attr]
    assert decided_s <= line_s <= decided_s + 6.0
    assert relay_history() == [False, True, False]
    assert hat.states() == []
    (finished,) = receiver.wait_for("CallFinished")
    assert finished["Reason"] == f"call failed: {state}"


# -- the far end hangs up ---------------------------------------------------------------
@pytest.mark.parametrize(("after", "why"), [
    (lambda far: far.tone(BUSY, 10.0, REORDER_CADENCE), "congestion tone"),
    (lambda far: far.tone(DIAL, 10.0), "dial tone"),
])
def test_the_far_end_hanging_up_after_the_talk_ends_the_call(
    hat: Hat, receiver: Receiver, after: Callable[[FarEnd], FarEnd], why: str,
) -> None:
    far = after(answered().silence(2.0).speech("Goodbye.").silence(1.0).mark("hung_up"))
    hat.start(far)
    answer = hat.api(command="Call", Dialed=DIALED, FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200, answer
    (finished,) = receiver.wait_for("CallFinished", timeout=20)
    assert finished["CallId"] == answer.text("CallId")
    assert finished["Reason"] == f"the far end hung up ({why})"
    wait_until(lambda: hat.states() == [])
    assert relay_history() == [False, True, False]
    # Ended once the far end's tone had been recognised after the talk, not
    # before: the line time the capture had reached when the line was
    # released (loosely bounded above: a loaded machine releases it later).
    assert float(finished["TalkDuration"]) > 0
    line_s = hat.driver.ears.time  # type: ignore[union-attr]
    assert far.marks["hung_up"] < line_s < far.marks["hung_up"] + 8.0


# -- the far end's keys -------------------------------------------------------------------
def test_keys_the_far_end_presses_are_the_calls(hat: Hat) -> None:
    far = answered().silence(0.5).keys("1#", on_s=0.1, off_s=0.2).speech(
        "Thank you.").keys("0", on_s=0.06, off_s=0.1).silence(30.0)
    hat.start(far)
    answer = hat.api(command="Call", Dialed=DIALED)
    assert answer.code == 200, answer
    (call,) = hat.gateway.active_calls()
    wait_until(lambda: len(call.keys.all) >= 3, timeout=15)
    # Exactly the far end's keys: not the dialled number, not the speech.
    assert call.keys.all == ["1", "#", "0"]
    assert hat.api(command="HangUp", CallId=answer.text("CallId")).code == 200


# -- the capture device fails ------------------------------------------------------------
def test_a_capture_that_fails_while_ringing_is_801_and_the_next_call_opens_it_afresh(
    hat: Hat, tmp_path: Path,
) -> None:
    tee = tmp_path / "capture-tee.raw"
    import os

    os.mkfifo(tee)
    # The capture hands its frames to the tee too; once 4 s of them have
    # gone, the tee's reader leaves and the next capture read fails (EIO),
    # as a USB card pulled out does: during the ringing.
    unplugging_consumer(tee, 4 * RATE * 2)
    hat.start(answered().silence(30.0), tee=tee)
    answer = hat.api(command="Call", Dialed=DIALED)
    assert answer.code == 801, answer
    assert answer.message.startswith(
        "Line 'line1' fault: ALSA capture device 'hat': Input/output error")
    assert relay_history() == [False, True, False]
    assert hat.states() == []
    # The device is back (the tee a plain file): the next call opens it afresh.
    tee.unlink()
    again = hat.api(command="Call", Dialed=DIALED)
    assert again.code == 200, again
    assert hat.api(command="HangUp", CallId=again.text("CallId")).code == 200
    assert relay_history() == [False, True, False, True, False]


def test_a_capture_that_fails_during_the_talk_ends_the_call_as_a_line_fault(
    hat: Hat, receiver: Receiver, tmp_path: Path,
) -> None:
    tee = tmp_path / "capture-tee.raw"
    import os

    os.mkfifo(tee)
    unplugging_consumer(tee, 20 * RATE * 2)  # 20 s: well after the answer at about 12 s
    hat.start(answered().silence(30.0), tee=tee)
    answer = hat.api(command="Call", Dialed=DIALED, FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200, answer
    (finished,) = receiver.wait_for("CallFinished", timeout=20)
    assert finished["Reason"].startswith(
        "line fault: ALSA capture device 'hat': Input/output error")
    wait_until(lambda: hat.states() == [] and relay_history()[-1] is False)
    (line,) = hat.gateway.snapshots()
    assert line.fault is not None and "Input/output error" in line.fault
    tee.unlink()
    again = hat.api(command="Call", Dialed=DIALED)
    assert again.code == 200, again
    assert hat.gateway.snapshots()[0].fault is None
    assert hat.api(command="HangUp", CallId=again.text("CallId")).code == 200


# -- loop sense ----------------------------------------------------------------------------
def test_a_loop_current_break_ends_the_call_and_a_short_one_does_not(hat: Hat,
                                                                    receiver: Receiver) -> None:
    factory = pin_factory("mock")
    loop = factory.pin(LOOP)
    # The hook relay closes the loop: current flows while it is energised.
    factory.pin(RELAY, pin_class=MockConnectedPin, input_pin=loop)
    # 1 s: a break the test ends itself is short whatever the machine's load.
    hat.start(answered().silence(60.0), gpio={
        "loop_current_pin": LOOP, "loop_current_pull": "off",
        "loop_current_active_high": True, "cpc_ms": 1000})
    answer = hat.api(command="Call", Dialed=DIALED, FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200, answer
    loop.drive_low()  # a polarity reversal's dip, or a line transient
    loop.drive_high()
    wait_until(lambda: hat.driver.control.loop_short_breaks == 1)
    assert hat.states() == ["InCall"]
    loop.drive_low()  # the far end hung up: the exchange opens the loop
    (finished,) = receiver.wait_for("CallFinished", timeout=10)
    assert finished["Reason"].startswith("the far end hung up (loop current broke for ")
    assert hat.states() == []
    assert relay_history()[-1] is False
    status = hat.driver.status()["loop_current"]
    assert isinstance(status, dict) and (status["breaks"], status["short_breaks"]) == (1, 1)


# -- the echo of the gateway's own keys ------------------------------------------------
def test_the_echo_of_our_own_senddtmf_is_not_the_far_ends_keys(
    tap: AlsaTap, make_app: Callable[..., Flask], tmp_path: Path,
) -> None:
    """In real time: what the gateway plays comes back into its capture, 12 dB
    down and 5 ms late, mixed with the far end, as the line's hybrid returns it."""
    played, far_fifo, tee = tmp_path / "played.fifo", tmp_path / "far.fifo", tmp_path / "tee.raw"
    relay = pin_factory("mock").pin(RELAY)
    # One ring (2 s), a pick-up 1.5 s after it; then the far end listens.
    far = (exchange(FarEnd(RATE)).tone(RINGBACK, 2.0).silence(1.5)
           .speech("Hello.").silence(60.0))
    line = PhoneLine(played, far_fifo, RATE, far.pcm(), off_hook=lambda: bool(relay.state))
    try:
        tap.add("hat_out", played)
        tap.add_capture("hat_in", far_fifo, tee)
        tap.add_duplex("hat", "hat_out", "hat_in")
        app = make_app([{"name": "line1", "driver": "alsa", "device": "hat", "rate": RATE,
                         "gpio": {"pin_factory": "mock", "hook_relay_pin": RELAY,
                                  "hook_settle_ms": 0}}], tones=TONES)
        client = app.test_client()
        answer = call_api(client, command="Call", Dialed=DIALED)
        assert answer.code == 200, answer
        call_id = answer.text("CallId")
        (call,) = app.extensions["dtmf_gateway"].active_calls()
        sent = call_api(client, command="SendDTMF", CallId=call_id, Keys="123#", Party="all",
                        Duration="100", Gap="100")
        assert sent.code == 200, sent
        # The far end presses 7, then 3 (a key we sent too), once our keys'
        # echo is over (what left ALSA still crosses the line's buffers).
        line.say(FarEnd(RATE).keys("73", on_s=0.1, off_s=0.3).pcm(), lead_s=0.6)
        wait_until(lambda: len(call.keys.all) >= 2, timeout=15)
        assert call_api(client, command="HangUp", CallId=call_id).code == 200
    finally:
        line.close()
    assert call.keys.all == ["7", "3"]
    # The judge: what the capture read (its tee) held our keys, loud enough
    # and in order, before the far end's: a listener told nothing hears all.
    deaf = Listener("us", RATE)
    heard = np.fromfile(tee, dtype="<i2")
    keys = "".join(e.key for e in deaf.feed(heard) + deaf.flush() if isinstance(e, Dtmf))
    assert keys.endswith("123#73"), keys
