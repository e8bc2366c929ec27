"""HangUp over a long SendDTMF on every driver that can be tested here: the
tones stop, the line goes on hook at once, and the interrupted command says
its call ended. (The simulated line is tried through the real server in
test_hangup.py; the alsa line's playback stop is in test_alsa.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.lines.modem_sim import SimulatedModem
from tests.conftest import Answer, call_api, wait_until
from tests.test_mt8880_api import chip_of, mt8880_line

#: 5 keys at the longest tone and gap: 35 s on the line; a hang-up that
#: waited for them would take that long, one that works takes milliseconds.
LONG = {"Keys": "12345", "Duration": "2000", "Gap": "5000", "Party": "all"}
BOUND_S = 3.0
TOUT = 0b0001  # CRA b0, from the MT8880 data sheet


@pytest.fixture
def sim() -> Iterator[SimulatedModem]:
    with SimulatedModem() as modem:
        yield modem


def hang_up_mid_keys(app: Flask, tones_started: Callable[[], bool]) -> tuple[Answer, float]:
    """Place a call, start the long keys, hang up once they sound; return the
    keys' own answer and how long the HangUp took."""
    gateway: Gateway = app.extensions["dtmf_gateway"]
    client = app.test_client()
    call_id = call_api(client, command="Call", Dialed="1").text("CallId")
    answers: list[Answer] = []
    sender = threading.Thread(target=lambda: answers.append(call_api(
        app.test_client(), command="SendDTMF", CallId=call_id, **LONG)))
    sender.start()
    wait_until(lambda: gateway.lines[next(iter(gateway.lines))].worker.busy and tones_started(),
               timeout=30)
    started = time.monotonic()
    assert call_api(client, command="HangUp", CallId=call_id).code == 200
    took = time.monotonic() - started
    sender.join(BOUND_S)
    assert not sender.is_alive()
    return answers[0], took


@pytest.mark.parametrize("burst", [False, True], ids=["non-burst", "burst"])
def test_mt8880_tout_off_and_relay_released(make_app: Callable[..., Flask], burst: bool) -> None:
    app = make_app([mt8880_line(burst=burst)])
    chip = chip_of(app)
    relay = chip.factory.pin(17)
    # In non-burst mode the first tone sounds while TOUT is set; in burst mode
    # the 51 ms bursts come and go, so the keys have started once one has run.
    started: Callable[[], bool] = (
        (lambda: bool(int(chip.cra) & TOUT)) if not burst else (lambda: bool(relay.state)))
    keys, took = hang_up_mid_keys(app, started)
    assert took < BOUND_S
    assert keys.code == 601 and "hung up by API" in keys.message, keys
    wait_until(lambda: not int(chip.cra) & TOUT, timeout=BOUND_S)
    assert relay.state is False
    gateway: Gateway = app.extensions["dtmf_gateway"]
    assert gateway.lines["m1"].fault is None


def test_modem_stops_the_tones_and_hangs_up(make_app: Callable[..., Flask],
                                             sim: SimulatedModem) -> None:
    line: dict[str, Any] = {"name": "line1", "driver": "modem", "port": sim.port,
                            "command_timeout_s": 0.5, "call_timing": {"answer_wait_ms": 0}}
    app = make_app([line])
    keys, took = hang_up_mid_keys(app, lambda: bool(sim.vts_commands()))
    assert took < BOUND_S
    assert keys.code == 601 and "hung up by API" in keys.message, keys
    wait_until(lambda: not sim.off_hook, timeout=BOUND_S)
    # The next call works: the port is reopened (or was kept) and initialised.
    assert call_api(app.test_client(), command="Call", Dialed="2").code == 200
