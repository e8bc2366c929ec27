"""End to end: the HTTP API driving a ``modem`` line on the simulated modem's pty."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.app import create_app
from gateway.calls import Gateway
from gateway.config import Config
from gateway.lines import build_line
from gateway.lines.modem import ModemLine
from gateway.lines.modem_sim import (
    FarEnd,
    FarEvent,
    ScriptedFarEnds,
    SimulatedModem,
    SimulatedModemRecorder,
)
from tests.conftest import Answer, call_api, wait_until
from tests.support import Receiver, decode_wav, multimon_decode, needs_multimon

TONES = {"duration_ms": 60, "gap_ms": 60}


def modem_line(port: str, **options: Any) -> dict[str, Any]:
    return {"name": "line1", "driver": "modem", "port": port, "command_timeout_s": 0.5,
            "call_timing": {"answer_wait_ms": 0}, **options}


@pytest.fixture
def sim() -> Iterator[SimulatedModem]:
    with SimulatedModem() as modem:
        yield modem


def driver_of(app: Flask) -> ModemLine:
    gateway: Gateway = app.extensions["dtmf_gateway"]
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, ModemLine)
    return driver


def api_of(app: Flask) -> Callable[..., Answer]:
    client = app.test_client()
    return lambda **params: call_api(client, **params)


@needs_multimon
def test_senddtmf_reaches_the_modem_as_vts_and_decodes_to_the_keys(
    make_app: Callable[..., Flask], sim: SimulatedModem
) -> None:
    app = make_app([modem_line(sim.port)], tones=TONES)
    api = api_of(app)
    answer = api(command="Call", Dialed="5551234")
    assert answer.code == 200, answer
    call_id = answer.text("CallId")
    assert sim.commands[-1] == "ATDT5551234" and sim.off_hook
    answer = api(command="SendDTMF", CallId=call_id, Party="caller", Keys="01234")
    assert (answer.code, answer.message) == (200, "Command successfully executed")
    assert sim.vts_commands() == [
        "AT+VTS={0,6},[0,0,6],{1,6},[0,0,6],{2,6}",
        "AT+VTS=[0,0,6],{3,6},[0,0,6],{4,6},[0,0,6]",
    ]
    assert api(command="HangUp", CallId=call_id).code == 200
    assert not sim.off_hook and sim.commands[-1] == "ATH0"
    engine = driver_of(app).engine
    assert multimon_decode(sim.render(engine), engine.settings.rate) == "01234"


@pytest.fixture
def sim_url_app(make_config: Callable[..., Config]) -> Iterator[Flask]:
    """A gateway on a ``sim://`` line, closed as the service closes it: the
    gateway, then what assembly started beside the driver."""
    config = make_config([modem_line("sim://", record_dir="recordings")], tones=TONES)
    (line,) = config.lines
    built = build_line(line.driver, line.name, line.options, config.tones.settings())
    gateway = Gateway(config, built={line.name: built})
    gateway.open()
    yield create_app(config, gateway)
    gateway.close(5)
    built.close()


def simulator_of(app: Flask) -> SimulatedModem:
    gateway: Gateway = app.extensions["dtmf_gateway"]
    recorder = gateway.lines["line1"].recorder
    assert isinstance(recorder, SimulatedModemRecorder)
    return recorder.simulator


@needs_multimon
def test_a_sim_url_line_records_each_call(sim_url_app: Flask) -> None:
    api = api_of(sim_url_app)
    call_id = api(command="Call", Dialed="123").text("CallId")
    assert api(command="SendDTMF", CallId=call_id, Party="all", Keys="9w#").code == 200
    assert api(command="HangUp", CallId=call_id).code == 200
    gateway: Gateway = sim_url_app.extensions["dtmf_gateway"]
    recorder = gateway.lines["line1"].recorder
    assert recorder is not None
    assert decode_wav(recorder.path(call_id)) == "9#"


@needs_multimon
def test_a_sim_url_line_faults_and_the_next_call_reopens_the_same_modem(
    sim_url_app: Flask,
) -> None:
    api, sim = api_of(sim_url_app), simulator_of(sim_url_app)
    call_id = api(command="Call", Dialed="5551234").text("CallId")
    sim.hang()
    answer = api(command="SendDTMF", CallId=call_id, Party="caller", Keys="1")
    assert answer.code == 801 and "did not answer" in answer.message
    sim.recover()
    again = api(command="Call", Dialed="5551234")
    assert again.code == 200
    call_id = again.text("CallId")
    assert api(command="SendDTMF", CallId=call_id, Party="all", Keys="73").code == 200
    assert api(command="HangUp", CallId=call_id).code == 200
    gateway: Gateway = sim_url_app.extensions["dtmf_gateway"]
    recorder = gateway.lines["line1"].recorder
    assert recorder is not None
    # The same simulator all along: the driver's close after the fault left it up.
    assert simulator_of(sim_url_app) is sim and driver_of(sim_url_app).url == sim.port
    assert decode_wav(recorder.path(call_id)) == "73"


def test_busy_is_code_402(make_app: Callable[..., Flask], sim: SimulatedModem) -> None:
    app = make_app([modem_line(sim.port)], tones=TONES)
    sim.dial_result = "BUSY"
    answer = api_of(app)(command="Call", Dialed="5551234")
    assert (answer.code, answer.message) == (
        402, "Call connect to '5551234' failed with result state 'Busy'")
    assert not sim.off_hook


def test_a_hung_modem_is_code_801_and_the_next_call_reopens_it(
    make_app: Callable[..., Flask], sim: SimulatedModem
) -> None:
    app = make_app([modem_line(sim.port)], tones=TONES)
    api = api_of(app)
    call_id = api(command="Call", Dialed="5551234").text("CallId")
    sim.hang()
    answer = api(command="SendDTMF", CallId=call_id, Party="caller", Keys="1")
    assert answer.code == 801
    assert answer.message.startswith("Line 'line1' fault: ")
    assert "did not answer 'AT+VTS={1,6},[0,0,6]'" in answer.message
    wait_until(lambda: not sim.off_hook)  # the port was closed: DTR dropped
    assert api(command="ListActiveCalls").root.find("ActiveCalls/Call") is None
    sim.recover()
    del sim.commands[:]
    assert api(command="Call", Dialed="5551234").code == 200
    assert sim.commands[:3] == ["ATZ", "ATE0", "AT+FCLASS=8"] and sim.off_hook


def test_a_ring_cadence_is_one_incoming_call_that_lasts_while_it_rings(
    make_app: Callable[..., Flask], sim: SimulatedModem
) -> None:
    import time

    # Rings 0.3 s apart, for longer than the ring timeout: a loaded machine may
    # add most of a second to a ring's handling before the call counts as over.
    app = make_app([modem_line(sim.port, call_timing={"ring_timeout_ms": 1500})], tones=TONES)
    gw: Gateway = app.extensions["dtmf_gateway"]
    heard, first = 0.0, None

    def counted() -> bool:
        calls = gw.active_calls()
        return bool(calls) and calls[0].last_ring > heard

    for _ in range(7):
        assert sim.ring()
        wait_until(counted)
        (call,) = gw.active_calls()
        assert call.state.value == "Ringing" and call.call_id == (first or call.call_id)
        heard, first = call.last_ring, call.call_id
        time.sleep(0.3)  # the cadence itself, not a wait for anything
    wait_until(lambda: not gw.active_calls(), timeout=15)
    assert gw.recent[-1].call_id == first and gw.recent[-1].end_reason == "caller gave up"


# -- a line that hears the modem's reports, end to end ----------------------------------

HEARING = ["dial", "busy", "ringback", "silence", "quiet", "loop", "keys"]


def hearing_line(sim: SimulatedModem, **numbers: FarEnd) -> dict[str, Any]:
    sim.far_end = ScriptedFarEnds({n.removeprefix("n"): far for n, far in numbers.items()})
    return modem_line(sim.port, reports=HEARING, call_timing={"answer_wait_ms": 300})


def rings(*at: float) -> tuple[FarEvent, ...]:
    return tuple(FarEvent(t, "ringback") for t in at)


def call_state(api: Callable[..., Answer]) -> str:
    return api(command="ListActiveCalls").text("ActiveCalls/Call/CallState")


def test_ringback_shows_ringing_and_the_answer_connects_the_call(
    make_app: Callable[..., Flask], sim: SimulatedModem, receiver: Receiver
) -> None:
    # The first ringback during the dial, so it is on the wire before the result.
    answered = FarEnd("OK", 0.3, (*rings(0.1, 0.5, 0.9, 1.3, 1.7), FarEvent(2.1, "quiet")))
    app = make_app([hearing_line(sim, n100=answered)], tones=TONES)
    api = api_of(app)
    placed: list[Answer] = []
    caller = threading.Thread(target=lambda: placed.append(api(
        command="Call", Dialed="100", Url=f"{receiver.url}/connected")))
    caller.start()
    wait_until(lambda: call_state(api) == "Ringing")
    assert not placed  # the Call answers when the far end does
    caller.join(15)
    assert placed[0].code == 200, placed[0]
    assert call_state(api) == "InCall" and sim.off_hook
    (connected,) = receiver.wait_for("CallConnected")
    assert connected["CallId"] == placed[0].text("CallId")


@pytest.mark.parametrize(("far", "ring_time", "state"), [
    (FarEnd("OK", 0.3, (*rings(0.1), FarEvent(0.6, "busy"))), "5", "Busy"),
    (FarEnd("BUSY", 0.3), "5", "Busy"),
    (FarEnd("NO DIALTONE", 0.3), "5", "NoDialTone"),
    (FarEnd("OK", 0.3, rings(*(0.1 + 0.4 * n for n in range(10)))), "1", "NoAnswer"),
], ids=["busy-report", "busy-result", "no-dial-tone", "rings-past-RingTime"])
def test_a_call_that_does_not_connect_is_402_with_its_state_and_the_line_on_hook(
    make_app: Callable[..., Flask], sim: SimulatedModem, far: FarEnd, ring_time: str, state: str
) -> None:
    app = make_app([hearing_line(sim, n200=far)], tones=TONES)
    api = api_of(app)
    answer = api(command="Call", Dialed="200", RingTime=ring_time)
    assert (answer.code, answer.message) == (
        402, f"Call connect to '200' failed with result state '{state}'")
    wait_until(lambda: not sim.off_hook)
    assert api(command="ListActiveCalls").root.find("ActiveCalls/Call") is None


@pytest.mark.parametrize(("what", "why"), [
    ("NO CARRIER", "the modem said NO CARRIER"), ("busy", "busy tone"),
    ("loop", "loop current interrupted")])
def test_the_far_end_hanging_up_ends_the_call_with_its_reason(
    make_app: Callable[..., Flask], sim: SimulatedModem, receiver: Receiver, what: str, why: str
) -> None:
    app = make_app([hearing_line(sim)], tones=TONES)
    api = api_of(app)
    answer = api(command="Call", Dialed="300", FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200
    sim.hear(FarEvent(0.1, what))
    (finished,) = receiver.wait_for("CallFinished")
    assert finished["CallId"] == answer.text("CallId")
    assert finished["Reason"] == f"the far end hung up ({why})"
    wait_until(lambda: not sim.off_hook)
    assert api(command="ListActiveCalls").root.find("ActiveCalls/Call") is None


@pytest.mark.parametrize("form", ["plain", "bracketed"])
def test_far_end_keys_reach_the_call_and_its_own_keys_do_not(
    make_app: Callable[..., Flask], sim: SimulatedModem, form: str
) -> None:
    sim.dtmf_form, sim.hears_own_keys = form, True
    app = make_app([hearing_line(sim)], tones=TONES)
    api = api_of(app)
    call_id = api(command="Call", Dialed="400").text("CallId")
    assert api(command="SendDTMF", CallId=call_id, Party="all", Keys="159").code == 200
    # The far end's 1 comes over 300 ms after our command's OK: past its echo window.
    sim.hear(FarEvent(0.3, "1"), FarEvent(0.6, "*"), FarEvent(0.9, "0"))
    gateway: Gateway = app.extensions["dtmf_gateway"]
    (call,) = gateway.active_calls()
    wait_until(lambda: len(call.keys.all) == 3)
    # The modem reported our 1, 5, 9 too (it hears its own transmitter) ...
    starts = [what[-1:].decode() for _, what in sim.reports
              if what.startswith(b"\x10/") or (form == "plain" and what[-1:] != b"~")]
    assert starts == ["1", "5", "9", "1", "*", "0"]
    # ... and the call has the far end's alone.
    assert call.keys.all == ["1", "*", "0"]
