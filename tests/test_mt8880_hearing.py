"""The MT8880 line hears: call progress from the IRQ/CP pin's edges, the far
end's keys from the receiver, and the simulated chip that makes both from
the line's audio.

Cadences and levels are typed in here (ITU-T E.180 Supplement 2, the MT8880C
data sheet), never read from the code under test; the far end's audio is
made by sox. Bus cycles are decoded from the pins' own histories by the
logic analyser of tests/test_mt8880.py, and the expected codes come from the
data sheet's table as the simulator holds it.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from gateway.detect import Silence, Tone, ToneEnd, Voice
from gateway.keys import parse_keys
from gateway.lines.base import HookState
from gateway.lines.hearing import LineEvent, LoopBreak
from gateway.lines.mt8880 import MT8880Options
from gateway.lines.mt8880_hearing import EdgeProgress
from gateway.lines.mt8880_sim import CODES, CRA, MT8880Simulator, RecordedFarEnd, Status
from gateway.tones import Timing, TonePlan
from tests.conftest import wait_until
from tests.sox_signals import Pcm, cadence, keys, needs_espeak, needs_sox, resample, speech, synth
from tests.support import Told
from tests.test_mt8880 import Analyser, Rig, Wires, make_rig  # noqa: F401  (a fixture)

pytestmark = needs_sox

IRQ = 23


# -- call progress from edges, on typed-in edge times ---------------------------------------


def edges_of(pattern_ms: Sequence[int], seconds: float, hz: float = 425.0,
             start: float = 0.0) -> list[float]:
    """Falling edges of IRQ/CP for a tone of ``pattern_ms`` (on, off, ...) from ``start``."""
    out: list[float] = []
    t, i = start, 0
    while t < start + seconds:
        ms = pattern_ms[i % len(pattern_ms)] / 1000 if pattern_ms else seconds
        if i % 2 == 0:
            out += np.arange(t, min(t + ms, start + seconds), 1 / hz).tolist()
        t += ms
        i += 1
    return out


def heard(country: str, edges: Sequence[float], seconds: float,
          tick: float = 0.02) -> list[tuple[float, LineEvent]]:
    """(when reported, event) as the hearing thread would feed them, a tick at a time."""
    progress = EdgeProgress(country)
    edges = sorted(edges)
    out, j = [], 0
    for now in np.arange(tick, seconds, tick).tolist():
        chunk = []
        while j < len(edges) and edges[j] <= now:
            chunk.append(edges[j])
            j += 1
        out += [(now, e) for e in progress.feed(chunk, now)]
    return out


# E.180 Supplement 2, typed in: (country, tone, cadence in ms).
CADENCES = [
    ("us", "ringback", (2000, 4000)), ("us", "busy", (500, 500)),
    ("us", "congestion", (250, 250)), ("uk", "ringback", (400, 200, 400, 2000)),
    ("uk", "busy", (375, 375)), ("uk", "congestion", (400, 350, 225, 525)),
    ("de", "ringback", (1000, 4000)), ("de", "busy", (480, 480)),
    ("de", "congestion", (240, 240)), ("es", "busy", (200, 200)),
    ("es", "congestion", (200, 200, 200, 200, 200, 600)), ("it", "dial", (200, 200, 600, 1000)),
    ("jp", "busy", (500, 500)),
]


@pytest.mark.parametrize(("country", "tone", "pattern"), CADENCES)
def test_each_cadence_is_recognised_from_edges_alone(country: str, tone: str,
                                                    pattern: tuple[int, ...]) -> None:
    events = heard(country, edges_of(pattern, 12.0), 12.0)
    tones = [e for _, e in events if isinstance(e, Tone)]
    assert [t.tone for t in tones] == [tone], events
    assert tones[0].t == pytest.approx(0.0, abs=0.01)
    assert not [e for _, e in events if isinstance(e, Voice)]


def test_a_continuous_tone_once_it_outlasts_every_cadenced_burst() -> None:
    # de: ringback's 1000 ms burst, +20 % +40 ms, is the longest anything
    # cadenced may last; a steadier burst is dial tone, dated from its start.
    events = heard("de", edges_of((), 3.0, start=0.3), 4.0)
    (when, dial), (end_when, end) = [(w, e) for w, e in events if isinstance(e, Tone | ToneEnd)]
    assert dial == Tone(pytest.approx(0.3, abs=0.01), "dial", "de")
    assert 0.3 + 1.24 <= when <= 0.3 + 1.24 + 0.1
    assert end == ToneEnd(pytest.approx(3.3, abs=0.01), "dial")
    assert end_when == pytest.approx(3.3 + 0.1, abs=0.05)  # the bridge, then the gap counts


def test_ringback_that_stops_ends_when_its_gap_runs_out_then_silence() -> None:
    # uk ringback, two cycles, then nothing: the end is the last burst's end,
    # known once the 2 s gap has outgrown its tolerance.
    events = heard("uk", edges_of((400, 200, 400, 2000), 6.0), 10.0)
    ends = [(w, e) for w, e in events if isinstance(e, ToneEnd)]
    assert [e for _, e in ends] == [ToneEnd(pytest.approx(4.0, abs=0.01), "ringback")]
    assert ends[0][0] == pytest.approx(4.0 + 2.0 * 1.2 + 0.04, abs=0.05)
    assert [e for _, e in events if isinstance(e, Silence)] == [
        Silence(pytest.approx(4.0, abs=0.01))]


def test_gaps_shorter_than_the_bridge_do_not_split_a_burst() -> None:
    # 30 ms holes every 62 ms (a 16 Hz modulation deep enough to silence the
    # comparator) inside jp's 500/500 busy.
    edges = [t for t in edges_of((500, 500), 6.0, hz=400.0) if (t % 0.0625) > 0.03]
    assert [e.tone for _, e in heard("jp", edges, 6.0) if isinstance(e, Tone)] == ["busy"]


def test_energy_no_cadence_explains_is_voice_and_quiet_is_silence() -> None:
    # Speech-like: syllables and words of uneven length (on, off in seconds).
    edges, t = [], 0.6
    for on, off in [(0.6, 0.15), (0.9, 0.12), (0.1, 0.5), (1.3, 0.2), (0.2, 0.2), (0.7, 0.3)]:
        edges += np.arange(t, t + on, 1 / 300).tolist()
        t += on + off
    events = [e for _, e in heard("us", edges, 7.0)]
    assert events[0] == Silence(0.0)  # nothing heard for 0.5 s from the start
    voices = [e for e in events if isinstance(e, Voice)]
    assert voices and 0.6 <= voices[0].t < 2.0
    # Nothing of it is a tone that would end a call's set-up.
    assert not [e for e in events if isinstance(e, Tone) and e.tone != "dial"]
    assert isinstance(events[-1], Silence) and events[-1].t == pytest.approx(t - 0.3, abs=0.01)


# -- the simulated chip's call-progress output and receiver, on sox audio ----------------------


@pytest.fixture
def bench() -> Iterator[tuple[MT8880Simulator, Wires, Any]]:
    """A simulated chip driven by hand on mock pins, IRQ/CP pulled up as wired."""
    factory = MockFactory()
    options = MT8880Options(irq_pin=IRQ)
    sim = MT8880Simulator.for_options(factory, options, power_up_s=0.0)
    irq = factory.pin(IRQ)
    irq.input_with_pull("up")
    bus = Wires(factory, options)
    bus.initialise()
    yield sim, bus, irq
    sim.close()
    sim.check()


def falling_edges(irq: Any, since: float) -> list[float]:
    """IRQ/CP's falling edges from the pin's own history (times since ``since``)."""
    t, out, level = since, [], True
    for state in irq.states:
        t += state.timestamp
        if level and not state.state:
            out.append(t - since)
        level = bool(state.state)
    return out


def bursts(edges: list[float], gap: float = 0.1) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for t in edges:
        if out and t - out[-1][1] <= gap:
            out[-1][1] = t
        else:
            out.append([t, t])
    return [(a, b) for a, b in out]


def play(sim: MT8880Simulator, audio: Pcm) -> RecordedFarEnd:
    far = RecordedFarEnd(audio)
    sim.connect_line(lambda: far)
    return far


def played(far: RecordedFarEnd, seconds: float) -> Callable[[], bool]:
    return lambda: far.played >= seconds * 8000


def test_cp_mode_puts_the_busy_cadence_on_irq_cp(
        bench: tuple[MT8880Simulator, Wires, Any]) -> None:
    sim, bus, irq = bench
    bus.write(1, int(CRA.CP | CRA.IRQ))
    irq.clear_states()
    since = time.monotonic()
    far = play(sim, synth(cadence((480.0, 620.0), (500, 500), 4.0)))
    wait_until(played(far, 4.2))
    found = bursts(falling_edges(irq, since))
    assert len(found) == 4
    # The chip's output follows the far end's cadence. Each edge is stamped
    # when the simulator drove it, every 10 ms or later on a loaded machine,
    # and the band filter's 50 ms window blurs each end: the median of four
    # bursts and periods within 60 ms of the tone's own catches a wrong
    # cadence (congestion's 250 ms) and survives one late wake-up.
    assert statistics.median(b - a for a, b in found) == pytest.approx(0.5, abs=0.06)
    periods = [b[0] - a[0] for a, b in itertools.pairwise(found)]
    assert statistics.median(periods) == pytest.approx(1.0, abs=0.06)
    # The wave is the tone's own: 480 Hz passes the band, 620 Hz does not.
    on = sum(b - a for a, b in found)
    assert len(falling_edges(irq, since)) / on == pytest.approx(480, rel=0.1)
    assert not sim.status & Status.RDRF


@pytest.mark.parametrize(("hz", "dbm0", "passes"), [
    (320.0, -25.0, True), (425.0, -25.0, True), (490.0, -25.0, True),
    (280.0, -25.0, False), (560.0, -25.0, False), (697.0, -10.0, False),
    (425.0, -35.0, False)])
def test_cp_band_and_level_are_the_datasheets(bench: tuple[MT8880Simulator, Wires, Any],
                                              hz: float, dbm0: float, passes: bool) -> None:
    # Accept 310-500 Hz at -25 dBm, reject 290 Hz and 540 Hz, detect from -30
    # dBm (as the notes quote the data sheet; verify on a chip).
    sim, bus, irq = bench
    bus.write(1, int(CRA.CP | CRA.IRQ))
    irq.clear_states()
    since = time.monotonic()
    far = play(sim, synth([(1.0, [(hz, dbm0)])]))
    wait_until(played(far, 1.1))
    count = len(falling_edges(irq, since))
    if passes:
        assert count == pytest.approx(hz, rel=0.15)
    else:
        assert count < hz * 0.05  # at most the clicks of the tone's hard start and end


def test_cp_mode_needs_irq_and_decodes_no_dtmf(bench: tuple[MT8880Simulator, Wires, Any]
                                              ) -> None:
    sim, bus, irq = bench
    bus.write(1, int(CRA.CP))  # IRQ not enabled: the data sheet gives no output
    irq.clear_states()
    far = play(sim, synth([(0.5, [(425.0, -10.0)]), *keys("123", 0.1, 0.1)]))
    wait_until(played(far, 1.5))
    assert falling_edges(irq, 0.0) == []
    assert sim.registered == [] and not sim.status & Status.RDRF


def test_receiver_registers_the_far_ends_keys_in_order(
        bench: tuple[MT8880Simulator, Wires, Any]) -> None:
    sim, bus, irq = bench
    bus.write(1, int(CRA.IRQ))
    every = "0123456789*#ABCD"
    far = play(sim, synth(keys(every, 0.05, 0.05, level=-20.0)))
    wait_until(lambda: len(sim.registered) == 16)
    assert "".join(k for _, k in sim.registered) == every
    # The last key waits in the receive data register: RDRF and IRQ (the pin
    # low) until read; the status read releases IRQ, the RX read clears RDRF
    # and gives the data sheet's code.
    wait_until(played(far, 2.0))
    assert not irq.state
    assert Status(bus.read(1)) & Status.RDRF
    assert irq.state
    assert bus.read(0) == CODES["D"]
    assert not Status(bus.read(1)) & Status.RDRF


@pytest.mark.parametrize(("on_ms", "off_ms", "dbm0", "expected"), [
    (40, 100, -10.0, "55"),  # Q.24: 40 ms tones register ...
    (20, 100, -10.0, ""),  # ... 20 ms never
    (60, 40, -10.0, "55"),  # a 40 ms pause parts two keys
    (60, 15, -10.0, "5"),  # a dropout shorter than the pause guard does not
    (80, 80, -27.0, "55"),  # the data sheet's -29 dBm per tone and up ...
    (80, 80, -32.0, ""),  # ... and below it, nothing
])
def test_receiver_guard_times_and_levels(bench: tuple[MT8880Simulator, Wires, Any], on_ms: int,
                                         off_ms: int, dbm0: float, expected: str) -> None:
    sim, bus, _ = bench
    bus.write(1, int(CRA.IRQ))
    far = play(sim, synth(keys("55", on_ms / 1000, off_ms / 1000, level=dbm0)))
    wait_until(played(far, 0.7))
    assert "".join(k for _, k in sim.registered) == expected


def test_delayed_steering_is_high_while_the_key_lasts(
        bench: tuple[MT8880Simulator, Wires, Any]) -> None:
    sim, bus, _ = bench
    bus.write(1, int(CRA.IRQ))
    far = play(sim, synth(keys("9", 0.5, 0.5, lead_s=0.2)))
    wait_until(lambda: bool(sim.registered))
    assert Status(bus.read(1)) & Status.DSTEER
    wait_until(played(far, 0.9))  # the key has ended, its pause validated
    assert not Status(bus.read(1)) & Status.DSTEER


@needs_espeak
def test_speech_makes_no_keys(bench: tuple[MT8880Simulator, Wires, Any]) -> None:
    sim, bus, _ = bench
    bus.write(1, int(CRA.IRQ))
    pcm, rate = speech("Hello, you have reached the accounts department. "
                       "Please hold while we connect you, thank you.", "en")
    far = play(sim, resample(pcm, rate, 8000))
    wait_until(lambda: far.played >= len(far.samples), timeout=30)
    assert sim.registered == []


# -- the driver: the receive path on the bus, keys to the ears, our own keys marked ------------


@pytest.fixture
def listening(request: pytest.FixtureRequest) -> Callable[..., tuple[Rig, Told]]:
    """Rigs of tests/test_mt8880.py (closed and checked after the test) that listen."""
    rigs: Callable[..., Rig] = request.getfixturevalue("make_rig")

    def make(**overrides: Any) -> tuple[Rig, Told]:
        rig = rigs(listen=True, **overrides)
        handler = Told()
        assert rig.line.ears is not None
        rig.line.ears.handler = handler
        return rig, handler

    return make


def cra_writes(sim: MT8880Simulator, since: int = 0) -> list[int]:
    return [c.value for c in list(sim.cycles)[since:] if c.register == "CRA"]


@pytest.mark.parametrize("irq", [None, IRQ])
def test_a_far_end_key_is_read_as_the_datasheets_bus_cycle_says(
        listening: Callable[..., tuple[Rig, Told]], irq: int | None) -> None:
    rig, handler = listening(irq_pin=irq, setup_us=200, strobe_us=200, hold_us=200)
    play(rig.sim, synth(keys("7", 0.1, 0.2, lead_s=0.5)))
    rig.line.open()
    analyser = Analyser(rig.factory, rig.options)
    analyser.start()
    rig.line.answer()  # off hook, and the call is up: DTMF mode even with IRQ/CP wired
    wait_until(lambda: bool(handler.keys))
    cycles = analyser.cycles()
    # A status read with RDRF, then at once the receive data register (RS0
    # low, R/W high), which gives the key's code from the data sheet's table.
    i = next(i for i, (op, rs0, value) in enumerate(cycles)
             if (op, rs0) == ("R", 1) and value & Status.RDRF)
    assert cycles[i + 1] == ("R", 0, CODES["7"])
    assert all(c.sampled for c in rig.sim.cycles if not c.write)
    assert handler.keys[0][0] == "7"
    # Its length from the delayed-steering flag: 100 ms, as read every
    # listen_poll_ms (10 ms) or on IRQ on a loaded machine: within 40 ms
    # short and 100 ms long, which still tells it from a stuck or missing flag.
    assert 60 <= handler.keys[0][1] <= 200


@pytest.mark.parametrize("burst", [False, True])
def test_our_own_keys_heard_back_are_not_the_far_ends(
        listening: Callable[..., tuple[Rig, Told]], burst: bool) -> None:
    rig, handler = listening(burst=burst)
    # The far end presses 4 once our keys are done.
    far = play(rig.sim, synth([(1.6, []), *keys("4", 0.1, 0.1, lead_s=0.0)]))
    rig.line.open()
    rig.line.off_hook()
    rig.line.emit(TonePlan(parse_keys("123"), Timing(80, 80)))
    wait_until(lambda: bool(handler.keys))
    wait_until(played(far, 2.0))
    # The chip did hear its own keys through the hybrid, and the driver knew them.
    assert "".join(k for _, k in rig.sim.registered) == "1234"
    assert [k for k, _ in handler.keys] == ["4"]
    # In burst mode every burst's status reads take each echo off the chip;
    # in non-burst mode nothing reads the chip during a string of tones, and
    # the receive register keeps only the last.
    assert rig.line.echoes == (3 if burst else 1)


def test_receiving_never_runs_during_a_tone(listening: Callable[..., tuple[Rig, Told]]
                                           ) -> None:
    # The hearing thread polls every 10 ms; none of its reads may fall between
    # a tone's TOUT on and off (its timing is the driver's promise).
    rig, _ = listening()
    rig.line.open()
    rig.line.off_hook()
    wait_until(lambda: any(c.register == "STATUS" for c in rig.sim.cycles))
    before = len(rig.sim.cycles)
    rig.line.emit(TonePlan(parse_keys("1234567890"), Timing(60, 60)))
    tone_on = False
    for c in list(rig.sim.cycles)[before:]:
        if c.register == "CRA":
            tone_on = bool(c.value & CRA.TOUT)
        assert not (tone_on and c.register == "STATUS"), "a status read inside a tone"


def test_a_stuck_rdrf_is_a_fault_not_a_stream_of_keys(
        listening: Callable[..., tuple[Rig, Told]]) -> None:
    from gateway.lines.mt8880_sim import Fault

    rig, handler = listening()
    rig.line.open()
    rig.line.off_hook()
    rig.sim.set_fault(Fault.STUCK_STATUS, int(Status.RDRF))
    wait_until(lambda: bool(handler.faults))
    assert "RDRF stuck" in str(handler.faults[0])
    assert len(handler.keys) <= 1


def test_loop_current_break_reaches_the_ears_in_line_time(
        listening: Callable[..., tuple[Rig, Told]]) -> None:
    rig, handler = listening()
    rig.line.open()
    rig.line.off_hook()
    ears = rig.line.ears
    assert ears is not None
    ears.talking()
    rig.line.loop_break(LoopBreak(1.5, 400))
    assert handler.left == ["loop current broke for 400 ms"]


# -- the driver in call-progress mode: a call's set-up ---------------------------------------


class Exchange:
    """A far end that behaves as an exchange does, from sox clips: ``dial`` (looped)
    until our first digit sounds, silence until our digits are done, then
    ``after`` once, then silence. Our digits are read off the simulated chip's TONE."""

    def __init__(self, sim: MT8880Simulator, dial: Pcm | None, after: Pcm) -> None:
        self.sim, self.dial, self.after = sim, dial, after
        self.opened = time.monotonic()
        self.phase = "dial" if dial is not None else "dialling"
        self.pos = 0
        self.after_started: float | None = None

    def __call__(self, n: int) -> Pcm:
        ours = self.sim.tone_segments(self.opened, line_only=True)
        now = time.monotonic()
        if self.phase == "dial" and ours:
            self.phase = "dialling"
        if self.phase == "dialling" and ours and now - max(s.end for s in ours) > 0.3:
            self.phase, self.pos, self.after_started = "after", 0, now
        if self.phase == "dial":
            assert self.dial is not None
            idx = (self.pos + np.arange(n)) % len(self.dial)
            self.pos += n
            return self.dial[idx]
        if self.phase == "after":
            out = self.after[self.pos: self.pos + n]
            self.pos += n
            return np.concatenate([out, np.zeros(n - len(out), dtype=np.int16)])
        return np.zeros(n, dtype=np.int16)


UK_DIAL = [(2.0, [(350.0, -16.0), (440.0, -16.0)])]
UK_RINGBACK = (400, 200, 400, 2000)


def test_a_call_set_up_heard_in_call_progress_mode(
        listening: Callable[..., tuple[Rig, Told]]) -> None:
    rig, handler = listening(irq_pin=IRQ, country="uk")
    exchange: list[Exchange] = []

    def open_far_end() -> Exchange:
        exchange.append(Exchange(rig.sim, synth(UK_DIAL),
                                 synth(cadence((400.0, 450.0), UK_RINGBACK, 6.0))))
        return exchange[0]

    rig.sim.connect_line(open_far_end)
    rig.line.open()
    before = len(rig.sim.cycles)
    seen: list[LineEvent] = []
    ears = rig.line.ears
    assert ears is not None
    real = ears.heard

    def spy(events: Sequence[LineEvent], now: float | None = None) -> None:
        seen.extend(events)
        real(events, now)

    ears.heard = spy  # type: ignore[method-assign]
    rig.line.place_call("12", Timing(80, 80))
    # Answered: ringback rang (the handler was told) and stopped two cycles in.
    assert handler.rang.is_set()
    names = [(type(e).__name__, getattr(e, "tone", "")) for e in seen
             if isinstance(e, Tone | ToneEnd)]
    assert ("Tone", "dial") in names and ("Tone", "ringback") in names
    assert names[-1] == ("ToneEnd", "ringback")
    end = next(e for e in reversed(seen) if isinstance(e, ToneEnd))
    assert exchange[0].after_started is not None
    # The last ringback burst ends 4.0 s into the clip (line time: from off hook).
    clip_at = exchange[0].after_started - exchange[0].opened
    assert end.t == pytest.approx(clip_at + 4.0, abs=0.15)
    # The modes, as the control register was written: CP at off hook, DTMF
    # to dial, CP again after the digits, DTMF once the call is up.
    resting = [v for v in cra_writes(rig.sim, before) if not v & CRA.TOUT]
    modes = [m for m, _ in itertools.groupby(
        "cp" if v & CRA.CP else "dtmf" for v in resting if v & CRA.IRQ)]
    assert modes == ["cp", "dtmf", "cp", "dtmf"]
    assert rig.line.status()["listening"] == "dtmf"
    assert not rig.sim.violations


def test_no_dial_tone_is_heard_as_none(listening: Callable[..., tuple[Rig, Told]]) -> None:
    from gateway.errors import CallFailed
    from gateway.lines.base import CallTiming

    rig, _ = listening(irq_pin=IRQ, country="uk",
                       call_timing=CallTiming(dial_tone_wait_ms=800))
    rig.sim.connect_line(lambda: RecordedFarEnd(np.zeros(0)))
    rig.line.open()
    with pytest.raises(CallFailed) as failed:
        rig.line.place_call("12", Timing(80, 80))
    assert failed.value.state == "NoDialTone"
    rig.line.on_hook()
    assert rig.line.hook is HookState.ON_HOOK


def test_the_hearing_stops_on_hook_and_starts_afresh(
        listening: Callable[..., tuple[Rig, Told]]) -> None:
    rig, handler = listening()
    rig.line.open()
    for key in "12":
        play(rig.sim, synth(keys(key, 0.1, 0.1, lead_s=0.3)))
        rig.line.off_hook()
        wait_until(lambda k=key: [x for x, _ in handler.keys][-1:] == [k])  # type: ignore[misc]
        rig.line.on_hook()
        assert rig.line.status()["listening"] == "off"
    assert [k for k, _ in handler.keys] == ["1", "2"]
