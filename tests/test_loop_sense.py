"""Loop sense on gpiozero's mock pins: loop current gone for ``cpc_ms`` during a
call is the far end hanging up, reported once; shorter breaks, and the line's
own release, are not."""

from __future__ import annotations

import threading

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory, MockPin

from gateway.config import ConfigError, build
from gateway.lines.gpio import GpioOptions, LineControl
from gateway.lines.hearing import LoopBreak
from tests.conftest import wait_until

RELAY, LOOP = 17, 22


@pytest.fixture
def factory(mock_pins: MockFactory) -> MockFactory:
    return mock_pins


class Sensed:
    """A line whose hook relay closes the loop (current flows while it is
    energised), its loop breaks collected, its line time set by the test."""

    def __init__(self, factory: MockFactory, cpc_ms: int) -> None:
        self.loop: MockPin = factory.pin(LOOP)
        factory.pin(RELAY, pin_class=MockConnectedPin, input_pin=self.loop)
        self.breaks: list[LoopBreak] = []
        self.reported = threading.Event()
        self.line_time = 0.0
        options = GpioOptions(hook_relay_pin=RELAY, hook_settle_ms=0, loop_current_pin=LOOP,
                              loop_current_pull="off", loop_current_active_high=True,
                              cpc_ms=cpc_ms)
        self.control = LineControl("line1", options, factory=factory,
                                   on_loop_break=self._break, line_clock=lambda: self.line_time)
        self.control.open()

    def _break(self, event: LoopBreak) -> None:
        self.breaks.append(event)
        self.reported.set()

    def wait_reported(self, count: int) -> None:
        wait_until(lambda: len(self.breaks) >= count, timeout=10)


def test_a_break_of_cpc_ms_is_the_far_end_hanging_up_dated_when_it_began(
    factory: MockFactory,
) -> None:
    line = Sensed(factory, cpc_ms=300)
    line.control.off_hook()
    line.line_time = 12.5
    line.loop.drive_low()  # the exchange opens the loop
    line.line_time = 13.5  # the timeline moves on while the break lasts
    line.wait_reported(1)
    (event,) = line.breaks
    # Dated at the break's start; reported once it had lasted cpc_ms (a
    # timer, so later on a loaded machine, never earlier).
    assert event.t == 12.5
    assert 300 <= event.ms < 300 + 3000
    status = line.control.status()["loop_current"]
    assert isinstance(status, dict) and status["breaks"] == 1
    line.control.close()


def test_breaks_shorter_than_cpc_ms_are_counted_not_reported(factory: MockFactory) -> None:
    # 1 s: a break the test ends at once is short whatever the machine's load.
    line = Sensed(factory, cpc_ms=1000)
    line.control.off_hook()
    for t in (1.0, 2.0, 3.0):
        line.line_time = t
        line.loop.drive_low()
        line.loop.drive_high()
    assert line.control.loop_short_breaks == 3
    line.line_time = 4.0
    line.loop.drive_low()
    line.wait_reported(1)
    # Only the long one: each short one's report would have come first.
    assert [e.t for e in line.breaks] == [4.0]
    line.control.close()


def test_the_lines_own_release_and_a_break_cut_short_by_it_are_not_breaks(
    factory: MockFactory,
) -> None:
    line = Sensed(factory, cpc_ms=300)
    line.control.off_hook()
    line.line_time = 5.0
    line.loop.drive_low()
    line.control.on_hook()  # hung up by the gateway while the current was gone
    line.control.off_hook()
    line.control.on_hook()  # the relay opening stops the current: no break
    line.control.off_hook()
    line.line_time = 7.0
    line.loop.drive_low()
    line.wait_reported(1)
    # The first break's report, had it stayed armed, would have come first.
    assert [e.t for e in line.breaks] == [7.0]
    line.control.close()


def test_cpc_ms_bounds() -> None:
    assert GpioOptions().cpc_ms == 250
    for bad, message in ((49, "below the minimum 50"), (2001, "above the maximum 2000")):
        with pytest.raises(ConfigError, match=f"gpio.cpc_ms: {bad} is {message}"):
            build(GpioOptions, {"cpc_ms": bad}, "gpio")
