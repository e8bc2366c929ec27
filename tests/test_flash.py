"""A hook flash (``f`` in keys) and BlindTransfer (flash, recall dial tone,
the target, on hook), on the GPIO relay of an alsa line, the MT8880 line's
relay and the modem's +VTS, with the relay's pin history as the judge."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from gateway import ozml
from gateway.calls import Gateway
from gateway.config import from_mapping
from gateway.errors import KeyStringError
from gateway.keys import Flash, Tone, format_keys, parse_keys
from gateway.lines.gpio import pin_factory
from gateway.lines.modem_sim import SimulatedModem
from gateway.tones import Timing, TonePlan
from tests.alsa_tap import AlsaTap
from tests.conftest import call_api, wait_until
from tests.support import decode_raw, needs_multimon
from tests.test_alsa_api import RELAY, alsa_line, api_for, place
from tests.test_mt8880_api import chip_of, mt8880_line


def test_f_and_F_are_a_hook_flash() -> None:
    symbols = parse_keys("1fF2")
    assert symbols == (Tone("1"), Flash(), Flash(), Tone("2"))
    assert format_keys(symbols) == "1ff2"
    plan = TonePlan(symbols, Timing(100, 100))
    assert plan.flashes == 2 and plan.seconds == 0.4
    assert [p.symbols if p else None for p in plan.split()] == [
        (Tone("1"),), None, None, (Tone("2"),)]


@pytest.mark.parametrize(("tones", "line", "ms"), [
    ({}, {}, 600), ({"country": "uk"}, {}, 100), ({"country": "fr"}, {}, 270),
    ({}, {"country": "de"}, 100), ({"country": "uk"}, {"call_timing": {"flash_ms": 250}}, 250),
])
def test_a_lines_flash_is_its_countrys_unless_it_says(
        tones: dict[str, Any], line: dict[str, Any], ms: int) -> None:
    config = from_mapping({"tones": tones, "line": [
        {"name": "l", "driver": "alsa", "device": "x", **line}]})
    assert config.lines[0].options.call_timing.flash_ms == ms


def relay_intervals() -> list[tuple[bool, float]]:
    """(state, seconds it lasted) for each state of the relay pin but the last
    (a MockPin's state records how long after the one before it came)."""
    states = pin_factory("mock").pin(RELAY).states
    return [(a.state, b.timestamp) for a, b in itertools.pairwise(states)]


@needs_multimon
@pytest.mark.usefixtures("mock_pins")
def test_a_flash_in_senddtmf_breaks_the_loop_for_flash_ms(
        tap: AlsaTap, make_app: Callable[..., Flask]) -> None:
    api = api_for(make_app([alsa_line(call_timing={"dial_tone_ms": 0, "answer_wait_ms": 0,
                                                   "flash_ms": 150})]))
    call_id = place(api, "9")
    assert api(command="SendDTMF", CallId=call_id, Keys="1f2", Party="all").code == 200
    assert api(command="HangUp", CallId=call_id).code == 200
    changes = relay_intervals()
    # on hook, off hook (dial, 1), the flash (released), off hook again (2); then on hook.
    assert [state for state, _ in changes] == [False, True, False, True]
    released = changes[2][1]
    # At least the flash; a loaded machine may add scheduling, a whole second is a bug.
    assert 0.150 <= released < 0.6
    assert decode_raw(tap.raw("tap"), 8000) == "912"


@pytest.mark.usefixtures("mock_pins")
def test_a_line_without_a_relay_cannot_flash(tap: AlsaTap,
                                            make_app: Callable[..., Flask]) -> None:
    line = alsa_line()
    line["gpio"] = {"pin_factory": "mock"}
    api = api_for(make_app([line]))
    call_id = place(api, "9")
    answer = api(command="SendDTMF", CallId=call_id, Keys="f1", Party="all")
    assert answer.code == 303 and answer.message == (
        "Command 'SendDTMF' cannot be used here: no hook relay to flash "
        "(gpio.hook_relay_pin is not set)")
    assert api(command="SendDTMF", CallId=call_id, Keys="1", Party="all").code == 200


def test_a_flash_cannot_be_dialled(make_app: Callable[..., Flask]) -> None:
    api = api_for(make_app())
    answer = api(command="Call", Dialed="9f1")
    assert answer.code == 302 and "a hook flash cannot be dialled" in answer.message
    with pytest.raises(KeyStringError):
        app_gateway: Gateway = make_app().extensions["dtmf_gateway"]
        app_gateway.place_call("f")


def test_the_mt8880_line_flashes_its_relay(make_app: Callable[..., Flask]) -> None:
    app = make_app([mt8880_line(call_timing={"dial_tone_ms": 0, "answer_wait_ms": 0,
                                             "flash_ms": 120})])
    relay = chip_of(app).factory.pin(17)
    call_id = call_api(app.test_client(), command="Call", Dialed="1").text("CallId")
    before = len(relay.states)
    assert call_api(app.test_client(), command="SendDTMF", CallId=call_id, Keys="f",
                    Party="all").code == 200
    flash = relay.states[before:]
    assert [s.state for s in flash] == [False, True]
    # A MockPin's state says how long after the one before it came.
    assert 0.120 <= flash[1].timestamp < 0.6


def test_the_modem_flashes_with_vts(make_app: Callable[..., Flask]) -> None:
    with SimulatedModem() as sim:
        app = make_app([{"name": "line1", "driver": "modem", "port": sim.port,
                         "command_timeout_s": 2.0,
                         "call_timing": {"answer_wait_ms": 0, "flash_ms": 300}}])
        api = api_for(app)
        call_id = place(api, "1")
        assert api(command="SendDTMF", CallId=call_id, Keys="1f", Party="all").code == 200
        assert "AT+VTS={!,30}" in sim.commands


@needs_multimon
@pytest.mark.usefixtures("mock_pins")
def test_blind_transfer_is_flash_dial_and_on_hook(tap: AlsaTap,
                                                 make_app: Callable[..., Flask]) -> None:
    app = make_app([alsa_line(call_timing={"dial_tone_ms": 50, "answer_wait_ms": 0,
                                           "flash_ms": 100})])
    api = api_for(app)
    call_id = place(api, "9")
    answer = api(command="BlindTransfer", CallId=call_id, Target="2000",
                 TransferorParty="caller")
    assert answer.code == 200, answer
    gateway: Gateway = app.extensions["dtmf_gateway"]
    assert gateway.recent[-1].end_reason == "transferred to 2000"
    assert [state for state, _ in relay_intervals()] == [False, True, False, True]
    assert pin_factory("mock").pin(RELAY).state is False  # on hook: the transfer is made
    assert decode_raw(tap.raw("tap"), 8000) == "92000"
    refused = api(command="Call", Dialed="1", ResponseOzML=(
        "<Response><BlindTransfer>20f0</BlindTransfer></Response>"))
    assert refused.code == 302 and "'Target'" in refused.message


@needs_multimon
@pytest.mark.usefixtures("mock_pins")
def test_blind_transfer_in_ozml_ends_the_script(tap: AlsaTap,
                                               make_app: Callable[..., Flask]) -> None:
    app = make_app([alsa_line(call_timing={"dial_tone_ms": 50, "answer_wait_ms": 0,
                                           "flash_ms": 100})])
    doc = ("<Response><SendDTMF Keys='1' Party='all'/><BlindTransfer Target='2000'/>"
           "<SendDTMF Keys='3' Party='all'/></Response>")
    assert call_api(app.test_client(), command="Call", Dialed="9", ResponseOzML=doc).code == 200
    gateway: Gateway = app.extensions["dtmf_gateway"]
    wait_until(lambda: bool(gateway.recent), timeout=30)
    assert gateway.recent[-1].end_reason == "transferred to 2000"
    assert decode_raw(tap.raw("tap"), 8000) == "912000"  # never the 3 after it
    assert ozml.parse("<Response><BlindTransfer>2000</BlindTransfer></Response>") == (
        ozml.BlindTransfer("2000"),)


def test_the_simulated_line_flashes_in_its_log_between_the_keys(
        make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    call_id = call_api(client, command="Call", Dialed="9").text("CallId")
    assert call_api(client, command="SendDTMF", CallId=call_id, Keys="1f2",
                    Party="all").code == 200
    events = [what for _, what in app.extensions["dtmf_gateway"].lines["line1"].driver.events]
    flashed = events.index("flash 600 ms")  # a US line's
    assert events[flashed - 1].startswith("emit all 1 symbols 1 digits")
    assert events[flashed + 1].startswith("emit all 1 symbols 1 digits")
