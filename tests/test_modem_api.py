"""End to end: the HTTP API driving a ``modem`` line on the simulated modem's pty."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.app import create_app
from gateway.calls import Gateway
from gateway.config import Config
from gateway.lines import build_line
from gateway.lines.modem import ModemLine
from gateway.lines.modem_sim import SimulatedModem, SimulatedModemRecorder
from tests.conftest import Answer, call_api, wait_until
from tests.support import decode_wav, multimon_decode, needs_multimon

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
