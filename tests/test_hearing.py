"""How a call follows what its line hears: the set-up decided on the line's
own timeline, the far end's leaving and keys passed on, and a capture paced
to the line. Events here are typed in; the detectors that make them from
audio are tested on sox and espeak-ng signals in test_detect_*.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from gateway.detect import Dtmf, Silence, Tone, ToneEnd, Voice
from gateway.errors import CallFailed, LineFault, LineInterrupted
from gateway.lines.hearing import (
    CallProgress,
    CaptureLoop,
    Ears,
    Hears,
    LineEvent,
    LoopBreak,
    ProgressRules,
    Reversal,
)
from gateway.tones import Samples
from tests.support import Told

RULES = ProgressRules(dial_tone_s=3.0, no_answer_s=60.0, silent_answer_s=8.0, confirm_s=2.0)


def us(tone: str, t: float) -> Tone:
    return Tone(t, tone, "us")


class Script:
    """Feeds a CallProgress as a line's hearing thread would, while the test
    plays the driver's part (wait for dial tone, dial, wait for the answer)."""

    def __init__(self, rules: ProgressRules = RULES) -> None:
        self.rang = threading.Event()
        self.progress = CallProgress("123", rules, 0.0, self.rang.set)

    def hear(self, *events: LineEvent, until: float | None = None) -> None:
        now = until if until is not None else max(e.t for e in events)
        self.progress.heard(list(events), now)

    def dialled_at(self, t: float) -> None:
        self.progress.heard([], t)
        self.progress.dialled()


def test_dial_tone_ringback_then_silence_is_an_answer_when_ringback_stopped() -> None:
    s = Script()
    s.hear(us("dial", 0.2), until=0.9)
    s.progress.wait_dial_tone(1)
    s.dialled_at(2.0)
    s.hear(us("ringback", 3.0))
    assert s.rang.is_set()
    s.hear(ToneEnd(12.0, "ringback"), until=12.5)
    # Not yet: confirm_s after the candidate has not passed ...
    s.hear(Silence(12.6), until=13.9)
    with pytest.raises(LineFault):
        s.progress.wait_answer(0.05)
    # ... now it has, and the answer dates from when ringback stopped.
    s.hear(until=14.1)
    assert s.progress.wait_answer(1) == 12.0
    # The detector reports the end of a ringback that silence follows late
    # (it waits out the cadence's gap): by then the answer is sure.
    late = Script()
    late.hear(us("dial", 0.2))
    late.dialled_at(2.0)
    late.hear(us("ringback", 3.0), until=7.0)
    late.hear(ToneEnd(12.0, "ringback"), until=16.96)
    assert late.progress.wait_answer(1) == 12.0


@pytest.mark.parametrize(("tone", "state"), [("busy", "Busy"), ("congestion", "Congestion"),
                                             ("sit", "SpecialInformationTone")])
def test_a_failing_tone_is_its_result_state(tone: str, state: str) -> None:
    s = Script()
    s.hear(us("dial", 0.2))
    s.dialled_at(1.5)
    s.hear(us(tone, 2.5))
    with pytest.raises(CallFailed) as failed:
        s.progress.wait_answer(1)
    assert failed.value.state == state and failed.value.dialed == "123"


def test_no_dial_tone_in_time() -> None:
    s = Script()
    s.hear(Voice(0.5), until=2.9)
    s.hear(until=3.1)
    with pytest.raises(CallFailed) as failed:
        s.progress.wait_dial_tone(1)
    assert failed.value.state == "NoDialTone"


def test_no_dial_tone_expected_dials_at_once() -> None:
    s = Script(ProgressRules(expect_dial_tone=False))
    s.progress.wait_dial_tone(0.1)


def test_ringing_for_ever_is_no_answer_at_its_ring_time() -> None:
    s = Script(ProgressRules(no_answer_s=30.0))
    s.hear(us("dial", 0.2))
    s.dialled_at(1.0)
    s.hear(us("ringback", 2.0), until=30.9)
    with pytest.raises(LineFault):  # 29.9 s after dialling: still ringing
        s.progress.wait_answer(0.05)
    s.hear(until=31.1)
    with pytest.raises(CallFailed) as failed:
        s.progress.wait_answer(1)
    assert failed.value.state == "NoAnswer"


def test_speech_is_an_answer_unless_a_failing_tone_follows_at_once() -> None:
    answered = Script()
    answered.hear(us("dial", 0.2))
    answered.dialled_at(1.0)
    answered.hear(us("ringback", 2.0), Voice(7.5), until=9.6)
    assert answered.progress.wait_answer(1) == 7.5
    # Ringing, then the far end rejects: the energy before its busy tone is
    # recognised looks like speech, and is not an answer.
    rejected = Script()
    rejected.hear(us("dial", 0.2))
    rejected.dialled_at(1.0)
    rejected.hear(us("ringback", 2.0), ToneEnd(7.0, "ringback"), Voice(7.0), until=8.5)
    rejected.hear(us("busy", 7.0), until=8.7)
    with pytest.raises(CallFailed) as failed:
        rejected.progress.wait_answer(1)
    assert failed.value.state == "Busy"


def test_the_echo_of_our_own_dialling_is_not_an_answer() -> None:
    s = Script()
    s.hear(us("dial", 0.2), Voice(0.9), until=1.5)  # our digits, heard back while dialling
    s.dialled_at(1.6)
    s.hear(Voice(1.7), until=4.0)  # the last digit's echo, just after
    s.hear(us("ringback", 4.5), until=5.0)
    with pytest.raises(LineFault):
        s.progress.wait_answer(0.05)


def test_a_far_end_that_never_rings_back_and_stays_silent_has_answered() -> None:
    s = Script()
    s.hear(us("dial", 0.2))
    s.dialled_at(1.0)
    s.hear(Silence(1.5), until=9.4)
    with pytest.raises(LineFault):
        s.progress.wait_answer(0.05)
    s.hear(until=9.6)
    assert s.progress.wait_answer(1) == 1.5


def test_a_polarity_reversal_is_an_answer_at_once() -> None:
    s = Script()
    s.hear(us("dial", 0.2))
    s.dialled_at(1.0)
    s.hear(Reversal(3.0))
    assert s.progress.wait_answer(1) == 3.0


def test_on_hook_ends_the_waits_and_a_silent_hearing_is_a_fault() -> None:
    s = Script()
    stopper = threading.Timer(0.05, s.progress.stop)
    stopper.start()
    with pytest.raises(LineInterrupted):
        s.progress.wait_dial_tone(10)
    quiet = Script()
    with pytest.raises(LineFault, match="hearing stopped"):
        quiet.progress.wait_dial_tone(0.05)


@pytest.fixture
def told() -> Told:
    return Told()


def ears_for(told: Told, hears: Hears = Hears.TONES | Hears.LOOP | Hears.KEYS) -> Ears:
    ears = Ears("line1", hears)
    ears.handler = told
    ears.start()
    return ears


@pytest.mark.parametrize(("event", "why"), [
    (us("busy", 20.0), "busy tone"), (us("congestion", 20.0), "congestion tone"),
    (us("dial", 20.0), "dial tone"), (LoopBreak(20.0, 400), "loop current broke for 400 ms"),
])
def test_the_far_end_leaving_during_the_talk(told: Told, event: LineEvent, why: str) -> None:
    ears = ears_for(told)
    ears.heard([us("busy", 5.0)])  # before the talk: the set-up's business, not a leaving
    ears.talking()
    ears.heard([LoopBreak(10.0, 100)])  # shorter than the exchange's disconnect break
    assert told.left == []
    ears.heard([event])
    ears.heard([us("busy", 30.0)])  # told once
    assert told.left == [why]


def test_keys_are_passed_on(told: Told) -> None:
    ears = ears_for(told)
    ears.talking()
    ears.heard([Dtmf(3.0, "1", 80), Dtmf(3.5, "#", 90)])
    assert [key for key, _ in told.keys] == ["1", "#"]


class FastSource:
    """A capture that delivers as fast as it is read, like ALSA's file plugin."""

    rate = 8000

    def __init__(self, fail_after: int | None = None) -> None:
        self.reads = 0
        self.fail_after = fail_after
        self.closed = False

    def read(self) -> Samples:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise LineFault("the capture device vanished")
        return np.zeros(800, dtype=np.int16)  # 100 ms

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def loops() -> Iterator[list[CaptureLoop]]:
    made: list[CaptureLoop] = []
    yield made
    for loop in made:
        loop.stop()


def test_a_fast_capture_is_paced_to_the_line(told: Told, loops: list[CaptureLoop]) -> None:
    ears = ears_for(told, Hears.TONES | Hears.VOICE)
    source = FastSource()
    loop = CaptureLoop("line1", lambda: source, ears)
    loops.append(loop)
    started = time.monotonic()
    loop.start()
    while time.monotonic() - started < 0.5:
        # Never further ahead of the wall clock than its lead (0.2 s) and one
        # block (0.1 s): a file is heard as a line would be.
        assert ears.time <= time.monotonic() - started + 0.3 + 0.01
        time.sleep(0.01)
    assert ears.time >= 0.3  # and it does keep up
    loop.stop()
    assert source.closed


def test_a_failing_capture_is_a_fault_told_to_the_call_layer(
        told: Told, loops: list[CaptureLoop]) -> None:
    ears = ears_for(told, Hears.VOICE)
    loop = CaptureLoop("line1", lambda: FastSource(fail_after=3), ears, speed=0)
    loops.append(loop)
    loop.start()
    assert told.changed.wait(10)
    assert [str(f) for f in told.faults] == ["the capture device vanished"]
