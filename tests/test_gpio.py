"""GPIO line control on gpiozero's MockFactory: real gpiozero devices on mock pins."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory, MockPin

from gateway.config import ConfigError, build
from gateway.errors import LineFault
from gateway.lines.gpio import (
    RING_PULSE_GAP_S,
    GpioOptions,
    LineControl,
    RingCadence,
    pin_factory,
)
from tests.conftest import wait_until

RELAY, RING, LOOP = 17, 27, 22


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


class Calls:
    """Collects incoming calls from LineControl.on_incoming (called on its own thread)."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1
        self.event.set()

    def wait(self, timeout: float = 2.0) -> bool:
        ok = self.event.wait(timeout)
        self.event.clear()
        return ok


def control(factory: MockFactory, calls: Calls | None = None, rings: Calls | None = None,
            **kw: object) -> LineControl:
    opts = {"hook_relay_pin": RELAY, "ring_detect_pin": RING, "hook_settle_ms": 0,
            "ring_guard_ms": 0, "ring_debounce_ms": 0.0} | kw
    return LineControl("line1", GpioOptions(**opts), calls,  # type: ignore[arg-type]
                       factory=factory, on_ring=rings)


def relay_history(factory: MockFactory) -> list[bool]:
    return [s.state for s in factory.pin(RELAY).states]


# -- options -------------------------------------------------------------------
def test_options_from_toml_table() -> None:
    opts = build(GpioOptions, {"hook_relay_pin": 17, "ring_detect_pin": 27,
                               "hook_relay_active_high": False}, "line[0].gpio")
    assert opts.hook_relay_pin == 17 and opts.ring_detect_pin == 27
    assert opts.configured and not GpioOptions().configured


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"hook_relay_pin": 17, "ring_detect_pin": 17}, "ring_detect_pin: GPIO17 is already"),
        ({"hook_relay_pin": 40}, "hook_relay_pin: 40 is above the maximum 27"),
        # One vocabulary for every pull; the old spelling is not offered.
        ({"ring_detect_pull": "sideways"},
         "ring_detect_pull: 'sideways' is not one of up, down, off$"),
        ({"loop_current_pull": "none"}, "loop_current_pull: 'none' is not one of up, down, off$"),
        ({"ring_detect_pull": "up", "ring_detect_active_high": True}, "idles high"),
        ({"pin_factory": "wiringpi"},
         "pin_factory: 'wiringpi' is not one of \"\", lgpio, rpigpio, pigpio, native, mock$"),
    ],
)
def test_options_refused_with_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(GpioOptions, table, "line[0].gpio")


@pytest.mark.parametrize("key", ["ring_detect_pull", "loop_current_pull"])
def test_the_old_pull_spelling_still_works_with_a_deprecation_line(
        key: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.lines.gpio"):
        opts = build(GpioOptions, {key: "floating", key.replace("pull", "active_high"): True},
                     "line[0].gpio")
    assert getattr(opts, key) == "off"
    assert [r.message for r in caplog.records] == [
        f'{key} = "floating" is deprecated: write "off" (the same setting)']


def test_default_pin_factory_is_gpiozeros_public_choice_without_its_warnings(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    from gpiozero import Device
    from gpiozero.exc import PinFactoryFallback

    chosen = MockFactory()

    def choose() -> MockFactory:
        # What gpiozero does on a Pi without lgpio: warn, then fall back.
        warnings.warn(PinFactoryFallback("Falling back from lgpio: No module named 'lgpio'"),
                      stacklevel=1)
        return chosen

    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setattr(Device, "_default_pin_factory", staticmethod(choose))
    with warnings.catch_warnings(record=True) as escaped, caplog.at_level(
            logging.DEBUG, logger="gateway.lines.gpio"):
        warnings.simplefilter("always")
        assert pin_factory("") is chosen and Device.pin_factory is chosen
    assert escaped == []
    assert [(r.levelno, r.message) for r in caplog.records] == [
        (logging.DEBUG, "GPIO: Falling back from lgpio: No module named 'lgpio'")]
    # Through gpiozero's public Device.ensure_pin_factory, never its private helper.
    sources = (Path(__file__).parents[1] / "gateway" / "lines").glob("*.py")
    assert not [p.name for p in sources if "_default_pin_factory" in p.read_text()]


# -- hook relay ----------------------------------------------------------------
def test_relay_energised_only_during_the_call(factory: MockFactory) -> None:
    with control(factory) as line:
        assert line.relay_energised is False
        line.off_hook()
        assert factory.pin(RELAY).state is True and line.is_off_hook
        line.on_hook()
        assert factory.pin(RELAY).state is False and not line.is_off_hook
    # Pin created floating-low, then released (low), on (high), off (low).
    assert relay_history(factory) == [False, True, False]


def test_active_low_relay_board_idles_high(factory: MockFactory) -> None:
    with control(factory, hook_relay_active_high=False) as line:
        assert factory.pin(RELAY).state is True  # released as soon as it exists
        line.off_hook()
        assert factory.pin(RELAY).state is False
        line.on_hook()
        assert factory.pin(RELAY).state is True
        line.off_hook()
    # close() released it although the call never hung up.
    assert factory.pin(RELAY).state is True


def test_close_releases_a_seized_line_and_is_safe_twice(factory: MockFactory) -> None:
    line = control(factory)
    line.open()
    line.off_hook()
    line.close()
    assert factory.pin(RELAY).state is False
    line.close()
    line.on_hook()  # after close: still no exception
    assert line.hook_relay is None
    # The pins are free again: another line may claim them.
    with control(factory):
        pass


def test_on_hook_from_another_thread_during_seizure(factory: MockFactory) -> None:
    with control(factory, hook_settle_ms=500) as line:
        outcome: list[BaseException | None] = []

        def seize() -> None:
            try:
                line.off_hook()
                outcome.append(None)
            except LineFault as exc:
                outcome.append(exc)

        seizing = threading.Thread(target=seize)
        seizing.start()
        # off_hook closes the relay, then waits out its settle delay.
        wait_until(lambda: factory.pin(RELAY).state is True, timeout=5)
        assert seizing.is_alive()
        line.on_hook()  # the shutdown path
        assert factory.pin(RELAY).state is False
        seizing.join(5)
        # The seizure does not report success for a line that is on hook.
        assert "put on hook while going off hook" in str(outcome[0])
        assert not line.is_off_hook and factory.pin(RELAY).state is False


class BrokenPin(MockPin):
    """A relay driver that fails when asked to energise (a shorted transistor, a bad gpiochip)."""

    broken = False

    def _set_state(self, value: bool) -> None:
        if value and self.broken:
            raise OSError(5, "Input/output error")
        super()._set_state(value)


def test_relay_write_error_is_a_line_fault_with_the_line_released(factory: MockFactory) -> None:
    pin = factory.pin(RELAY, pin_class=BrokenPin)
    with control(factory) as line:
        pin.broken = True
        with pytest.raises(LineFault, match=r"hook relay on GPIO17: .*Input/output error"):
            line.off_hook()
        assert pin.state is False and not line.is_off_hook
        assert "GPIO17" in str(line.status()["gpio_fault"])
        pin.broken = False
        line.off_hook()  # the next seizure works again
        assert pin.state is True


def test_no_loop_current_is_a_fault_and_the_relay_drops(factory: MockFactory) -> None:
    with control(factory, loop_current_pin=LOOP, loop_current_wait_ms=50) as line:
        with pytest.raises(LineFault, match="no loop current 50 ms after going off hook"):
            line.off_hook()
        assert factory.pin(RELAY).state is False
        assert relay_history(factory) == [False, True, False]


def test_loop_current_through_the_relay_is_a_good_seizure(factory: MockFactory) -> None:
    # The relay pin wired (in the mock) to the loop-current input: closing the
    # loop makes current flow, as on a connected line.
    loop = factory.pin(LOOP)
    factory.pin(RELAY, pin_class=MockConnectedPin, input_pin=loop)
    with control(factory, loop_current_pin=LOOP, loop_current_pull="off",
                 loop_current_active_high=True) as line:
        assert line.has_loop_current is False
        line.off_hook()
        assert line.has_loop_current is True
        assert line.status()["loop_current"] == {"pin": "GPIO22", "flowing": True,
                                                 "breaks": 0, "short_breaks": 0}
        line.on_hook()
        assert line.has_loop_current is False


def test_pin_in_use_is_a_line_fault_naming_the_pin(factory: MockFactory) -> None:
    with control(factory):
        other = LineControl("line2", GpioOptions(ring_detect_pin=RELAY), factory=factory)
        with pytest.raises(LineFault, match="ring detect on GPIO17"):
            other.open()
        other.close()


def test_unconfigured_control_touches_no_gpio() -> None:
    line = LineControl("line1", GpioOptions())
    line.open()  # no pin factory is loaded: this would fail on a PC otherwise
    line.off_hook()
    assert line.is_off_hook and line.relay_energised is None
    line.close()
    assert line.status() == {}


def test_named_mock_factory_is_shared_by_lines() -> None:
    a = LineControl("a", GpioOptions(pin_factory="mock", hook_relay_pin=5))
    b = LineControl("b", GpioOptions(pin_factory="mock", hook_relay_pin=5))
    a.open()
    try:
        with pytest.raises(LineFault, match="GPIO5"):
            b.open()
    finally:
        a.close()
        b.close()


def test_relay_released_at_interpreter_exit_without_close() -> None:
    # A crash of the program that drove the relay (here: an uncaught error
    # with the line off hook) still ends with the relay released.
    program = """
import atexit
from gpiozero.pins.mock import MockFactory
factory = MockFactory()
# Registered first, so it runs last: after the line's own exit handler.
atexit.register(lambda: print("relay at exit:", factory.pin(17).state, flush=True))
from gateway.lines.gpio import GpioOptions, LineControl
line = LineControl("x", GpioOptions(hook_relay_pin=17, hook_settle_ms=0), factory=factory)
line.open()
line.off_hook()
print("relay in call:", factory.pin(17).state, flush=True)
raise RuntimeError("request crashed")
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "request crashed" in out.stderr
    assert out.stdout.splitlines() == ["relay in call: True", "relay at exit: False"]


# -- ring cadences, on timestamps ----------------------------------------------
def pulses(start: float, seconds: float, hz: float = 20.0) -> list[tuple[float, bool]]:
    """An unfiltered optocoupler on ringing: on for a third of each cycle."""
    edges = []
    t = start
    while t < start + seconds:
        edges += [(t, True), (t + 1 / hz / 3, False)]
        t += 1 / hz
    return edges


def play(cadence: RingCadence, on_off: list[float], repeats: int, start: float = 0.0,
         steady: bool = False) -> tuple[int, float]:
    """Feed a ring cadence (seconds on, off, on, off ...) and the timer checks.

    Returns the number of calls started and the time it ended.
    """
    calls = 0
    t = start
    for _ in range(repeats):
        for i, seconds in enumerate(on_off):
            if i % 2 == 0:
                edges = [(t, True), (t + seconds, False)] if steady else pulses(t, seconds)
                burst = None
                for at, active in edges:
                    calls += cadence.edge(at, active)
                    if burst is None:
                        burst = cadence.burst
                        # The delayed check LineControl schedules for each burst.
                        if t + cadence.ring_min_s < t + seconds:
                            calls += cadence.check(t + cadence.ring_min_s, burst)
            t += seconds
    return calls, t


@pytest.mark.parametrize(
    ("name", "on_off"),
    [
        ("North America", [2.0, 4.0]),
        ("UK", [0.4, 0.2, 0.4, 2.0]),
        ("Germany", [1.0, 4.0]),
        ("France", [1.5, 3.5]),
        ("Australia", [0.4, 0.2, 0.4, 2.0]),
    ],
)
@pytest.mark.parametrize("steady", [False, True], ids=["pulses", "rc-filtered"])
def test_one_cadence_is_one_call(name: str, on_off: list[float], steady: bool) -> None:
    cadence = RingCadence(ring_min_s=0.15, ring_timeout_s=6.0)
    calls, _ = play(cadence, on_off, repeats=5, steady=steady)
    assert calls == 1, name
    assert cadence.calls == 1
    # Each burst of the cadence is a ring (the UK's double ring is two).
    assert cadence.rings == 5 * (len(on_off) // 2)


def test_forty_pulses_are_one_ring() -> None:
    cadence = RingCadence(ring_min_s=0.15, ring_timeout_s=6.0)
    edges = pulses(0.0, 2.0)
    assert len(edges) == 80
    assert sum(cadence.edge(at, active) for at, active in edges) == 1
    assert cadence.rings == 1


def test_cadences_further_apart_than_the_timeout_are_two_calls() -> None:
    cadence = RingCadence(ring_min_s=0.15, ring_timeout_s=6.0)
    first, end = play(cadence, [2.0, 4.0], repeats=3)
    assert cadence.ringing(end) and not cadence.ringing(end + 6.5)
    second, _ = play(cadence, [2.0, 4.0], repeats=3, start=end + 7.0)
    assert (first, second) == (1, 1)


def test_a_burst_shorter_than_ring_min_is_not_a_ring() -> None:
    cadence = RingCadence(ring_min_s=0.15, ring_timeout_s=6.0)
    # A click: two 5 ms pulses, then nothing; the delayed check finds it dead.
    for at, active in [(0.0, True), (0.005, False), (0.03, True), (0.035, False)]:
        assert not cadence.edge(at, active)
    assert not cadence.check(0.15, cadence.burst)
    assert cadence.rings == 0 and not cadence.ringing(0.2)


def test_a_click_checked_within_the_pulse_gap_is_not_a_ring() -> None:
    # ring_min shorter than the pulse gap: the check comes while the click
    # still counts as "alive", but its activity spanned no time at all.
    cadence = RingCadence(ring_min_s=0.06, ring_timeout_s=6.0)
    cadence.edge(0.0, True)
    cadence.edge(0.0, False)
    assert not cadence.check(0.06, cadence.burst)
    assert not cadence.check(0.09, cadence.burst)
    assert cadence.rings == 0


def test_a_stale_check_does_not_count_a_later_burst() -> None:
    cadence = RingCadence(ring_min_s=0.15, ring_timeout_s=6.0)
    cadence.edge(0.0, True)
    cadence.edge(0.005, False)
    glitch = cadence.burst
    cadence.edge(0.12, True)  # a new burst, 115 ms after the glitch died
    assert cadence.burst != glitch
    assert not cadence.check(0.15, glitch)
    assert cadence.check(0.27, cadence.burst)


def test_pulse_gap_bridges_sixteen_hertz_ringing() -> None:
    assert RING_PULSE_GAP_S > 1 / 16.67
    cadence = RingCadence(ring_min_s=0.15, ring_timeout_s=6.0)
    assert sum(cadence.edge(at, a) for at, a in pulses(0.0, 1.0, hz=16.67)) == 1


# -- ring cadences on mock pins, in real (shortened) time ----------------------
def ring(pin: MockPin, bursts: int, on: float, off: float, hz: float = 20.0) -> None:
    """Drive the ring-detect input like an optocoupler that pulls it low."""
    for _ in range(bursts):
        end = time.monotonic() + on
        while time.monotonic() < end:
            pin.drive_low()
            time.sleep(1 / hz / 3)
            pin.drive_high()
            time.sleep(1 / hz * 2 / 3)
        time.sleep(off)


def test_ringing_on_the_pin_is_exactly_one_incoming_call(factory: MockFactory) -> None:
    calls, rings = Calls(), Calls()
    with control(factory, calls, rings, ring_min_ms=60, ring_timeout_ms=1500) as line:
        pin = factory.pin(RING)
        assert pin.state is True  # pulled up, idle
        ring(pin, bursts=3, on=0.25, off=0.35)
        assert calls.wait()
        assert line.ringing
        # Sixty pulses in three bursts: three ring events (each handler on a
        # thread of its own), one call.
        wait_until(lambda: rings.count == 3, timeout=10)
        assert line.cadence.rings == 3 and calls.count == 1
        # The caller gives up; the line stops ringing after the 1.5 s timeout.
        wait_until(lambda: not line.ringing, timeout=10)
        ring(pin, bursts=1, on=0.25, off=0)
        assert calls.wait()
        assert calls.count == 2


def test_steady_ring_level_is_a_call_after_ring_min(factory: MockFactory) -> None:
    calls = Calls()
    with control(factory, calls, ring_min_ms=80) as line:
        pin = factory.pin(RING)
        pin.drive_low()  # RC-filtered optocoupler: one edge per burst
        assert calls.wait()
        pin.drive_high()
        assert calls.count == 1 and line.cadence.rings == 1


def test_glitches_on_the_pin_are_no_call(factory: MockFactory) -> None:
    calls = Calls()
    with control(factory, calls, ring_min_ms=100):
        pin = factory.pin(RING)
        for _ in range(3):
            pin.drive_low()
            pin.drive_high()
            time.sleep(0.25)
        assert not calls.wait(0.2)
        assert calls.count == 0


def test_no_ring_while_off_hook_nor_in_the_guard_after(factory: MockFactory) -> None:
    calls = Calls()
    with control(factory, calls, ring_min_ms=40, ring_guard_ms=300) as line:
        pin = factory.pin(RING)
        line.off_hook()
        ring(pin, bursts=1, on=0.15, off=0)  # audio or hook transients on an answered line
        line.on_hook()
        ring(pin, bursts=1, on=0.15, off=0)  # the relay's release transient
        assert not calls.wait(0.2)
        time.sleep(0.1)  # guard over
        ring(pin, bursts=1, on=0.15, off=0)
        assert calls.wait()
        assert calls.count == 1


def test_answering_ends_the_ringing_call(factory: MockFactory) -> None:
    calls = Calls()
    with control(factory, calls, ring_min_ms=40, ring_timeout_ms=5000) as line:
        pin = factory.pin(RING)
        ring(pin, bursts=1, on=0.15, off=0)
        assert calls.wait()
        line.off_hook()  # answered
        assert not line.ringing
        line.on_hook()
        # A call right after hanging up rings anew, well inside ring_timeout.
        ring(pin, bursts=1, on=0.15, off=0)
        assert calls.wait()
        assert calls.count == 2
