"""The MT8880 line on gpiozero's MockFactory with the simulated chip attached.

Bus-level tests decode the cycles from the pins' own histories
(``MockPin.states``) with a logic analyser written here, independent of the
simulator's decoding; audio tests render the simulator's TONE output and
decode it with the real multimon-ng. Expected codes and bits come from the
data sheet as the simulator holds it (``mt8880_sim.CODES``, its ``CRA``,
``CRB``, ``Status``), never from the driver: the mutation tests at the end
show that a driver with a wrong code or bit fails these checks.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.config import ConfigError, from_mapping
from gateway.errors import LineFault
from gateway.keys import parse_keys
from gateway.lines import build_line, driver_spec
from gateway.lines.base import CallTiming, HookState
from gateway.lines.gpio import GpioOptions
from gateway.lines.mt8880 import MT8880Line, MT8880Options
from gateway.lines.mt8880_sim import (
    CODES,
    CRA,
    CRB,
    ChipRecorder,
    Fault,
    MT8880Simulator,
    ProtocolViolation,
    Status,
)
from gateway.tones import Timing, ToneEngine, TonePlan, ToneSettings
from tests.conftest import wait_until
from tests.support import example_line_block, multimon_decode, needs_multimon

ALL_KEYS = "0123456789*#ABCD"
RELAY, RING = 17, 27
ENGINE = ToneEngine()

#: Stated tolerance of non-burst timing as the chip sees it. A late wake-up
#: (scheduler lateness, another process on the core) only ever lengthens a
#: tone or gap, so: none may be short by a whole bus cycle or more (that is
#: an edge placed early, a real error); the least error of a string, the one
#: no lateness touched, is the driver's own precision and within LEAST_S; and
#: none is longer than LONG_S, far above any lateness seen on a loaded
#: two-core machine (+137 ms with a CPU-bound thread in the same process)
#: and far below a tone left on into the next. bench/bench_mt8880.py
#: measures the spread.
LEAST_S, LONG_S = 0.002, 0.5


def bus_cycle_s(sim: MT8880Simulator) -> float:
    """One bus cycle, as the chip saw the quickest back-to-back pair."""
    times = [c.time for c in sim.cycles]
    return min(b - a for a, b in itertools.pairwise(times))


def check_timing(measured: list[float], wanted: float, cycle_s: float) -> None:
    """The stated tolerance above, for tones or gaps that asked for ``wanted``."""
    errors = [m - wanted for m in measured]
    assert min(errors) > -cycle_s, f"{min(errors) * 1000:+.3f} ms: short by a bus cycle"
    assert min(errors) <= LEAST_S, f"even the best is {min(errors) * 1000:+.3f} ms off"
    assert max(errors) <= LONG_S, f"{max(errors) * 1000:+.1f} ms long"


@dataclass
class Rig:
    factory: MockFactory
    options: MT8880Options
    sim: MT8880Simulator
    line: MT8880Line

    def relay_levels(self) -> list[bool]:
        return [bool(s.state) for s in self.factory.pin(RELAY).states]


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(relay: bool = True, strict: bool = True, listen: bool = False,
             **overrides: Any) -> Rig:
        # Not listening unless asked: these tests read the transmit path's bus
        # cycles one by one, and the receiver's reads would come between
        # (tests/test_mt8880_hearing.py listens).
        gpio = GpioOptions(hook_relay_pin=RELAY, ring_detect_pin=RING, hook_settle_ms=0,
                           ring_guard_ms=0) if relay else GpioOptions()
        options = MT8880Options(power_up_ms=5, setup_us=0, strobe_us=0, hold_us=0, gpio=gpio,
                                listen=listen)
        options = replace(options, **overrides)
        factory = MockFactory()
        sim = MT8880Simulator.for_options(factory, options, relay_pin=RELAY if relay else None,
                                          strict=strict)
        rig = Rig(factory, options, sim, MT8880Line("mt", options, ENGINE, pin_factory=factory))
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.line.close()
        rig.sim.close()
        assert rig.line.hook is HookState.ON_HOOK
        # The driver never sends in call-progress mode, and never breaks the bus protocol.
        assert not any(c.register == "CRA" and c.value & CRA.CP and c.value & CRA.TOUT
                       for c in rig.sim.cycles)
        if rig.sim.strict:
            rig.sim.check()


def send(line: MT8880Line, keys: str, duration: int = 50, gap: int = 50) -> float:
    """Off hook if needed, emit, and return the monotonic time emitting began."""
    if line.hook is HookState.ON_HOOK:
        line.off_hook()
    started = time.monotonic()
    line.emit(TonePlan(parse_keys(keys), Timing(duration, gap)))
    return started


def check_sends_exactly(rig: Rig, keys: str, duration: int = 50, gap: int = 50) -> None:
    """The check that ``keys`` reached the line: the keys the simulated chip
    sent while off hook, read through the data sheet's code table, and no
    breach of the bus rules on the way."""
    started = send(rig.line, keys, duration, gap)
    heard = "".join(s.key for s in rig.sim.tone_segments(started, line_only=True))
    assert heard == keys, f"the chip sent {heard!r} for {keys!r}"
    assert not rig.sim.violations, rig.sim.violations


# -- a logic analyser on MockPin.states ----------------------------------------------------


#: How closely the analyser's pin timelines line up (see Analyser.start).
ALIGN_S = 20e-6


class Analyser:
    """Rebuilds each pin's level over time from ``MockPin.states`` (which hold
    the time since the previous change) and decodes bus cycles from them."""

    def __init__(self, factory: MockFactory, options: MT8880Options) -> None:
        self.pins = {name: factory.pin(number) for name, number in options.bus_pins().items()
                     if name != "IRQ"}
        self.cleared: dict[str, float] = {}

    def start(self) -> None:
        # The history starts when clear_states() runs; bracket that moment
        # tightly (retrying if the thread was preempted) so the pins' times
        # line up to within microseconds, far below the 200 us bus delays.
        for name, pin in self.pins.items():
            while True:
                before = time.monotonic()
                pin.clear_states()
                after = time.monotonic()
                if after - before < ALIGN_S:
                    break
            self.cleared[name] = (before + after) / 2

    def edges(self, name: str) -> list[tuple[float, bool]]:
        t = self.cleared[name]
        out = []
        for state in self.pins[name].states:
            t += state.timestamp
            out.append((t, bool(state.state)))
        return out

    def level(self, name: str, at: float) -> bool:
        value = self.edges(name)[0][1]
        for t, state in self.edges(name):
            if t > at:
                break
            value = state
        return value

    def changes(self, name: str, after: float, before: float) -> list[float]:
        # The pins' timelines line up to within the 20 us bracket of start():
        # a change closer than that to either end cannot be placed inside (the
        # next cycle's first move comes straight after CS rises).
        return [t for t, _ in self.edges(name)[1:] if after + ALIGN_S < t < before - ALIGN_S]

    def cycles(self) -> list[tuple[str, int, int]]:
        """Each cycle as ("R" or "W", RS0, nibble), checking the bus rules."""
        cs = self.edges("CS")[1:]
        phi2 = self.edges("PHI2")[1:]
        assert self.level("CS", time.monotonic()), "CS left low after the last cycle"
        falls = [t for t, s in cs if not s]
        rises = [t for t, s in cs if s]
        assert len(falls) == len(rises), "every CS fall needs its rise"
        strobes = list(zip([t for t, s in phi2 if s], [t for t, s in phi2 if not s],
                           strict=True))
        out = []
        for (cs_low, cs_high) in zip(falls, rises, strict=True):
            inside = [(r, f) for r, f in strobes if cs_low < r and f < cs_high]
            assert len(inside) == 1, f"{len(inside)} phi2 strobes inside one CS low"
            rise, fall = inside[0]
            for name in ("RS0", "RW"):
                assert not self.changes(name, cs_low, cs_high), f"{name} moved while CS was low"
            write = not self.level("RW", rise)
            if write:
                for bit in range(4):
                    assert not self.changes(f"D{bit}", cs_low, cs_high), f"D{bit} moved in a write"
                sample = rise
            else:
                # Late in the strobe, as the driver samples: the data is valid
                # from some time after phi2 rises until after it falls.
                sample = fall - min(20e-6, (fall - rise) / 4)
            value = sum(int(self.level(f"D{bit}", sample)) << bit for bit in range(4))
            out.append(("W" if write else "R", int(self.level("RS0", rise)), value))
        assert len(strobes) == len(out), "a phi2 strobe outside any CS low"
        return out


INIT = [("R", 1, None), ("W", 1, 0), ("W", 1, 0), ("W", 1, 8), ("W", 1, 0), ("R", 1, None)]


def matches(got: list[tuple[str, int, int]], expected: list[tuple[str, int, int | None]]) -> bool:
    return len(got) == len(expected) and all(
        g[:2] == e[:2] and (e[2] is None or g[2] == e[2])
        for g, e in zip(got, expected, strict=True)
    )


# -- bus level -------------------------------------------------------------------------------


def test_open_runs_the_datasheet_initialisation_after_the_power_up_wait(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(relay=False, power_up_ms=100, setup_us=200, strobe_us=200, hold_us=200)
    analyser = Analyser(rig.factory, rig.options)
    for pin in analyser.pins.values():  # the pins exist; the driver has not touched them
        pin.clear_states()
    analyser.start()
    opened = time.monotonic()
    rig.line.open()
    cycles = analyser.cycles()
    # Wait ~100 ms; read status; write 0, 0, 8, 0; read status; then CRB.BURST
    # (non-burst mode) through a CRA write with RSEL.
    assert matches(cycles, [*INIT, ("W", 1, int(CRA.RSEL)), ("W", 1, int(CRB.BURST))])
    first_strobe = next(t for t, s in analyser.edges("PHI2") if s)
    assert first_strobe - opened >= 0.1
    assert rig.sim.initialised
    assert [str(c) for c in rig.sim.cycles][:6] == [
        "read STATUS=0b0000", "write CRA=0b0000", "write CRA=0b0000", "write CRA=0b1000",
        "write CRB=0b0000", "read STATUS=0b0000"]


def test_every_tone_code_in_non_burst_mode_on_the_pins(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(relay=False, setup_us=200, strobe_us=200, hold_us=200)
    rig.line.open()
    rig.line.off_hook()
    analyser = Analyser(rig.factory, rig.options)
    analyser.start()
    send(rig.line, ALL_KEYS, 40, 50)
    expected: list[tuple[str, int, int | None]] = []
    for key in ALL_KEYS:
        expected += [("W", 0, CODES[key]), ("W", 1, int(CRA.TOUT)), ("W", 1, 0)]
    assert matches(analyser.cycles(), expected)
    # The simulator saw the same cycles.
    tail = [c for c in rig.sim.cycles][-len(expected):]
    assert [(("W" if c.write else "R"), c.value) for c in tail] == [
        (e[0], e[2]) for e in expected]


def test_every_tone_code_in_burst_mode_on_the_pins(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(relay=False, burst=True, setup_us=200, strobe_us=200, hold_us=200)
    rig.line.open()
    rig.line.off_hook()
    analyser = Analyser(rig.factory, rig.options)
    analyser.start()
    send(rig.line, ALL_KEYS)
    cycles = analyser.cycles()
    assert cycles[0] == ("W", 1, int(CRA.TOUT)) and cycles[-1] == ("W", 1, 0)
    # Per key: the code, status reads with TDRE clear, the one with TDRE (and
    # IRQ), then one more that shows the read cleared them.
    text = " ".join(f"{op}{rs0}:{value:04b}" for op, rs0, value in cycles[1:-1])
    digit = r"W0:({code}) (?:R1:0[0-1]0[0-1] )*?R1:0011 R1:0000"
    pattern = " ".join(digit.format(code=f"{CODES[k]:04b}") for k in ALL_KEYS)
    assert re.fullmatch(pattern, text), text
    assert all(rs0 == 1 for op, rs0, _ in cycles if op == "R")
    assert all(c.sampled for c in rig.sim.cycles if not c.write)


def test_reads_sample_d0_d3_while_phi2_is_high(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(relay=False, burst=True)
    rig.line.open()
    chip = rig.line.chip
    assert chip is not None
    rig.sim.status = Status.RDRF | Status.DSTEER  # something not all-zero to read
    assert chip.read_status() == Status.RDRF | Status.DSTEER
    rig.sim.receive_digit("#")
    assert chip.read_receive() == "#"
    assert all(c.sampled for c in rig.sim.cycles if not c.write)


def test_control_registers_are_named_fields_with_a_shadow_copy(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(relay=False)
    rig.line.open()
    chip = rig.line.chip
    assert chip is not None
    assert chip.crb == CRB.BURST and chip.cra == CRA(0)
    chip.set_burst_mode(True)
    assert chip.crb == CRB(0) and rig.sim.crb == CRB(0)
    chip.tone_output(True)
    assert chip.cra == CRA.TOUT == rig.sim.cra
    chip.tone_output(False)
    with pytest.raises(ValueError, match="CP"):
        chip.write_cra(CRA.CP | CRA.TOUT)
    assert str(Status.TDRE | Status.IRQ) and Status(0b0110) == Status.TDRE | Status.RDRF


def test_irq_pin_replaces_polling(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(relay=False, burst=True, irq_pin=23, poll_ms=50.0)
    rig.line.open()
    rig.line.off_hook()
    before = len(rig.sim.cycles)
    send(rig.line, "123")
    cycles = list(rig.sim.cycles)[before:]
    assert cycles[0].register == "CRA" and cycles[0].value == CRA.TOUT | CRA.IRQ
    # Per key: the code, one read right after it, one after IRQ fell, and one
    # that shows that read cleared TDRE (a thread preempted past the burst's end
    # needs no read after IRQ: two). Polling every 50 ms through a 102 ms
    # burst would take four or more.
    reads = sum(1 for c in cycles if c.register == "STATUS")
    assert 6 <= reads <= 9
    assert rig.factory.pin(23).state  # IRQ released by the last status read


def test_irq_from_the_receiver_does_not_spin_the_wait(make_rig: Callable[..., Rig],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig(relay=False, burst=True, irq_pin=23)
    rig.line.open()
    rig.line.off_hook()
    chip = rig.line.chip
    assert chip is not None
    real_read = chip.read_status
    reads: list[Status] = []

    def read_status() -> Any:
        status = real_read()
        reads.append(status)
        if len(reads) == 1:
            # Just after the code went in, the receiver hears a digit: IRQ
            # falls mid-burst and RDRF stays set.
            rig.sim.receive_digit("5")
        return status

    monkeypatch.setattr(chip, "read_status", read_status)
    send(rig.line, "1")
    # Right after the code; after the receiver's IRQ (RDRF, no TDRE: wait on,
    # the digit read from the receive register at once, which clears RDRF);
    # after the transmitter's (TDRE); and the read that shows TDRE cleared.
    assert [r & (Status.TDRE | Status.RDRF) for r in reads] == [
        0, Status.RDRF, Status.TDRE, 0]
    assert [d.key for d in chip.received] == ["5"]


# -- audio and timing ---------------------------------------------------------------------


@pytest.mark.parametrize("burst", [False, True])
def test_every_key_reaches_the_line_as_its_datasheet_code(make_rig: Callable[..., Rig],
                                                         burst: bool) -> None:
    rig = make_rig(burst=burst)
    rig.line.open()
    check_sends_exactly(rig, ALL_KEYS, 40, 50)


@needs_multimon
@pytest.mark.parametrize("burst", [False, True])
def test_tone_audio_decodes_to_exactly_the_keys(make_rig: Callable[..., Rig], burst: bool) -> None:
    rig = make_rig(burst=burst)
    rig.line.open()
    started = send(rig.line, ALL_KEYS, 60, 60)
    rig.line.on_hook()
    assert multimon_decode(rig.sim.line_audio(ENGINE, started - 0.1), 8000) == ALL_KEYS


def _edges(rig: Rig, started: float) -> tuple[list[float], list[float]]:
    segments = rig.sim.tone_segments(started, line_only=True)
    tones = [s.end - s.start for s in segments]
    gaps = [b.start - a.end for a, b in itertools.pairwise(segments)]
    return tones, gaps


@pytest.mark.parametrize(("keys", "duration", "gap"), [(ALL_KEYS, 40, 50), ("159#*0", 120, 70)])
def test_non_burst_honours_duration_and_gap(make_rig: Callable[..., Rig], keys: str,
                                            duration: int, gap: int) -> None:
    rig = make_rig()
    rig.line.open()
    started = send(rig.line, keys, duration, gap)
    tones, gaps = _edges(rig, started)
    assert len(tones) == len(keys) and len(gaps) == len(keys) - 1
    check_timing(tones, duration / 1000, bus_cycle_s(rig.sim))
    check_timing(gaps, gap / 1000, bus_cycle_s(rig.sim))
    assert "".join(s.key for s in rig.sim.tone_segments(started)) == keys


def test_the_timing_check_catches_an_edge_one_bus_cycle_early() -> None:
    cycle = 50e-6
    check_timing([0.040 + 10e-6, 0.040 + 0.030], 0.040, cycle)  # late is lateness
    with pytest.raises(AssertionError, match="short by a bus cycle"):
        check_timing([0.040 - cycle, 0.040], 0.040, cycle)
    with pytest.raises(AssertionError, match="even the best"):
        check_timing([0.050, 0.051], 0.040, cycle)  # duration and gap swapped


def test_burst_is_the_chips_51_ms_on_51_ms_off(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(burst=True)
    rig.line.open()
    started = send(rig.line, ALL_KEYS, 200, 300)  # Duration and Gap are the chip's in burst mode
    tones, gaps = _edges(rig, started)
    assert len(tones) == 16
    assert all(abs(t - 0.051) < 1e-6 for t in tones)
    # The pause is the chip's 51 ms; the driver then needs one poll to see TDRE.
    poll = rig.options.poll_ms / 1000
    assert all(0.051 <= g <= 0.051 + poll + LONG_S for g in gaps), gaps


@pytest.mark.parametrize("burst", [False, True])
def test_pauses_are_timed_by_the_driver(make_rig: Callable[..., Rig], burst: bool) -> None:
    rig = make_rig(burst=burst)
    rig.line.open()
    started = send(rig.line, "1w2", 50, 50)
    (_, gaps) = _edges(rig, started)
    wanted = (0.051 if burst else 0.050) + 0.5  # the digit's own gap, then the pause
    poll = rig.options.poll_ms / 1000 if burst else 0.0
    assert wanted - bus_cycle_s(rig.sim) < gaps[0] <= wanted + poll + LONG_S


# -- hook relay, faults and the fail-safe ---------------------------------------------------


def test_relay_is_off_hook_only_during_the_call(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.line.open()
    assert rig.relay_levels() == [False]
    send(rig.line, "5")
    assert rig.line.hook is HookState.OFF_HOOK and rig.relay_levels() == [False, True]
    rig.line.on_hook()
    rig.line.close()
    rig.line.close()  # twice is fine
    assert rig.relay_levels() == [False, True, False]


def test_probe_burst_stays_off_the_line(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    started = time.monotonic()
    rig.line.open()
    rig.line.off_hook()
    # The probe sounded on TONE (on hook, before the relay closed) ...
    assert [s.key for s in rig.sim.tone_segments(started)] == ["D", "D"]
    # ... but nothing reached the line.
    assert rig.sim.tone_segments(started, line_only=True) == []


def test_emit_on_hook_is_a_fault_not_silence(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.line.open()
    with pytest.raises(LineFault, match="on hook"):
        rig.line.emit(TonePlan(parse_keys("1")))


BOUND_S = 2.0  # power-up, one TDRE timeout, and plenty of slack: no hang


ZEROS = r"did not answer: TDRE not set 300 ms after sending 'D' \(status reads: 0b0000\)"


@pytest.mark.parametrize(
    ("fault", "status", "pull", "message"),
    [
        # The shifter drives the chip side's 100 k pull-downs onto the Pi
        # whatever the Pi's own pulls.
        (Fault.ABSENT, None, "down", ZEROS),
        (Fault.ABSENT, None, "up", ZEROS),
        # Nothing on the chip side: floating inputs, noise on every read.
        (Fault.ABSENT_FLOATING, None, "down", r"status reads noise \((0b[01]{4}, ){3}0b[01]{4}"),
        # An unpowered shifter drives nothing: the Pi's pins read their pulls.
        (Fault.SHIFTER_UNPOWERED, None, "down", ZEROS),
        (Fault.SHIFTER_UNPOWERED, None, "up", r"status stuck at 0b1111 .*: TDRE set right after"),
        (Fault.STUCK_STATUS, 0b0000, "down", ZEROS),
        (Fault.STUCK_STATUS, 0b0011, "down", r"status stuck at 0b0011 \(IRQ\|TDRE\)"),
    ],
)
def test_dead_chip_fails_open_in_bounded_time(make_rig: Callable[..., Rig], fault: Fault,
                                              status: int | None, pull: str,
                                              message: str) -> None:
    rig = make_rig(data_pull=pull)
    rig.sim.set_fault(fault, status)
    started = time.monotonic()
    with pytest.raises(LineFault, match=message):
        rig.line.open()
    assert time.monotonic() - started < BOUND_S
    assert rig.line.hook is HookState.ON_HOOK and rig.relay_levels() == [False]
    assert rig.line.bus is None  # pins released: the next command opens afresh
    rig.sim.set_fault(Fault.NONE)
    rig.line.open()  # and then it works


@pytest.mark.parametrize("fault", [Fault.ABSENT, Fault.STUCK_STATUS])
def test_chip_dying_mid_burst_string_drops_the_line(make_rig: Callable[..., Rig],
                                                    fault: Fault) -> None:
    rig = make_rig(burst=True)
    rig.line.open()
    rig.line.off_hook()
    timer = threading.Timer(0.25, rig.sim.set_fault, (fault, 0))
    timer.start()
    started = time.monotonic()
    with pytest.raises(LineFault, match="MT8880 did not answer"):
        rig.line.emit(TonePlan(parse_keys(ALL_KEYS)))
    timer.join()
    assert time.monotonic() - started < 0.25 + BOUND_S
    assert rig.line.hook is HookState.ON_HOOK and rig.relay_levels() == [False, True, False]
    assert rig.line.fault and "did not answer" in rig.line.fault


def test_a_burst_that_ends_early_is_a_wrong_crystal(make_rig: Callable[..., Rig],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.lines import mt8880_sim

    # A crystal five times too fast: 20 ms bursts, far enough below the 92 ms
    # floor that no lateness of the polling thread hides it.
    monkeypatch.setattr(mt8880_sim, "BURST_S", 0.010)
    monkeypatch.setattr(mt8880_sim, "PAUSE_S", 0.010)
    rig = make_rig()
    with pytest.raises(LineFault, match=r"MT8880 burst too short: TDRE set [\d.]+ ms into a "
                                        r"102 ms burst \(a crystal other than 3.579545 MHz"):
        rig.line.open()


def test_dead_chip_in_non_burst_mode_is_caught_before_off_hook(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.line.open()
    rig.sim.set_fault(Fault.ABSENT)
    with pytest.raises(LineFault, match="did not answer"):
        rig.line.off_hook()
    assert rig.relay_levels() == [False]  # the line was never seized


def test_close_during_emit_ends_it_promptly(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.line.open()
    rig.line.off_hook()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            rig.line.emit(TonePlan(parse_keys(ALL_KEYS), Timing(500, 500)))
        except LineFault as exc:
            errors.append(exc)

    probes = len(rig.sim.segments)
    thread = threading.Thread(target=sender)
    thread.start()
    # Closed while the first of the 500 ms tones sounds.
    wait_until(lambda: len(rig.sim.segments) > probes)
    rig.line.close()
    thread.join(2.0)
    assert not thread.is_alive() and errors and "closed" in str(errors[0])
    assert rig.relay_levels()[-1] is False
    assert rig.sim.cra == CRA(0) or rig.line.bus is None


def test_ring_detect_is_the_gpio_line_controls(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(gpio=GpioOptions(hook_relay_pin=RELAY, ring_detect_pin=RING,
                                    hook_settle_ms=0, ring_guard_ms=0, ring_min_ms=50,
                                    ring_debounce_ms=0.0))
    rings: list[str | None] = []
    rig.line.ring_handler = rings.append
    rig.line.open()
    ring = rig.factory.pin(RING)
    for count in (1, 2):  # two rings of one cadence: both reported
        ring.drive_low()  # optocoupler pulls the input low while ringing
        deadline = time.monotonic() + 2.0
        while len(rings) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rig.line.status()["ring_detect"]
        ring.drive_high()
        time.sleep(0.15)
    assert rings == [None, None]


# -- the simulator catches broken bus sequences ------------------------------------------------


class Wires:
    """Hand-driven bus pins, for feeding the simulator bad sequences on purpose."""

    def __init__(self, factory: MockFactory, options: MT8880Options) -> None:
        pins = options.bus_pins()
        self.d = [factory.pin(n) for n in options.data_pins]
        self.rs0, self.rw = factory.pin(pins["RS0"]), factory.pin(pins["RW"])
        self.cs, self.phi2 = factory.pin(pins["CS"]), factory.pin(pins["PHI2"])
        self.cs.output_with_state(True)
        self.phi2.output_with_state(False)
        self.rs0.output_with_state(True)
        self.rw.output_with_state(False)

    def drive(self, value: int) -> None:
        for bit, pin in enumerate(self.d):
            pin.output_with_state((value >> bit) & 1)

    def release(self) -> None:
        for pin in self.d:
            pin.input_with_pull("down")

    def write(self, rs0: int, value: int) -> None:
        self.rs0.state = rs0
        self.rw.state = 0
        self.drive(value)
        self.cs.state = 0
        self.phi2.state = 1
        self.phi2.state = 0
        self.cs.state = 1

    def read(self, rs0: int) -> int:
        self.release()
        self.rs0.state = rs0
        self.rw.state = 1
        self.cs.state = 0
        self.phi2.state = 1
        value = sum(int(bool(p.state)) << bit for bit, p in enumerate(self.d))
        self.phi2.state = 0
        self.cs.state = 1
        self.rw.state = 0
        return value

    def initialise(self) -> None:
        self.read(1)
        for nibble in (0, 0, 8, 0):
            self.write(1, nibble)
        self.read(1)


@pytest.fixture
def wires() -> Iterator[tuple[MT8880Simulator, Wires]]:
    factory = MockFactory()
    options = MT8880Options()
    sim = MT8880Simulator.for_options(factory, options, power_up_s=0.0)
    yield sim, Wires(factory, options)
    sim.close()


def test_a_correct_hand_sequence_passes(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.initialise()
    bus.write(1, int(CRA.TOUT))
    bus.write(0, CODES["5"])
    assert sim.initialised and not sim.violations
    assert [s.key for s in sim.segments] == ["5"]


def expect_violation(
    sim: MT8880Simulator, action: Callable[[], object], message: str
) -> None:
    with pytest.raises(ProtocolViolation, match=message):
        action()
    assert sim.violations and re.search(message, sim.violations[-1])


def test_violation_cycle_with_cs_high(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires

    def strobe() -> None:
        bus.phi2.state = 1

    expect_violation(sim, strobe, "phi2 strobed with CS high")


def test_violation_data_changing_while_phi2_high(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.drive(0b0101)
    bus.cs.state = 0
    bus.phi2.state = 1
    expect_violation(sim, lambda: setattr(bus.d[1], "state", 1),
                     "D1 changed to 1 while phi2 was high")


def test_violation_rw_changing_while_phi2_high(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.drive(0)
    bus.cs.state = 0
    bus.phi2.state = 1
    expect_violation(sim, lambda: setattr(bus.rw, "state", 1),
                     "R/W changed to 1 while phi2 was high")


def test_violation_address_set_after_cs_falls(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.cs.state = 0
    expect_violation(sim, lambda: setattr(bus.rs0, "state", 0),
               "RS0 changed to 0 while CS was low: RS0 and R/W must be set before CS falls")


def test_violation_cs_not_back_high_between_cycles(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.drive(0)
    bus.cs.state = 0
    bus.phi2.state = 1
    bus.phi2.state = 0

    def again() -> None:
        bus.phi2.state = 1

    expect_violation(sim, again, "second cycle without CS going back high")


def test_violation_cs_released_while_phi2_is_high(
        wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.initialise()
    bus.drive(int(CRA.TOUT))
    bus.cs.state = 0
    bus.phi2.state = 1
    expect_violation(sim, lambda: setattr(bus.cs, "state", 1),
                     "CS released while phi2 was high: phi2 must fall first")
    bus.phi2.state = 0
    assert sim.cra == CRA(0)  # the write was not latched


def test_a_burst_needs_tout_so_tdre_is_no_silent_proof(
        wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.initialise()  # CRB = 0: burst mode; CRA = 0: TOUT clear
    bus.write(0, CODES["5"])
    # The data sheet's TOUT "controls all transmit tone functions": no burst
    # ran, so no TDRE comes, however long one waits.
    assert sim.segments == collections.deque() and not bus.read(1) & Status.TDRE
    assert sim._burst_end is None


def test_a_chip_put_back_powers_up_afresh(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.initialise()
    assert sim.initialised
    sim.set_fault(Fault.ABSENT)
    sim.set_fault(Fault.NONE)
    assert not sim.initialised
    expect_violation(sim, lambda: bus.write(0, CODES["5"]),
                     "transmit register written before the initialisation")


def test_violation_write_without_data_driven(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.release()
    bus.cs.state = 0

    def strobe() -> None:
        bus.phi2.state = 1

    expect_violation(sim, strobe, "write cycle with D0, D1, D2, D3 not driven")


def test_violation_bus_contention_with_the_level_shifter(
        wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.release()
    bus.rw.state = 1
    expect_violation(sim, lambda: bus.d[0].output_with_state(0),
               "D0 made an output while R/W was high")
    sim.violations.clear()
    bus.rw.state = 0  # (already contended: a real chip would have been fighting the Pi)
    bus.d[0].output_with_state(0)
    expect_violation(sim, lambda: setattr(bus.rw, "state", 1),
                     "R/W went high while the Pi drove D0")


def test_violation_cycle_before_the_oscillator_runs() -> None:
    factory = MockFactory()
    options = MT8880Options()
    sim = MT8880Simulator.for_options(factory, options, power_up_s=10.0)
    bus = Wires(factory, options)
    expect_violation(sim, lambda: bus.read(1), r"ms after power-up; the oscillator needs 10000 ms")


def test_violation_transmit_before_initialisation(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    expect_violation(sim, lambda: bus.write(0, 5),
                     "transmit register written before the initialisation")


def test_violation_initialisation_without_the_first_status_read(
        wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    for nibble in (0, 0, 8, 0):  # a mistake seen in public drivers
        bus.write(1, nibble)
    bus.read(1)
    assert not sim.initialised
    expect_violation(sim, lambda: bus.write(1, int(CRA.TOUT)), "TOUT set before the initialisation")


def test_violation_cp_mode_during_dtmf(wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.initialise()
    expect_violation(sim, lambda: bus.write(1, int(CRA.CP | CRA.TOUT)),
               r"CRA.CP \(call-progress mode\) set while DTMF is being sent")


def test_violation_code_while_tdre_clear_in_burst_mode(
        wires: tuple[MT8880Simulator, Wires]) -> None:
    sim, bus = wires
    bus.initialise()  # CRB = 0: burst mode
    bus.write(1, int(CRA.TOUT))
    bus.write(0, CODES["1"])
    expect_violation(sim, lambda: bus.write(0, CODES["2"]),
               r"code written [\d.]+ ms into a burst, while TDRE was clear")


def test_violation_message_names_the_cycle(wires: tuple[MT8880Simulator, Wires]) -> None:
    _, bus = wires
    bus.initialise()
    bus.write(1, int(CRA.TOUT))
    bus.write(0, CODES["1"])
    with pytest.raises(ProtocolViolation) as info:
        bus.write(0, CODES["2"])
    assert "at bus cycle 9 (after write TX=0b0001)" in str(info.value)


def test_simulator_refuses_pins_the_driver_already_has() -> None:
    factory = MockFactory()
    options = MT8880Options()
    factory.pin(options.cs_pin)
    with pytest.raises(ValueError, match="attach the simulator before the driver"):
        MT8880Simulator.for_options(factory, options)


# -- configuration and the simulated chip behind `serve` --------------------------------------


def test_registered_and_built_from_toml(tmp_path: Any) -> None:
    config = from_mapping({"line": [{
        "name": "m1", "driver": "mt8880", "data_pins": [5, 6, 12, 13], "irq_pin": 23,
        "burst": True, "gpio": {"hook_relay_pin": 17, "ring_detect_pin": 27},
    }]}, base_dir=tmp_path)
    options = config.lines[0].options
    assert isinstance(options, MT8880Options)
    assert options.irq_pin == 23 and options.burst and options.gpio.hook_relay_pin == 17
    assert driver_spec("mt8880").driver is MT8880Line


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"data_pins": [5, 6, 12]}, "data_pins: D0-D3 need 4 pins"),
        ({"cs_pin": 5}, "GPIO 5 is used for both D0 and CS"),
        ({"phi2_pin": 40}, "phi2_pin: 40 is above the maximum 27"),
        ({"tdre_timeout_ms": 50}, "tdre_timeout_ms: 50 is below the minimum 110"),
        ({"data_pull": "sideways"}, "data_pull: 'sideways' is not one of up, down, off$"),
    ],
)
def test_bad_options_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"line": [{"name": "m1", "driver": "mt8880", **table}]})


def test_data_pull_speaks_the_gpio_tables_words(make_rig: Callable[..., Rig],
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.lines.gpio"):
        config = from_mapping({"line": [{"name": "m1", "driver": "mt8880",
                                         "data_pull": "floating"}]})
    assert config.lines[0].options.data_pull == "off"
    deprecated = 'data_pull = "floating" is deprecated: write "off" (the same setting)'
    assert [r.message for r in caplog.records] == [deprecated]
    rig = make_rig(data_pull="off")
    rig.line.open()
    assert {rig.factory.pin(n).pull for n in rig.options.data_pins} == {"floating"}


def test_example_config_block_is_valid_and_documents_the_defaults() -> None:
    (line,) = from_mapping(example_line_block("mt1")).lines
    assert line.driver == "mt8880"
    # Every key shown is its default, but for the optional pins wired in the notes.
    assert line.options == MT8880Options(
        irq_pin=23, country="us", gpio=GpioOptions(hook_relay_pin=17, ring_detect_pin=27),
        call_timing=CallTiming(flash_ms=600))  # the US's hook flash, as [tones] country says


def test_default_pins_do_not_collide_with_the_suggested_relay_and_ring() -> None:
    used = set(MT8880Options().bus_pins().values())
    assert len(used) == 8 and not used & {RELAY, RING, 18, 19, 20, 21, 2, 3, 14, 15}


@needs_multimon
def test_simulate_option_is_assembled_with_a_chip_and_a_recorder(tmp_path: Any) -> None:
    options = MT8880Options(simulate=True, power_up_ms=5, record_dir=str(tmp_path),
                            gpio=GpioOptions(hook_relay_pin=RELAY, hook_settle_ms=0))
    built = build_line("mt8880", "sim", options, ToneSettings())
    line, recorder = built.driver, built.recorder
    assert isinstance(line, MT8880Line) and isinstance(recorder, ChipRecorder)
    line.open()
    try:
        assert recorder.simulator.initialised  # the driver found the chip on its pins
        line.off_hook()
        recorder.begin("abc12")
        line.emit(TonePlan(parse_keys("159#"), Timing(60, 60)))
        line.on_hook()
        recorder.end("abc12")
    finally:
        line.close()
    from tests.support import decode_wav

    assert decode_wav(recorder.path("abc12")) == "159#"
    assert line.status()["simulated"] is True


def test_simulate_without_a_record_dir_has_no_recorder() -> None:
    built = build_line("mt8880", "sim", MT8880Options(simulate=True), ToneSettings())
    assert built.recorder is None


def test_the_driver_builds_no_simulator_of_its_own() -> None:
    import ast
    from pathlib import Path

    import gateway.lines.mt8880 as driver_module

    tree = ast.parse(Path(driver_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not {m for m in imported if m and ("mt8880_sim" in m or m.endswith(".mock"))}
    line = MT8880Line("sim", MT8880Options(simulate=True), ENGINE)
    with pytest.raises(LineFault, match="no simulated chip was attached: assemble the line"):
        line.open()
    assert line.hook is HookState.ON_HOOK


def test_no_pin_library_is_one_clear_line_fault(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    from gpiozero import Device

    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    line = MT8880Line("real", MT8880Options(), ENGINE)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        with pytest.raises(LineFault, match=r"^GPIO: no pin library could be loaded"):
            line.open()
    assert escaped == []
    line.close()
    assert line.hook is HookState.ON_HOOK


# -- the simulator is a second opinion: a driver that strays from the data sheet fails ---------


class _CraToutOnB2(enum.IntFlag):
    TOUT = 0b0100
    CP = 0b0010
    IRQ = 0b0001
    RSEL = 0b1000


class _StatusTdreOnB2(enum.IntFlag):
    IRQ = 0b0001
    TDRE = 0b0100
    RDRF = 0b0010
    DSTEER = 0b1000


class _CrbBurstOnB1(enum.IntFlag):
    BURST = 0b0010
    TEST = 0b0001
    SD = 0b0100
    CR = 0b1000


def _stray(monkeypatch: pytest.MonkeyPatch, mutation: str) -> None:
    from gateway.lines import mt8880

    if mutation == "0 and D swapped":
        # In place, as an edit of the driver's one table would leave both of
        # its dicts (and anything that imported them).
        monkeypatch.setitem(mt8880.TONE_CODES, "0", 0b0000)
        monkeypatch.setitem(mt8880.TONE_CODES, "D", 0b1010)
        monkeypatch.setitem(mt8880.CODE_KEYS, 0b0000, "0")
        monkeypatch.setitem(mt8880.CODE_KEYS, 0b1010, "D")
    elif mutation == "TOUT on b2":
        monkeypatch.setattr(mt8880, "CRA", _CraToutOnB2)
    elif mutation == "TDRE on b2":
        monkeypatch.setattr(mt8880, "Status", _StatusTdreOnB2)
    elif mutation == "BURST on b1":
        monkeypatch.setattr(mt8880, "CRB", _CrbBurstOnB1)


@pytest.mark.parametrize(
    ("mutation", "burst"),
    [("0 and D swapped", False), ("0 and D swapped", True), ("TOUT on b2", False),
     ("TOUT on b2", True), ("TDRE on b2", False), ("TDRE on b2", True),
     # In burst mode CRB stays 0 either way: the same bus traffic, nothing to catch.
     ("BURST on b1", False)],
)
def test_a_driver_that_strays_from_the_datasheet_fails_the_checks(
        make_rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch, mutation: str,
        burst: bool) -> None:
    _stray(monkeypatch, mutation)
    rig = make_rig(burst=burst, strict=False)
    with pytest.raises((AssertionError, LineFault)):
        rig.line.open()
        check_sends_exactly(rig, ALL_KEYS, 40, 50)


# -- is the chip there? what proves it, said plainly --------------------------------------


def test_non_burst_without_a_relay_says_its_chip_is_unproven(
        make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(relay=False)
    rig.sim.set_fault(Fault.ABSENT)
    with caplog.at_level(logging.INFO, logger="gateway.lines.mt8880"):
        rig.line.open()
    # Nothing read the chip back, so nothing noticed it is not there: the
    # line says so in its status (what /healthz and selftest show) and log.
    status = rig.line.status()
    assert status["chip"] == "unproven"
    assert "nothing: in non-burst mode without a hook relay" in str(status["chip_check"])
    (record,) = [r for r in caplog.records if r.name == "gateway.lines.mt8880"]
    assert record.levelno == logging.WARNING
    assert "line mt: MT8880 opened in non-burst mode; chip unproven: nothing" in record.message


def test_a_relay_lets_the_probe_prove_the_chip(make_rig: Callable[..., Rig],
                                               caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig()
    with caplog.at_level(logging.INFO, logger="gateway.lines.mt8880"):
        rig.line.open()
    status = rig.line.status()
    assert status["chip"] == "proven" and "probe burst on hook" in str(status["chip_check"])
    (took,) = [float(m[1]) for r in caplog.records
               if (m := re.search(r"chip proven: TDRE after a ([\d.]+) ms burst", r.message))]
    assert took >= 102 * 0.9  # the chip's 102 ms, and whatever lateness the poll had


def test_burst_mode_without_a_relay_is_proven_by_its_first_digit(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(relay=False, burst=True)
    rig.line.open()
    assert rig.line.status()["chip"] == "unproven"
    check_sends_exactly(rig, "1")
    assert rig.line.status()["chip"] == "proven"
