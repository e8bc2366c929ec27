"""What a capture that starts before the call set-up needs of the line's Ears:
nothing heard between off hook and track() is lost, and a capture that
fails fails the set-up waiting on it as the fault it is. Events are typed in."""

from __future__ import annotations

import threading

import pytest

from gateway.detect import Tone, ToneEnd, Voice
from gateway.errors import CallFailed, LineFault
from gateway.lines.hearing import Ears, Hears, ProgressRules
from tests.support import Told

RULES = ProgressRules(dial_tone_s=3.0, no_answer_s=60.0, confirm_s=2.0)


def ears() -> tuple[Ears, Told]:
    e = Ears("line1", Hears.TONES | Hears.VOICE)
    handler = Told()
    e.handler = handler
    e.start()
    return e, handler


def test_what_was_heard_before_the_set_up_was_followed_still_counts() -> None:
    e, handler = ears()
    # The capture heard dial tone (and even the ringback starting) before
    # the driver's command got round to following the set-up.
    e.heard([Tone(0.01, "dial", "us")], 0.7)
    progress = e.track("123", RULES)
    progress.wait_dial_tone(1)  # already heard: no wait
    progress.dialled()
    e.heard([Tone(2.2, "ringback", "us")], 4.6)
    assert handler.rings == 1
    e.heard([ToneEnd(10.2, "ringback"), Voice(11.2)], 12.3)
    assert progress.wait_answer(1) == 10.2


def test_ringing_heard_before_the_set_up_was_followed_is_told_once() -> None:
    e, handler = ears()
    e.heard([Tone(0.01, "dial", "us"), Tone(2.2, "ringback", "us")], 4.6)
    assert handler.rings == 0  # nobody was following the call yet
    progress = e.track("123", RULES)
    assert handler.rings == 1
    e.heard([Tone(8.2, "ringback", "us")], 9.0)
    assert handler.rings == 1
    # Dial tone came and went before the number could be dialled: the set-up
    # is past waiting for it.
    progress.wait_dial_tone(1)


def test_nothing_is_kept_for_a_call_that_was_connected_or_after_on_hook() -> None:
    e, _ = ears()
    e.talking()
    e.heard([Tone(1.0, "busy", "us")], 2.0)
    e.stop()
    e.heard([Tone(0.5, "busy", "us")], 2.5)
    e.start()
    progress = e.track("123", RULES)
    e.heard([Tone(0.01, "dial", "us")], 0.7)
    progress.dialled()
    # A busy tone from before would have failed the call at once.
    e.heard([], 5.0)
    with pytest.raises(LineFault, match="hearing stopped"):
        progress.wait_answer(0.05)


def test_a_capture_that_fails_fails_the_set_up_waiting_on_it() -> None:
    e, handler = ears()
    progress = e.track("123", RULES)
    e.heard([Tone(0.01, "dial", "us")], 0.7)
    progress.dialled()
    fault = LineFault("ALSA capture device 'hat': Input/output error")
    waiting: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            progress.wait_answer(10)
        except (LineFault, CallFailed) as exc:
            waiting.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    started.wait(5)
    e.failed(fault)
    thread.join(5)
    # The fault itself (an 801 for the Call), not "the line went on hook".
    assert waiting == [fault]
    assert handler.faults == [fault]
