"""The voice-modem line against the simulated V.253 modem on a real pty.

The driver opens the pty through pyserial exactly as it would open
/dev/ttyACM0; what the modem received is asserted as the command lines on the
wire, and what it played is decoded with multimon-ng.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import from_mapping
from gateway.errors import CallFailed, ConfigError, LineFault
from gateway.keys import KEYS, Tone, parse_keys
from gateway.lines import BuiltLine, build_line
from gateway.lines.base import HookState
from gateway.lines.modem import (
    ATPort,
    ModemCallTiming,
    ModemLine,
    ModemOptions,
    ModemSilent,
    ToneLine,
    dial_string,
    tone_lines,
)
from gateway.lines.modem_sim import SimulatedModem, SimulatedModemRecorder
from gateway.tones import Timing, ToneEngine, TonePlan, ToneSettings
from tests.conftest import wait_until
from tests.support import decode_wav, example_line_block, multimon_decode, needs_multimon

FAST = Timing(50, 50)
INIT = ["ATZ", "ATE0", "AT+FCLASS=8", "AT+VTD=10", "ATH0"]


def plan(keys: str, timing: Timing = FAST) -> TonePlan:
    return TonePlan(parse_keys(keys), timing)


@pytest.fixture
def sim() -> Iterator[SimulatedModem]:
    with SimulatedModem() as modem:
        yield modem


@pytest.fixture
def engine() -> ToneEngine:
    return ToneEngine()


def make_line(sim: SimulatedModem, engine: ToneEngine, **options: Any) -> ModemLine:
    defaults: dict[str, Any] = {"port": sim.port, "command_timeout_s": 0.5,
                                "reset_timeout_s": 0.5,
                                "call_timing": ModemCallTiming(answer_wait_ms=0)}
    return ModemLine("modem1", ModemOptions(**{**defaults, **options}), engine)


@pytest.fixture
def line(sim: SimulatedModem, engine: ToneEngine) -> Iterator[ModemLine]:
    driver = make_line(sim, engine)
    driver.open()
    yield driver
    driver.close()


@pytest.fixture
def rings(line: ModemLine) -> list[str | None]:
    heard: list[str | None] = []
    line.ring_handler = heard.append
    return heard


# -- +VTS command lines, without a modem ---------------------------------------


def test_keys_with_gaps_fit_one_command_line() -> None:
    steps = tone_lines(plan("12", Timing(100, 100)), max_chars=40)
    assert steps == [ToneLine("AT+VTS={1,10},[0,0,10],{2,10},[0,0,10]", 400)]


def test_a_long_key_string_is_split_at_the_command_line_limit() -> None:
    steps = tone_lines(plan("123456", Timing(100, 100)), max_chars=40)
    assert [s.command for s in steps] == [
        "AT+VTS={1,10},[0,0,10],{2,10},[0,0,10]",
        "AT+VTS={3,10},[0,0,10],{4,10},[0,0,10]",
        "AT+VTS={5,10},[0,0,10],{6,10},[0,0,10]",
    ]


def test_pauses_are_waits_between_commands_and_long_gaps_are_chunked() -> None:
    steps = tone_lines(plan("1wW#", Timing(45, 3000)), max_chars=60)
    assert steps == [
        # 45 ms rounds up to 50 ms; 3 s of gap is more than one 2.55 s element.
        ToneLine("AT+VTS={1,5},[0,0,255],[0,0,45]", 3050),
        ToneLine(None, 1500),
        ToneLine("AT+VTS={#,5},[0,0,255],[0,0,45]", 3050),
    ]


def test_driver_gap_mode_sends_one_digit_a_command() -> None:
    steps = tone_lines(plan("12w", Timing(60, 70)), max_chars=40, gap_mode="driver")
    assert steps == [
        ToneLine("AT+VTS={1,6}", 60),
        ToneLine(None, 70),
        ToneLine("AT+VTS={2,6}", 60),
        ToneLine(None, 570),
    ]


@settings(max_examples=200, deadline=None)
@given(
    keys=st.text(alphabet=KEYS + "wW,", min_size=1, max_size=128),
    duration=st.integers(40, 2000),
    gap=st.integers(50, 5000),
    max_chars=st.integers(20, 200),
)
def test_split_lines_fit_and_carry_every_key_in_order(
    keys: str, duration: int, gap: int, max_chars: int
) -> None:
    p = plan(keys, Timing(duration, gap))
    steps = tone_lines(p, max_chars)
    sent = [s.command for s in steps if s.command is not None]
    assert all(len(c) - 2 <= max_chars for c in sent)
    digits = re.findall(r"\{(.),(\d+)\}", ",".join(sent))
    expected = [s.key for s in p.symbols if isinstance(s, Tone)]
    assert [d for d, _ in digits] == expected
    assert {int(u) for _, u in digits} <= {-(-duration // 10)}
    # Nothing is lost or invented: the steps take exactly the plan's time,
    # give or take the rounding up to 10 ms units.
    total_ms = sum(s.ms for s in steps)
    plan_ms = round(p.seconds * 1000)  # a float sum: 4.03 s is 4030.0000000000005 ms
    assert plan_ms <= total_ms <= plan_ms + 20 * len(expected)


def test_dial_string_turns_pauses_into_comma_pauses() -> None:
    assert dial_string("555w1234") == "555,1234"
    assert dial_string("*72#a") == "*72#A"


def test_options_are_checked_by_the_config_loader(tmp_path: Any) -> None:
    line = {"name": "m", "driver": "modem", "port": "/dev/ttyACM0"}
    config = from_mapping({"line": [{**line, "init": ["AT+VLS=1"], "vtd_unit_ms": 100}]})
    assert isinstance(config.lines[0].options, ModemOptions)
    with pytest.raises(ConfigError, match=r"^line\[0\]\.gap_mode: 'both' is not one of tones, "
                       r"driver$"):
        from_mapping({"line": [{**line, "gap_mode": "both"}]})
    with pytest.raises(ConfigError, match=r"line\[0\]\.init"):
        from_mapping({"line": [{**line, "init": ["ATZ\rATH1"]}]})
    with pytest.raises(ConfigError, match=r"^line\[0\]\.vtd_unit_ms: 50 is not one of 10, 100$"):
        from_mapping({"line": [{**line, "vtd_unit_ms": 50}]})
    with pytest.raises(ConfigError, match=r"^line\[0\]\.max_record_s: 0\.5 is below"):
        from_mapping({"line": [{**line, "max_record_s": 0.5}]})


def test_answer_wait_is_in_call_timing_as_on_the_other_drivers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    line = {"name": "m", "driver": "modem", "port": "/dev/ttyACM0"}
    (new,) = from_mapping({"line": [{**line, "call_timing": {"answer_wait_ms": 750}}]}).lines
    # flash_ms 0 becomes a US line's 600 ms.
    assert new.options.call_timing == ModemCallTiming(answer_wait_ms=750, flash_ms=600)
    with caplog.at_level("WARNING"):
        ModemLine("m", new.options, ToneEngine())
    assert "deprecated" not in caplog.text
    # The old top-level key is still read, and said to be old where the service logs.
    (old,) = from_mapping({"line": [{**line, "answer_wait_ms": 750}]}).lines
    assert old.options.call_timing == ModemCallTiming(answer_wait_ms=750, flash_ms=600)
    with caplog.at_level("WARNING"):
        driver = ModemLine("m", old.options, ToneEngine())
    assert driver.call_timing.answer_wait_ms == 750
    assert caplog.text.count("answer_wait_ms is deprecated") == 1
    with pytest.raises(ConfigError, match=r"answer_wait_ms: set call_timing\.answer_wait_ms"):
        from_mapping({"line": [{**line, "answer_wait_ms": 750,
                                "call_timing": {"answer_wait_ms": 500}}]})
    # The modem waits for dial tone itself: a wait of the gateway's would do nothing.
    with pytest.raises(ConfigError, match=r"call_timing\.dial_tone_ms: a modem waits"):
        from_mapping({"line": [{**line, "call_timing": {"dial_tone_ms": 1000}}]})


def test_place_call_waits_call_timing_after_the_dial_result(
    sim: SimulatedModem, engine: ToneEngine
) -> None:
    driver = make_line(sim, engine, call_timing=ModemCallTiming(answer_wait_ms=400))
    driver.open()
    try:
        started = time.monotonic()
        driver.place_call("1", FAST)
        # The dial itself takes the simulator's 50 ms; the wait is a floor.
        assert time.monotonic() - started >= 0.4
    finally:
        driver.close()


def test_example_config_block_is_valid_and_documents_the_defaults() -> None:
    (line,) = from_mapping(example_line_block("modem1"), base_dir=Path("/srv")).lines
    assert line.driver == "modem"
    assert line.options.record_dir == "/srv/recordings"
    # call_timing.flash_ms 0 became the country's hook flash (600 ms in the US).
    assert replace(line.options, record_dir="recordings") == ModemOptions(
        call_timing=ModemCallTiming(flash_ms=600))


# -- the simulated modem itself ------------------------------------------------


@pytest.fixture
def port_rings() -> list[str]:
    return []


@pytest.fixture
def port(sim: SimulatedModem, port_rings: list[str]) -> Iterator[ATPort]:
    at = ATPort(sim.port, 115200, 1.0, lambda: port_rings.append("ring"), lambda exc: None)
    at.open()
    yield at
    at.close()


def test_echo_is_tolerated_until_it_is_turned_off(sim: SimulatedModem, port: ATPort) -> None:
    assert sim.echo
    reply = port.command("AT+FCLASS=?", 1.0, 1.0)
    assert (reply.result, reply.lines) == ("OK", ("0,1,8",))
    assert port.command("ATE0", 1.0, 1.0).result == "OK"
    reply = port.command("AT+FCLASS?", 1.0, 1.0)
    assert (reply.result, reply.lines) == ("OK", ("0",))
    assert not sim.echo


def test_ring_inside_a_command_answer_is_a_ring_not_an_answer_line(
    sim: SimulatedModem, port: ATPort, port_rings: list[str]
) -> None:
    sim.interject("RING")
    reply = port.command("AT+FCLASS?", 1.0, 1.0)
    assert (reply.result, reply.lines) == ("OK", ("0",))
    assert port_rings == ["ring"]


@pytest.mark.parametrize(
    "command",
    [
        "AT+VTS={1,10}",  # outside voice mode (+FCLASS=0)
        "AT+FCLASS=8;+VTS={1,10",  # unclosed
        "AT+FCLASS=8;+VTS=1,,2",  # empty element
        "AT+FCLASS=8;+VTS={X,10}",  # not a DTMF key
        "AT+FCLASS=8;+VTS={1,256}",  # duration beyond 255
        "AT+FCLASS=8;+VTS=[100,0,10]",  # frequency below 200 Hz
        "AT+FCLASS=8;+VTS=12",  # elements need commas
        "AT+BOGUS",
        "ATE2",
        "AT+FCLASS=8;+VTS=" + ",".join(["{1,10}"] * 4),  # longer than the 40-char buffer
    ],
)
def test_modem_answers_error_as_real_modems_do(port: ATPort, command: str) -> None:
    assert port.command(command, 1.0, 1.0).result == "ERROR"


def test_modem_plays_every_vts_element_form(sim: SimulatedModem, port: ATPort) -> None:
    assert port.command("AT+FCLASS=8;+VTD=7", 1.0, 1.0).result == "OK"
    assert port.command("AT+VTS=1,{2,5},[697,1209,4],[0,0,3]", 1.0, 1.0).result == "OK"
    played = [(t.key, t.frequencies, t.ms) for t in sim.tones]
    assert played == [("1", (0, 0), 70), ("2", (0, 0), 50), (None, (697, 1209), 40),
                      (None, (0, 0), 30)]


# -- the driver on the pty modem -----------------------------------------------


def test_open_initialises_voice_mode_and_leaves_the_line_on_hook(
    sim: SimulatedModem, line: ModemLine
) -> None:
    assert sim.commands == INIT
    assert (sim.echo, sim.fclass, sim.vtd, sim.off_hook) == (False, 8, 10, False)
    assert line.hook is HookState.ON_HOOK and line.fault is None


def test_extra_init_and_27007_duration_units(sim: SimulatedModem, engine: ToneEngine) -> None:
    driver = make_line(sim, engine, init=["AT+VCID=1", "ATS0=0"], vtd_unit_ms=100)
    driver.open()
    try:
        assert sim.commands == ["ATZ", "ATE0", "AT+FCLASS=8", "AT+VTD=1", "AT+VCID=1",
                                "ATS0=0", "ATH0"]
    finally:
        driver.close()


@needs_multimon
def test_senddtmf_with_durations_and_pauses(
    sim: SimulatedModem, line: ModemLine, engine: ToneEngine
) -> None:
    line.off_hook()
    assert sim.off_hook
    line.emit(plan("1w2#", Timing(60, 50)))
    assert sim.vts_commands() == [
        "AT+VTS={1,6},[0,0,5]",
        "AT+VTS={2,6},[0,0,5],{#,6},[0,0,5]",
    ]
    assert [(t.key, t.ms) for t in sim.tones] == [
        ("1", 60), (None, 50), ("2", 60), (None, 50), ("#", 60), (None, 50)]
    # The driver kept the pause: the second command started half a second
    # after the first one's tones ended.
    assert sim.tones[2].at - (sim.tones[1].at + 0.05) >= 0.5
    assert multimon_decode(sim.render(engine), engine.settings.rate) == "12#"


@needs_multimon
def test_a_long_string_is_split_and_every_key_arrives(
    sim: SimulatedModem, line: ModemLine, engine: ToneEngine
) -> None:
    keys = "0123456789*#ABCD"
    line.off_hook()
    line.emit(plan(keys, Timing(40, 50)))
    sent = sim.vts_commands()
    assert len(sent) > 1 and all(len(c) - 2 <= 40 for c in sent)
    assert "ERROR" not in sim.commands
    assert multimon_decode(sim.render(engine), engine.settings.rate) == keys


def test_tones_on_hook_are_refused(sim: SimulatedModem, line: ModemLine) -> None:
    with pytest.raises(LineFault, match="on hook"):
        line.emit(plan("1"))
    assert sim.vts_commands() == []


def test_dial_then_hang_up(sim: SimulatedModem, line: ModemLine) -> None:
    line.place_call("555w0123", FAST)
    assert sim.commands[-1] == "ATDT555,0123" and sim.dialled == ["555,0123"]
    assert line.hook is HookState.OFF_HOOK and sim.off_hook
    line.on_hook()
    assert line.hook is HookState.ON_HOOK and not sim.off_hook


@pytest.mark.parametrize(
    ("result", "state"),
    [("BUSY", "Busy"), ("NO DIALTONE", "NoDialTone"), ("NO CARRIER", "NoAnswer"),
     ("NO ANSWER", "NoAnswer")],
)
def test_a_failed_dial_is_a_call_failure_not_a_fault(
    sim: SimulatedModem, line: ModemLine, result: str, state: str
) -> None:
    sim.dial_result = result
    with pytest.raises(CallFailed) as failed:
        line.place_call("5551234", FAST)
    assert (failed.value.dialed, failed.value.state) == ("5551234", state)
    assert line.hook is HookState.ON_HOOK and not sim.off_hook
    assert line.fault is None
    sim.dial_result = "VCON"
    line.place_call("5551234", FAST)
    assert sim.off_hook


def test_every_ring_is_reported(
    sim: SimulatedModem, line: ModemLine, rings: list[str | None]
) -> None:
    """The driver reports each RING; grouping them into calls is the call
    layer's job (test_modem_api checks one cadence makes one call)."""
    for _ in range(3):
        assert sim.ring()
    wait_until(lambda: len(rings) == 3)
    assert rings == [None, None, None]


def test_ring_in_the_middle_of_an_answer_and_dle_shielded_ring(
    sim: SimulatedModem, line: ModemLine, rings: list[str | None]
) -> None:
    sim.interject("RING")
    line.on_hook()  # ATH0 is answered RING, OK
    wait_until(lambda: len(rings) == 1)
    assert line.fault is None and sim.commands[-1] == "ATH0"
    sim._write(b"\x10R")  # V.253 voice-mode ring event, no line end
    wait_until(lambda: len(rings) == 2)


def test_no_ring_event_while_off_hook(
    sim: SimulatedModem, line: ModemLine, rings: list[str | None]
) -> None:
    line.off_hook()
    sim.interject("RING")
    line.emit(plan("5"))
    # The RING came before the OK that ended emit, on the same reader thread:
    # a ring the driver reported would have its thread started by now, and
    # once none is left running, its report would be in ``rings``.
    wait_until(lambda: not any(t.name == "modem1-ring" for t in threading.enumerate()))
    assert rings == []


def test_a_ring_handler_may_answer_from_the_ring_event(
    sim: SimulatedModem, line: ModemLine
) -> None:
    answered = threading.Event()

    def answer(caller_id: str | None) -> None:
        line.answer()
        answered.set()

    line.ring_handler = answer
    sim.ring()
    assert answered.wait(3)
    assert sim.off_hook and line.hook is HookState.OFF_HOOK


# -- faults ----------------------------------------------------------------------


def test_a_hung_modem_is_a_fault_in_bounded_time_and_the_port_is_reopened(
    sim: SimulatedModem, line: ModemLine, engine: ToneEngine
) -> None:
    line.off_hook()
    sim.hang()
    started = time.monotonic()
    with pytest.raises(ModemSilent, match="did not answer"):
        line.emit(plan("1"))
    # command_timeout_s (0.5) plus the tones' own time: the bound is the
    # contract here, not a speed figure.
    assert time.monotonic() - started < 2.0
    assert line.hook is HookState.ON_HOOK and "did not answer" in (line.fault or "")
    # Closing the port dropped DTR: the modem (&D2) hung up.
    wait_until(lambda: not sim.off_hook)
    sim.recover()
    del sim.commands[:]
    line.off_hook()
    assert sim.commands == [*INIT, "ATH1"] and line.fault is None


def test_error_from_the_modem_is_a_fault_with_the_line_put_on_hook(
    engine: ToneEngine,
) -> None:
    # A modem without [0,0,dur] silences: gaps must be timed by the driver.
    with SimulatedModem(silence_tones=False) as sim:
        driver = make_line(sim, engine)
        driver.open()
        driver.off_hook()
        with pytest.raises(LineFault, match=r'answered ERROR .* gap_mode = "driver"'):
            driver.emit(plan("1"))
        assert sim.commands[-2:] == ["AT+VTS={1,5},[0,0,5]", "ATH0"]
        assert driver.hook is HookState.ON_HOOK and not sim.off_hook
        driver.close()


@needs_multimon
def test_driver_gap_mode_works_on_a_modem_without_silences(engine: ToneEngine) -> None:
    with SimulatedModem(silence_tones=False) as sim:
        driver = make_line(sim, engine, gap_mode="driver")
        driver.open()
        driver.off_hook()
        driver.emit(plan("1123", Timing(50, 60)))
        driver.close()
        assert sim.vts_commands() == ["AT+VTS={1,5}", "AT+VTS={1,5}", "AT+VTS={2,5}",
                                      "AT+VTS={3,5}"]
        assert multimon_decode(sim.render(engine), engine.settings.rate) == "1123"


def test_an_init_string_the_modem_rejects_fails_open(
    sim: SimulatedModem, engine: ToneEngine
) -> None:
    driver = make_line(sim, engine, init=["AT+VBOGUS=1"])
    with pytest.raises(LineFault, match=r"answered ERROR to 'AT\+VBOGUS=1'"):
        driver.open()
    assert driver.hook is HookState.ON_HOOK and not sim.off_hook
    driver.close()
    driver.close()


def test_a_vanished_modem_faults_the_line_and_is_reopened_when_back(
    sim: SimulatedModem, line: ModemLine, engine: ToneEngine
) -> None:
    line.off_hook()
    sim.vanish()
    # The reader thread notices at once, before any command is tried.
    wait_until(lambda: line.fault is not None)
    assert line.hook is HookState.ON_HOOK and "gone" in (line.fault or "")
    with pytest.raises(LineFault, match="on hook"):
        line.emit(plan("1"))
    with pytest.raises(LineFault, match="cannot be opened"):
        line.off_hook()
    sim.reappear()
    del sim.commands[:]
    line.off_hook()
    line.emit(plan("7"))
    assert sim.commands == [*INIT, "ATH1", "AT+VTS={7,5},[0,0,5]"]
    assert line.fault is None


def unplug_once_playing(sim: SimulatedModem) -> threading.Thread:
    """Unplug the modem as soon as it has started playing an AT+VTS."""

    def unplug() -> None:
        wait_until(lambda: bool(sim.vts_commands()))
        sim.vanish()

    thread = threading.Thread(target=unplug, daemon=True)
    thread.start()
    return thread


def test_unplugged_in_the_middle_of_keys(sim: SimulatedModem, line: ModemLine) -> None:
    line.off_hook()
    unplugging = unplug_once_playing(sim)
    started = time.monotonic()
    with pytest.raises(LineFault, match=r"gone|on hook"):
        line.emit(plan("1234567890", Timing(200, 200)))
    # 4 s of tones were cut short: the unplug comes at the first command's
    # start and a loaded machine adds well under a second to noticing it.
    assert time.monotonic() - started < 3.0
    unplugging.join(10)
    assert line.hook is HookState.ON_HOOK


def test_on_hook_and_close_are_safe_in_any_state(sim: SimulatedModem, line: ModemLine) -> None:
    line.on_hook()  # already on hook
    line.off_hook()
    sim.hang()
    line.on_hook()  # no answer: the port is closed instead, which drops DTR
    assert line.hook is HookState.ON_HOOK and "did not answer" in (line.fault or "")
    wait_until(lambda: not sim.off_hook)
    line.close()
    line.close()


# -- sim:// as build_line assembles it ------------------------------------------


def test_the_driver_never_imports_its_simulator() -> None:
    import ast

    import gateway.lines.modem

    tree = ast.parse(Path(gateway.lines.modem.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "gateway.lines.modem_sim" not in imported


@pytest.fixture
def sim_line(tmp_path: Path) -> Iterator[BuiltLine]:
    options = ModemOptions(port="sim://", record_dir=str(tmp_path / "rec"),
                           command_timeout_s=0.5,
                           call_timing=ModemCallTiming(answer_wait_ms=0))
    built = build_line("modem", "modem1", options, ToneSettings())
    yield built
    built.driver.close()
    built.close()


def simulator_of(built: BuiltLine) -> SimulatedModem:
    assert isinstance(built.recorder, SimulatedModemRecorder)
    return built.recorder.simulator


@needs_multimon
def test_sim_url_is_a_pty_modem_beside_the_driver_and_records_each_call(
    sim_line: BuiltLine,
) -> None:
    driver, recorder, sim = sim_line.driver, sim_line.recorder, simulator_of(sim_line)
    assert isinstance(driver, ModemLine) and recorder is not None
    # The driver opens the pty like any port; it was not told it is simulated.
    assert driver.url == sim.port != "sim://" and not hasattr(driver, "simulator")
    driver.open()
    driver.place_call("123", FAST)
    recorder.begin("AbCdE")
    driver.emit(plan("0#9", FAST))
    driver.on_hook()
    recorder.end("AbCdE")
    assert decode_wav(recorder.path("AbCdE")) == "0#9"
    # Closing the driver leaves the modem there (a fault's close and reopen
    # must find it); the line's own close stops it and removes its pty.
    driver.close()
    assert not sim.off_hook and Path(sim.port).is_symlink()
    sim_line.close()
    assert not Path(sim.port).exists() and not Path(sim.port).parent.exists()
    assert not [t for t in threading.enumerate() if t.name == "modem-sim" and t.is_alive()]


@needs_multimon
def test_sim_url_fault_reopen_and_unplug_cycle(sim_line: BuiltLine) -> None:
    driver, recorder, sim = sim_line.driver, sim_line.recorder, simulator_of(sim_line)
    assert isinstance(driver, ModemLine) and recorder is not None
    driver.open()
    driver.off_hook()
    sim.hang()
    with pytest.raises(ModemSilent):
        driver.emit(plan("1"))
    # What the call layer does after a fault: close, then open on the next command.
    driver.close()
    sim.recover()
    driver.open()
    driver.place_call("5", FAST)
    recorder.begin("after")
    driver.emit(plan("42", FAST))
    sim.vanish()
    wait_until(lambda: driver.fault is not None)
    with pytest.raises(LineFault, match="on hook"):
        driver.emit(plan("1"))
    recorder.end("after")
    assert decode_wav(recorder.path("after")) == "42"
    driver.close()
    with pytest.raises(LineFault, match="cannot be opened"):
        driver.open()
    sim.reappear()
    driver.open()
    driver.off_hook()
    assert driver.fault is None and sim.off_hook


def test_sim_url_recorder_refuses_a_directory_it_cannot_use(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    options = ModemOptions(port="sim://", record_dir=str(tmp_path / "afile" / "rec"))
    built = build_line("modem", "modem1", options, ToneSettings())
    try:
        assert built.recorder is not None
        with pytest.raises(LineFault, match=r"^.* is not a directory$"):
            built.recorder.begin("x")
    finally:
        built.close()


# -- selftest (bench bring-up) ---------------------------------------------------


@needs_multimon
def test_selftest_brings_up_a_modem_line(sim: SimulatedModem, engine: ToneEngine) -> None:
    from gateway.selftest import DEFAULT_KEYS, check_line

    report = check_line(make_line(sim, engine), plan(DEFAULT_KEYS))
    assert report.passed, report.steps
    assert sim.commands[: len(INIT) + 3] == [*INIT, "ATH1", "ATH0", "ATH1"]
    assert sim.commands[-2:] == ["ATH0", "ATH0"]  # the sequence's on hook, then the closing one
    assert not sim.off_hook
    assert multimon_decode(sim.render(engine), engine.settings.rate) == DEFAULT_KEYS


def test_selftest_reports_a_hung_modem_and_leaves_it_on_hook(
    sim: SimulatedModem, engine: ToneEngine
) -> None:
    from gateway.selftest import check_line

    sim.hang()
    report = check_line(make_line(sim, engine), plan("1"))
    assert not report.passed
    assert report.steps[0].name == "open" and "did not answer 'ATZ'" in report.steps[0].detail
    assert report.steps[-1].name == "close" and report.steps[-1].ok
    assert not sim.off_hook


def test_selftest_command_on_a_sim_url_config(tmp_path: Any, capsys: Any) -> None:
    from gateway.cli import main

    config = tmp_path / "gateway.toml"
    config.write_text('[tones]\nduration_ms = 50\ngap_ms = 50\n\n'
                      '[[line]]\nname = "modem1"\ndriver = "modem"\nport = "sim://"\n')
    assert main(["selftest", "--config", str(config), "--keys", "159#"]) == 0
    out = capsys.readouterr().out
    assert "modem1: PASS" in out and "159#:" in out


def test_onhook_on_a_sim_url_line_leaves_no_simulator_behind(tmp_path: Path) -> None:
    """``onhook`` builds the driver alone and never closes what assembly
    started: the simulator's directory still goes when the process exits."""
    import os
    import subprocess
    import sys

    config = tmp_path / "gateway.toml"
    config.write_text('[[line]]\nname = "modem1"\ndriver = "modem"\nport = "sim://"\n'
                      'command_timeout_s = 0.5\n')
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-m", "gateway", "onhook", "--config", str(config)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert (done.returncode, done.stdout) == (0, "modem1: on hook\n"), done.stderr
    assert list(scratch.iterdir()) == []
