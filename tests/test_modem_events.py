"""What a voice modem hears: V.253 event reports and DTMF digits, parsed from
the wire, turned into line events, and followed by the modem line's call
set-up and its calls, against the simulated modem on a real pty.

The codes and what they mean are typed in here from V.253 and the modem
manuals (firmware-notes/voice-modem.md), not taken from the driver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import from_mapping
from gateway.detect import Dtmf, Silence, Tone, ToneEnd, Voice
from gateway.errors import CallFailed, ConfigError, LineFault
from gateway.keys import parse_keys
from gateway.lines.base import HookState
from gateway.lines.hearing import CallProgress, Disconnected, Hears, ProgressRules
from gateway.lines.modem import (
    ATProtocol,
    ModemCallTiming,
    ModemLine,
    ModemOptions,
    VoiceReports,
    vts_keys,
)
from gateway.lines.modem_sim import FarEnd, FarEvent, ScriptedFarEnds, SimulatedModem
from gateway.tones import Timing, ToneEngine, TonePlan
from tests.conftest import wait_until
from tests.support import Told

EVERY_REPORT = ["dial", "busy", "ringback", "silence", "quiet", "loop", "keys"]
FAST = Timing(50, 50)


# -- the wire: <DLE> codes out of the byte stream -----------------------------------


class Wire:
    """An ATProtocol fed bytes as pyserial's reader thread feeds them."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.results: list[str] = []
        self.rings = 0
        self.protocol = ATProtocol(self._ring, lambda exc: None, self.events.append,
                                   self.results.append)

    def _ring(self) -> None:
        self.rings += 1

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.protocol.data_received(chunk)


def test_dle_codes_come_out_of_answers_and_across_split_reads() -> None:
    wire = Wire()
    answer = wire.protocol.expect("AT+VTS={1,10}")
    # A busy report inside the OK line, and a read that ends after the <DLE>.
    wire.feed(b"\r\nO\x10bK\r", b"\n\x10", b"d")
    assert answer.result == "OK" and answer.lines == []
    assert wire.events == ["b", "d"]
    # <DLE><DLE> is a 0x10 of voice data: what follows it is no event.
    wire.feed(b"\x10\x10", b"q\x10", b"\x10\x10s")
    assert wire.events == ["b", "d", "s"]
    # A ring, shielded or as a line, is still a ring inside an answer.
    answer = wire.protocol.expect("ATH0")
    wire.feed(b"\r\nRING\r\n\x10R\r\nOK\r\n")
    assert answer.result == "OK" and wire.rings == 2 and wire.events == ["b", "d", "s"]


def test_a_result_nobody_asked_for_goes_to_on_result() -> None:
    wire = Wire()
    wire.protocol.forget()
    wire.feed(b"\r\nNO CARRIER\r\n", b"\r\nsome text\r\n")
    assert wire.results == ["NO CARRIER"]
    # With a command waiting, the same line is that command's answer.
    answer = wire.protocol.expect("AT+VTS=1")
    wire.feed(b"\r\nNO CARRIER\r\n")
    assert answer.result == "NO CARRIER" and wire.results == ["NO CARRIER"]


# -- what the codes mean ---------------------------------------------------------------


def feed(reports: VoiceReports, *codes: tuple[str, float]) -> list[object]:
    heard: list[object] = []
    for code, t in codes:
        heard += reports.code(code, t)
    return heard


def test_each_event_report_is_its_line_event() -> None:
    reports = VoiceReports(EVERY_REPORT)
    assert feed(reports, ("d", 0.5), ("b", 1.0)) == [Tone(0.5, "dial", ""), Tone(1.0, "busy", "")]
    assert feed(reports, ("s", 2.0)) == [Silence(2.0)]
    assert feed(reports, ("q", 3.0)) == [Voice(3.0), Silence(3.0)]
    assert feed(reports, ("l", 4.0)) == [Disconnected(4.0, "loop current interrupted")]
    # After ringback, silence or quiet also say the ringback has stopped, once.
    assert feed(reports, ("r", 5.0), ("r", 6.0)) == [Tone(5.0, "ringback", ""),
                                                     Tone(6.0, "ringback", "")]
    assert feed(reports, ("q", 7.0), ("s", 8.0)) == [ToneEnd(7.0, "ringback"), Voice(7.0),
                                                     Silence(7.0), Silence(8.0)]
    assert feed(reports, ("r", 9.0))[0] == Tone(9.0, "ringback", "")
    assert reports.ringback_over(9.5) == [ToneEnd(9.5, "ringback")]
    assert reports.ringback_over(9.6) == []
    # Codes of no interest here (handset, fax calling tone, underrun) are nothing.
    assert feed(reports, ("h", 10.0), ("c", 10.0), ("u", 10.0), ("X", 10.0)) == []


def test_reports_not_configured_are_ignored() -> None:
    reports = VoiceReports(["busy"])
    assert feed(reports, ("d", 1.0), ("r", 1.0), ("s", 1.0), ("q", 1.0), ("l", 1.0),
                ("5", 1.0), ("/", 1.0), ("~", 1.0)) == []
    assert feed(reports, ("b", 2.0)) == [Tone(2.0, "busy", "")]


def test_keys_alone_and_bracketed_in_every_form() -> None:
    reports = VoiceReports(["keys"])
    # <DLE>5 alone: reported at once, its length unknown.
    assert feed(reports, ("5", 1.0)) == [Dtmf(1.0, "5", 0)]
    # ... and an end mark after it (Intel outside voice receive) adds nothing.
    assert feed(reports, ("#", 2.0), ("\x7f", 2.1)) == [Dtmf(2.0, "#", 0)]
    # V.253's brackets: reported at the end, with the length between them.
    assert feed(reports, ("/", 3.0), ("7", 3.04)) == []
    assert feed(reports, ("~", 3.12)) == [Dtmf(3.0, "7", 120)]
    # The key repeated while it lasts (Intel), ended by DEL: one key.
    assert feed(reports, ("/", 4.0), ("A", 4.04), ("A", 4.14), ("A", 4.24),
                ("\x7f", 4.28)) == [Dtmf(4.0, "A", 280)]
    # An end lost: the next key's start closes it; a bracket with no key is nothing.
    assert feed(reports, ("/", 5.0), ("1", 5.04), ("/", 5.5), ("2", 5.54), ("~", 5.6)) == [
        Dtmf(5.0, "1", 500), Dtmf(5.5, "2", 100)]
    assert feed(reports, ("/", 6.0), ("~", 6.1)) == []
    # Another key inside one bracket: the first ends where the second starts.
    assert feed(reports, ("/", 7.0), ("3", 7.04), ("4", 7.2), ("~", 7.3)) == [
        Dtmf(7.0, "3", 200), Dtmf(7.2, "4", 100)]


def test_the_gateways_own_keys_are_not_the_far_ends() -> None:
    reports = VoiceReports(["keys"])
    reports.own_keys("12", start=10.0, end=10.4)
    # Its own keys, reported while they sound or just after: echo.
    assert feed(reports, ("1", 10.05), ("/", 10.25), ("2", 10.29), ("~", 10.4)) == []
    assert feed(reports, ("2", 10.65)) == []
    # Another key at the same moment, or the same key well after, is the far end.
    assert feed(reports, ("9", 10.1)) == [Dtmf(10.1, "9", 0)]
    assert feed(reports, ("1", 11.0)) == [Dtmf(11.0, "1", 0)]
    # A window whose end is not yet known (a dial still running) lasts until it is.
    dialling = reports.own_keys("5", start=20.0)
    assert feed(reports, ("5", 40.0)) == []
    dialling.end = 41.0
    assert feed(reports, ("5", 42.0)) == [Dtmf(42.0, "5", 0)]
    reports.reset()
    assert feed(reports, ("2", 10.1)) == [Dtmf(10.1, "2", 0)]


def test_results_on_their_own_are_the_call_dropped() -> None:
    reports = VoiceReports([])
    assert reports.result("NO CARRIER", 5.0, setting_up=False) == [
        Disconnected(5.0, "the modem said NO CARRIER")]
    assert reports.result("BUSY", 5.0, setting_up=False) == [
        Disconnected(5.0, "the modem said BUSY")]
    # While a call is being set up a BUSY is the busy tone it means: 402 Busy.
    assert reports.result("BUSY", 5.0, setting_up=True) == [Tone(5.0, "busy", "")]
    assert reports.result("OK", 5.0, setting_up=False) == []


def test_vts_keys_are_the_keys_of_a_command_line() -> None:
    assert vts_keys("AT+VTS={1,6},[0,0,6],{#,10},[0,0,255],{!,50},{D,4}") == "1#D"


# -- the set-up's fixed wait for a modem that reports nothing --------------------------


def test_with_nothing_heard_the_call_counts_as_answered_after_assume_answer_s() -> None:
    rules = ProgressRules(expect_dial_tone=False, no_answer_s=10.0, echo_s=0.0,
                          assume_answer_s=1.0)
    quiet = CallProgress("1", rules, 0.0)
    quiet.heard([], 0.5)
    quiet.dialled()
    quiet.heard([], 1.4)
    with pytest.raises(LineFault):  # not yet: nothing decided, so the short wait runs out
        quiet.wait_answer(0.05)
    quiet.heard([], 1.5)
    assert quiet.wait_answer(1) == 1.5
    # Ringback heard: no assuming; it rings until it is answered or no_answer_s.
    ringing = CallProgress("1", rules, 0.0)
    ringing.heard([Tone(0.2, "ringback", "")], 0.5)
    ringing.dialled()
    ringing.heard([], 10.4)
    with pytest.raises(LineFault):
        ringing.wait_answer(0.05)
    ringing.heard([], 10.6)
    with pytest.raises(CallFailed, match="no answer"):
        ringing.wait_answer(1)
    # Busy within the wait is still busy.
    busy = CallProgress("1", rules, 0.0)
    busy.dialled()
    busy.heard([Tone(0.3, "busy", "")], 2.0)
    with pytest.raises(CallFailed) as failed:
        busy.wait_answer(1)
    assert failed.value.state == "Busy"
    # Without the rule, nothing heard is never an answer.
    never = CallProgress("1", ProgressRules(expect_dial_tone=False, no_answer_s=3.0), 0.0)
    never.dialled()
    never.heard([], 3.1)
    with pytest.raises(CallFailed, match="no answer"):
        never.wait_answer(1)


# -- configuration -----------------------------------------------------------------------


def test_reports_are_configured_by_name() -> None:
    line = {"name": "m", "driver": "modem", "port": "/dev/ttyACM0"}
    (default,) = from_mapping({"line": [line]}).lines
    assert sorted(default.options.reports) == ["busy", "dial", "keys", "loop", "quiet",
                                               "silence"]
    with pytest.raises(ConfigError, match=r"^line\[0\]\.reports: 'ring' is not one of dial, "):
        from_mapping({"line": [{**line, "reports": ["busy", "ring"]}]})
    with pytest.raises(ConfigError, match=r"reports: each report is named once"):
        from_mapping({"line": [{**line, "reports": ["busy", "busy"]}]})
    engine = ToneEngine()
    every = ModemLine("m", ModemOptions(reports=EVERY_REPORT), engine)
    assert every.hears == Hears.TONES | Hears.VOICE | Hears.KEYS | Hears.LOOP
    assert ModemLine("m", ModemOptions(reports=["keys"]), engine).hears == Hears.KEYS
    deaf = ModemLine("m", ModemOptions(reports=[]), engine)
    assert deaf.ears is None and deaf.hears == Hears.NOTHING


# -- the driver against the simulated modem -------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatedModem]:
    with SimulatedModem() as modem:
        yield modem


def open_line(sim: SimulatedModem, answer_wait_ms: int = 300, **options: Any
              ) -> tuple[ModemLine, Told]:
    settings: dict[str, Any] = {
        "port": sim.port, "command_timeout_s": 0.5, "reset_timeout_s": 0.5,
        "reports": EVERY_REPORT, "call_timing": ModemCallTiming(answer_wait_ms=answer_wait_ms),
        **options}
    line = ModemLine("modem1", ModemOptions(**settings), ToneEngine())
    told = Told(faults_fail=True)
    assert line.ears is not None
    line.ears.handler = told
    line.open()
    return line, told


@pytest.fixture
def modem(sim: SimulatedModem) -> Iterator[tuple[ModemLine, Told]]:
    line, told = open_line(sim)
    yield line, told
    line.close()


def far(sim: SimulatedModem, number: str, result: str = "OK", result_at: float = 0.05,
        *events: tuple[float, str] | FarEvent) -> None:
    timeline = tuple(e if isinstance(e, FarEvent) else FarEvent(*e) for e in events)
    ends = sim.far_end.numbers if isinstance(sim.far_end, ScriptedFarEnds) else {}
    sim.far_end = ScriptedFarEnds({**ends, number: FarEnd(result, result_at, timeline)})


# Where a far end rings, its first ringback comes during the dial: the
# simulator writes it before the dial's result, so the set-up is ringing
# before answer_wait_ms could start to count, however late threads run.


def sent(sim: SimulatedModem, data: bytes) -> float:
    """When the simulator sent ``data`` (time.monotonic())."""
    return next(at for at, what in sim.reports if what == data)


def test_ringback_then_quiet_is_the_answer(sim: SimulatedModem,
                                           modem: tuple[ModemLine, Told]) -> None:
    line, told = modem
    far(sim, "100", "OK", 0.3, (0.1, "ringback"), (0.5, "ringback"), (0.9, "quiet"))
    line.place_call("100", FAST)
    returned = time.monotonic()
    assert told.rang.is_set() and line.hook is HookState.OFF_HOOK and sim.off_hook
    # Ringing outlasted answer_wait_ms; the answer is the quiet, confirmed
    # when ProgressRules.confirm_s (2 s) passed with no busy after it.
    assert returned - sent(sim, b"\x10q") >= 2.0


def test_a_connected_result_after_ringback_is_the_answer(
        sim: SimulatedModem, modem: tuple[ModemLine, Told]) -> None:
    line, told = modem
    # A modem that reports ringback while it dials and says VCON when it stops.
    far(sim, "200", "VCON", 0.8, (0.2, "ringback"), (0.5, "ringback"))
    started = time.monotonic()
    line.place_call("200", FAST)
    assert told.rang.is_set() and time.monotonic() - started >= 0.8 + 2.0


def test_a_modem_that_reports_nothing_connects_after_answer_wait(
        sim: SimulatedModem, modem: tuple[ModemLine, Told]) -> None:
    line, told = modem
    started = time.monotonic()
    line.place_call("300", FAST)
    # The dial takes the simulator's 50 ms, then answer_wait_ms (300 ms).
    assert time.monotonic() - started >= 0.35
    assert not told.rang.is_set() and sim.off_hook


@pytest.mark.parametrize("how", ["busy report", "busy result"])
def test_busy_after_the_dial_fails_the_call_and_the_line_goes_on_hook(
        sim: SimulatedModem, modem: tuple[ModemLine, Told], how: str) -> None:
    line, told = modem
    busy: tuple[float, str] = (0.6, "busy") if how == "busy report" else (0.6, "BUSY")
    far(sim, "400", "OK", 0.3, (0.1, "ringback"), busy)
    with pytest.raises(CallFailed) as failed:
        line.place_call("400", FAST)
    assert failed.value.state == "Busy" and told.rang.is_set()
    assert line.hook is HookState.ON_HOOK and line.fault is None
    wait_until(lambda: not sim.off_hook)


def test_ringing_for_longer_than_ring_time_is_no_answer(
        sim: SimulatedModem, modem: tuple[ModemLine, Told]) -> None:
    line, told = modem
    far(sim, "500", "OK", 0.3, *[(0.1 + 0.4 * n, "ringback") for n in range(20)])
    started = time.monotonic()
    with pytest.raises(CallFailed) as failed:
        line.place_call("500", FAST, no_answer_s=1.5)
    assert failed.value.state == "NoAnswer" and told.rang.is_set()
    assert time.monotonic() - started >= 1.5
    assert line.hook is HookState.ON_HOOK
    wait_until(lambda: not sim.off_hook)


def test_a_hang_up_during_the_set_up_ends_it_at_once(
        sim: SimulatedModem, modem: tuple[ModemLine, Told]) -> None:
    from gateway.errors import LineInterrupted

    line, told = modem
    far(sim, "600", "OK", 0.3, *[(0.1 + 0.4 * n, "ringback") for n in range(50)])
    failed: list[BaseException] = []

    def dial() -> None:
        try:
            line.place_call("600", FAST)
        except BaseException as exc:
            failed.append(exc)

    dialling = threading.Thread(target=dial)
    dialling.start()
    assert told.rang.wait(5)
    line.on_hook()
    dialling.join(3)
    assert not dialling.is_alive() and isinstance(failed[0], LineInterrupted)
    wait_until(lambda: not sim.off_hook)


@pytest.mark.parametrize(("what", "reason"), [
    ("busy", "busy tone"), ("dial", "dial tone"), ("loop", "loop current interrupted"),
    ("NO CARRIER", "the modem said NO CARRIER"), ("BUSY", "the modem said BUSY")])
def test_the_far_end_leaving_during_the_call(
        sim: SimulatedModem, modem: tuple[ModemLine, Told], what: str, reason: str) -> None:
    line, told = modem
    line.place_call("700", FAST)
    assert told.left == []
    sim.hear(FarEvent(0.0, what))
    wait_until(lambda: bool(told.left))
    assert told.left == [reason]


@pytest.mark.parametrize("form", ["plain", "bracketed"])
def test_far_end_keys_in_either_form_and_never_our_own(
        sim: SimulatedModem, modem: tuple[ModemLine, Told], form: str) -> None:
    line, told = modem
    sim.dtmf_form = form
    sim.hears_own_keys = True
    far(sim, "800", "VCON", 0.05)
    line.place_call("800", FAST)
    line.emit(TonePlan(parse_keys("123"), Timing(80, 80)))
    # The modem heard (and reported) all three of our own keys ...
    assert [what[-2:] for _, what in sim.reports if what[-2:-1] == b"\x10"
            and what[-1:] in b"123"] == [b"\x101", b"\x102", b"\x103"]
    sim.hear(FarEvent(0.0, "4", 300), FarEvent(0.6, "#", 500))
    wait_until(lambda: len(told.keys) == 2)
    # ... and only the far end's are the line's.
    assert [key for key, _ in told.keys] == ["4", "#"]
    if form == "bracketed":
        # From <DLE>/ (40 ms into the key) to <DLE>~ at its end: 260 and
        # 460 ms. The simulator's timeline thread and the driver's reader
        # may each be late by tens of ms on a loaded machine; a length taken
        # from anything but the brackets (0 ms, or the other key) is far off.
        assert [abs(ms - expected) <= 100 for (_, ms), expected in zip(
            told.keys, (260, 460), strict=True)] == [True, True]
    else:
        assert [ms for _, ms in told.keys] == [0, 0]


def test_keys_are_heard_in_an_answered_incoming_call(
        sim: SimulatedModem, modem: tuple[ModemLine, Told]) -> None:
    line, told = modem
    line.answer()
    sim.hear(FarEvent(0.1, "9"), FarEvent(0.3, "loop"))
    wait_until(lambda: bool(told.left))
    assert told.keys == [("9", 0)] and told.left == ["loop current interrupted"]


def test_nothing_is_heard_on_hook(sim: SimulatedModem, modem: tuple[ModemLine, Told]) -> None:
    line, told = modem
    line.place_call("900", FAST)
    line.on_hook()
    # A key and a busy on the wire while on hook; the OK of another ATH0
    # comes after them, so once it is in they have been read (and dropped).
    sim._write(b"\x106\x10b")
    line.on_hook()
    line.off_hook()
    sim.hear(FarEvent(0.0, "7"))
    wait_until(lambda: bool(told.keys))
    assert told.keys == [("7", 0)] and told.left == []


def test_a_modem_that_reports_no_tones_keeps_the_fixed_wait_and_still_hears_the_call(
        sim: SimulatedModem) -> None:
    line, told = open_line(sim, answer_wait_ms=300, reports=["keys", "loop"])
    try:
        assert line.hears == Hears.KEYS | Hears.LOOP
        # Ringback it does not report means nothing: answered after the fixed wait.
        far(sim, "110", "VCON", 0.05, *[(0.1 + 0.4 * n, "ringback") for n in range(5)])
        started = time.monotonic()
        line.place_call("110", FAST)
        assert time.monotonic() - started >= 0.35 and not told.rang.is_set()
        sim.hear(FarEvent(0.0, "3"), FarEvent(0.3, "loop"))
        wait_until(lambda: bool(told.left))
        assert told.keys == [("3", 0)] and told.left == ["loop current interrupted"]
    finally:
        line.close()
