"""The audio-HAT path end to end: HTTP request -> tones and speech on ALSA, relay and ring on GPIO.

The gateway runs with an ``alsa`` line on an ALSA file PCM (null slave) and a
hook relay and ring detector on gpiozero mock pins; what reached "the line" is
decoded from the file ALSA wrote with multimon-ng.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from gateway.lines.alsa import AlsaLine
from gateway.lines.gpio import pin_factory
from tests.alsa_tap import AlsaTap, unplugging_consumer
from tests.conftest import Answer, call_api, wait_until
from tests.support import Receiver, decode_raw, needs_multimon

RELAY, RING = 17, 27
TONES = {"duration_ms": 60, "gap_ms": 60}
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)
# Every test here runs on gpiozero's mock pins, reset after each (conftest).
pytestmark = [needs_multimon, pytest.mark.usefixtures("mock_pins")]


def alsa_line(name: str = "line1", device: str = "tap", **options: Any) -> dict[str, Any]:
    """A line for the playback side: it hears nothing, so calls keep the fixed
    waits (test_alsa_hearing.py has lines that hear)."""
    return {
        "name": name, "driver": "alsa", "device": device, "rate": 8000,
        "capture": {"enabled": False},
        "call_timing": {"dial_tone_ms": 0, "answer_wait_ms": 0},
        "gpio": {"pin_factory": "mock", "hook_relay_pin": RELAY, "ring_detect_pin": RING,
                 "hook_settle_ms": 0, "ring_min_ms": 40, "ring_guard_ms": 0},
        **options,
    }


STEREO = {"routing": {"channels": 2, "caller_channels": [0], "callee_channels": [1]}}


def relay_history() -> list[bool]:
    return [s.state for s in pin_factory("mock").pin(RELAY).states]


def api_for(app: Flask) -> Callable[..., Answer]:
    client = app.test_client()
    return lambda **params: call_api(client, **params)


def place(api: Callable[..., Answer], dialed: str = "5551234", **params: str) -> str:
    answer = api(command="Call", Dialed=dialed, **params)
    assert answer.code == 200, answer
    return answer.text("CallId")


def test_senddtmf_mono_decodes_to_exactly_the_keys(tap: AlsaTap,
                                                   make_app: Callable[..., Flask]) -> None:
    api = api_for(make_app([alsa_line()], tones=TONES))
    call_id = place(api)
    keys = "0123456789*#ABCD"
    answer = api(command="SendDTMF", CallId=call_id, Keys=keys, Party="caller")
    assert (answer.code, answer.message) == (200, "Command successfully executed")
    # 200 means the audio left: it is all in the device's output already.
    assert decode_raw(tap.raw("tap"), 8000) == "5551234" + keys
    assert api(command="HangUp", CallId=call_id).code == 200
    # The relay held the line exactly for the call.
    assert relay_history() == [False, True, False]


def test_stereo_caller_channel_carries_only_the_callers_keys(
    tap: AlsaTap, make_app: Callable[..., Flask]
) -> None:
    api = api_for(make_app([alsa_line(**STEREO)], tones=TONES))
    call_id = place(api, "9")
    for party, keys in (("caller", "123"), ("callee", "456"), ("all", "78")):
        assert api(command="SendDTMF", CallId=call_id, Keys=keys, Party=party).code == 200
    assert api(command="HangUp", CallId=call_id).code == 200
    # The dialled number goes to the line (both outputs); then each party's own.
    assert decode_raw(tap.raw("tap"), 8000, channels=2, channel=0) == "912378"
    assert decode_raw(tap.raw("tap"), 8000, channels=2, channel=1) == "945678"


def test_missing_device_is_801_and_the_next_command_finds_it(
    tap: AlsaTap, make_app: Callable[..., Flask]
) -> None:
    api = api_for(make_app([alsa_line(device="usbcard")], tones=TONES))
    answer = api(command="Call", Dialed="1")
    assert answer.code == 801
    assert answer.message == ("Line 'line1' fault: ALSA device 'usbcard': "
                              "No such file or directory [usbcard]")
    assert pin_factory("mock").pin(RELAY).state is False
    tap.add("usbcard")  # plugged in
    call_id = place(api, "2")
    assert api(command="SendDTMF", CallId=call_id, Keys="34", Party="all").code == 200
    assert decode_raw(tap.raw("usbcard"), 8000) == "234"


def test_device_failing_mid_senddtmf_is_801_on_hook_then_works_again(
    tap: AlsaTap, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    fifo = tmp_path / "flaky.raw"
    os.mkfifo(fifo)
    tap.add("flaky", fifo)
    # Takes the dialled digit and a little more, then goes away (unplugged).
    reader = unplugging_consumer(fifo, 3000)
    api = api_for(make_app([alsa_line(device="flaky")], tones=TONES))
    call_id = place(api, "1")
    answer = api(command="SendDTMF", CallId=call_id, Keys="1234567890" * 3, Party="all")
    assert answer.code == 801
    assert answer.message.startswith(
        "Line 'line1' fault: ALSA device 'flaky': Input/output error")
    reader.join(5)
    assert relay_history() == [False, True, False]
    assert api(command="ListActiveCalls").root.findall("ActiveCalls/Call") == []
    # The device is back: the next call opens it afresh and works.
    fifo.unlink()
    call_id = place(api, "5")
    assert api(command="SendDTMF", CallId=call_id, Keys="67", Party="all").code == 200
    assert api(command="HangUp", CallId=call_id).code == 200
    assert decode_raw(fifo, 8000) == "567"
    assert relay_history() == [False, True, False, True, False]


@needs_espeak
def test_ozml_speak_then_senddtmf(tap: AlsaTap, make_app: Callable[..., Flask]) -> None:
    app = make_app([alsa_line()], tones=TONES)
    api = api_for(app)
    doc = ("<Response><Speak Party='caller' Language='en-GB'>Your door code follows.</Speak>"
           "<SendDTMF Party='caller' Keys='2580#'/></Response>")
    place(api, "3", ResponseOzML=doc)
    gateway = app.extensions["dtmf_gateway"]
    wait_until(lambda: not gateway.active_calls())  # the script's end hangs up
    audio = tap.frames("tap")
    assert len(audio) > 8000  # the speech: over a second
    assert decode_raw(tap.raw("tap"), 8000) == "32580#"
    assert relay_history() == [False, True, False]


@needs_espeak
def test_seed_ozml_on_a_stereo_line(tap: AlsaTap, make_app: Callable[..., Flask],
                                    receiver: Receiver) -> None:
    """The seed's OzML: each party hears its own sentence and keys."""
    app = make_app([alsa_line(**STEREO)], tones=TONES)
    receiver.answers["/connected"] = (
        '<?xml version="1.0"?> <Response> <Speak Party="caller">You will get dtmf keys 123.'
        '</Speak> <SendDTMF Party="caller" Keys="123"></SendDTMF> <Speak Party="callee">You '
        'will get dtmf keys 321.</Speak> <SendDTMF Party="callee" Keys="321"></SendDTMF>'
        " </Response>")
    api = api_for(app)
    place(api, "0", Url=f"{receiver.url}/connected", FinishedUrl=f"{receiver.url}/finished")
    receiver.wait_for("CallFinished")
    frames = tap.frames("tap", channels=2)
    assert decode_raw(tap.raw("tap"), 8000, channels=2, channel=0) == "0123"
    assert decode_raw(tap.raw("tap"), 8000, channels=2, channel=1) == "0321"
    # Each sentence only on its party's output.
    assert frames[:, 0].any() and frames[:, 1].any()


@needs_espeak
def test_ringing_on_gpio_is_one_incoming_call_answered_with_ozml(
    tap: AlsaTap, make_app: Callable[..., Flask], receiver: Receiver
) -> None:
    receiver.answers["/incoming"] = (
        "<Response><Speak>Hello</Speak><SendDTMF Keys='4#' Party='caller'/></Response>")
    app = make_app([alsa_line()], tones=TONES, server={"incoming_url": f"{receiver.url}/incoming"})
    gateway = app.extensions["dtmf_gateway"]
    ring = pin_factory("mock").pin(RING)
    # Ringing: bursts of 20 Hz pulses on the optocoupler input, until the
    # relay closes the loop (the exchange stops ringing then).
    for pulse in range(200):
        if True in relay_history():
            break
        ring.drive_low()
        time.sleep(0.015)
        ring.drive_high()
        time.sleep(0.035 if pulse % 5 else 0.2)
    (incoming,) = receiver.wait_for("IncomingCall")
    assert incoming["Line"] == "line1"
    wait_until(lambda: not gateway.active_calls())
    assert len([f for _, f in receiver.received
                if f.get("NotificationName") == "IncomingCall"]) == 1
    assert decode_raw(tap.raw("tap"), 8000) == "4#"
    assert relay_history() == [False, True, False]
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, AlsaLine) and driver.hook.value == "on-hook"


@needs_espeak
def test_speak_in_a_language_espeak_lacks_reports_303_and_the_script_goes_on(
    tap: AlsaTap, make_app: Callable[..., Flask], receiver: Receiver
) -> None:
    app = make_app([alsa_line()], tones=TONES)
    api = api_for(app)
    doc = ("<Response><Speak Language='tlh-KL'>nuqneH</Speak>"
           "<SendDTMF Party='all' Keys='1'/></Response>")
    place(api, "7", ResponseOzML=doc, ErrorUrl=f"{receiver.url}/error")
    (error,) = receiver.wait_for("Error")
    assert error["Code"] == "303"
    assert "espeak-ng has no voice for language 'tlh-KL' (it has " in error["Message"]
    wait_until(lambda: not app.extensions["dtmf_gateway"].active_calls())
    assert decode_raw(tap.raw("tap"), 8000) == "71"
