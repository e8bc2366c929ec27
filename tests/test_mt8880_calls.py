"""Calls on an mt8880 line that hears, through the HTTP API, on the simulated
chip (``simulate = true``, IRQ/CP wired): the set-up followed in
call-progress mode, the far end's keys in DTMF mode once the call is up.

The far end is sox audio played by a small exchange of the test's own
(tests/test_mt8880_hearing.py): dial tone until our first digit, then a
scenario. uk tones: their cycles are short, so each call takes seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.calls.registry import CallState
from gateway.lines.mt8880 import MT8880Line
from gateway.lines.mt8880_sim import MT8880Simulator
from tests.conftest import Answer, call_api, wait_until
from tests.sox_signals import Part, cadence, keys, needs_sox, synth
from tests.test_mt8880_api import chip_of
from tests.test_mt8880_hearing import UK_DIAL, UK_RINGBACK, Exchange

pytestmark = needs_sox

UK_BUSY = (375, 375)


def line(**options: Any) -> dict[str, Any]:
    return {"name": "m1", "driver": "mt8880", "simulate": True, "power_up_ms": 5,
            "record_dir": "recordings", "irq_pin": 23, "country": "uk",
            "gpio": {"hook_relay_pin": 17, "ring_detect_pin": 27, "hook_settle_ms": 0},
            "call_timing": {"dial_tone_wait_ms": 1500}, **options}


def driver_of(app: Flask) -> MT8880Line:
    driver = app.extensions["dtmf_gateway"].lines["m1"].driver
    assert isinstance(driver, MT8880Line)
    return driver


def far_end(app: Flask, after: list[Part], dial: bool = True) -> list[Exchange]:
    """Connect the chip's line input to an exchange playing ``after`` once dialled."""
    sim: MT8880Simulator = chip_of(app)
    opened: list[Exchange] = []
    audio = synth(after) if after else np.zeros(0, dtype=np.int16)

    def open_far_end() -> Exchange:
        opened.append(Exchange(sim, synth(UK_DIAL) if dial else None, audio))
        return opened[-1]

    sim.connect_line(open_far_end)
    return opened


def api(app: Flask, **params: str) -> Answer:
    return call_api(app.test_client(), **params)


def ringback(seconds: float) -> list[Part]:
    return cadence((400.0, 450.0), UK_RINGBACK, seconds)


def test_answered_after_ringing_then_the_far_ends_keys_and_not_our_own(
        make_app: Callable[..., Flask]) -> None:
    app = make_app([line()])
    gw: Gateway = app.extensions["dtmf_gateway"]
    # One ring cycle, then the far end picks up (silence), presses 1 and #
    # 5 s into the scenario (well after the answer is confirmed), and hangs
    # up with busy tone from 8 s.
    scenario = [*ringback(3.0), (2.0, []), *keys("1#", 0.1, 0.1, lead_s=0.0), (2.6, []),
                *cadence((400.0,), UK_BUSY, 3.0)]
    exchange = far_end(app, scenario)
    answers: list[Answer] = []
    calling = threading.Thread(target=lambda: answers.append(
        api(app, command="Call", Dialed="100")))
    calling.start()
    # Ringback heard: the call shows Ringing while it rings.
    wait_until(lambda: [c.state.value for c in gw.active_calls()] == ["Ringing"])
    calling.join(30)
    (answer,) = answers
    assert answer.code == 200, answer
    call_id = answer.text("CallId")
    (call,) = gw.active_calls()
    assert call.state is CallState.IN_CALL
    # Connected only once ringback had stopped: after the scenario's 1.0 s
    # of ringing bursts and the 2.44 s its last gap may last.
    started = exchange[0].after_started
    assert started is not None and time.monotonic() - started >= 1.0 + 2.4
    driver = driver_of(app)
    assert driver.status()["listening"] == "dtmf"
    wait_until(lambda: call.keys.all == ["1", "#"], timeout=15)
    sent = api(app, command="SendDTMF", CallId=call_id, Keys="55", Party="all")
    assert sent.code == 200
    # The far end now plays busy: in DTMF mode the chip cannot hear it (only
    # loop-current sense would tell), so the call goes on, and our own 5s,
    # heard back through the hybrid, were never the far end's.
    wait_until(lambda: exchange[0].pos >= len(exchange[0].after), timeout=20)
    assert [c.call_id for c in gw.active_calls()] == [call_id]
    assert call.keys.all == ["1", "#"]
    assert driver.echoes >= 1
    assert api(app, command="HangUp", CallId=call_id).code == 200
    assert driver.hook.value == "on-hook"


@pytest.mark.parametrize(("scenario", "dial", "ring_time", "state"), [
    ([*cadence((400.0,), UK_BUSY, 4.0)], True, "60", "Busy"),
    ([*cadence((400.0,), (400, 350, 225, 525), 5.0)], True, "60", "Congestion"),
    ([], False, "60", "NoDialTone"),
    ([*ringback(15.0)], True, "3", "NoAnswer"),
])
def test_calls_that_do_not_connect_are_402_with_their_state(
        make_app: Callable[..., Flask], scenario: list[Part], dial: bool, ring_time: str,
        state: str) -> None:
    app = make_app([line()])
    exchange = far_end(app, scenario, dial=dial)
    began = time.monotonic()
    answer = api(app, command="Call", Dialed="200", RingTime=ring_time)
    assert (answer.code, answer.message) == (
        402, f"Call connect to '200' failed with result state '{state}'"), answer
    assert driver_of(app).hook.value == "on-hook"
    assert app.extensions["dtmf_gateway"].active_calls() == []
    if state == "NoAnswer":
        # RingTime counts from the end of dialling (the exchange starts ringing
        # 0.3 s after it): 3 s of ringing, not the 15 s played.
        started = exchange[0].after_started
        assert started is not None and 2.7 - 0.1 <= time.monotonic() - started < 6.0
    assert time.monotonic() - began < 15


def test_a_line_without_irq_cp_keeps_the_fixed_waits_and_still_hears_keys(
        make_app: Callable[..., Flask]) -> None:
    unwired = line(call_timing={"dial_tone_ms": 0, "answer_wait_ms": 0})
    del unwired["irq_pin"]
    app = make_app([unwired])
    gw: Gateway = app.extensions["dtmf_gateway"]
    far_end(app, [(1.0, []), *keys("42", 0.1, 0.1, lead_s=0.0)])
    driver = driver_of(app)
    assert driver.status()["hears"] == "keys"
    answer = api(app, command="Call", Dialed="7")
    assert answer.code == 200
    (call,) = gw.active_calls()
    wait_until(lambda: call.keys.all == ["4", "2"], timeout=15)
    assert driver.status()["keys_heard"] == 2
    assert not chip_of(app).violations


def test_a_loop_current_break_during_the_talk_ends_the_call(
        make_app: Callable[..., Flask]) -> None:
    # The chip is in DTMF mode during the talk, deaf to busy tone: loop-current
    # sense is how the line hears the far end go (the exchange opens the loop).
    table = line(gpio={"hook_relay_pin": 17, "ring_detect_pin": 27, "hook_settle_ms": 0,
                       "loop_current_pin": 22, "loop_current_pull": "off",
                       "loop_current_active_high": True, "cpc_ms": 300},
                 call_timing={"dial_tone_ms": 0, "answer_wait_ms": 0})
    del table["irq_pin"]  # no call progress: the fixed waits, then the talk
    app = make_app([table])
    loop = chip_of(app).factory.pin(22)
    loop.drive_high()  # loop current flows once the line is seized
    gateway: Gateway = app.extensions["dtmf_gateway"]
    answer = call_api(app.test_client(), command="Call", Dialed="1")
    assert answer.code == 200, answer
    (call,) = gateway.active_calls()
    loop.drive_low()
    wait_until(lambda: not gateway.active_calls(), timeout=15)
    reason = gateway.recent[-1].end_reason
    assert reason.startswith("the far end hung up (loop current broke for ") and reason.endswith(
        " ms)")
    assert int(reason.split("for ")[1].split(" ms")[0]) >= 300  # a break of cpc_ms at least
    assert gateway.recent[-1].call_id == call.call_id
    assert driver_of(app).hook.value == "on-hook"
