"""The Listener the call layer drives: its own keys' echo, block sizes, the JSON shapes, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.detect import Dtmf, Listener, Silence, Tone, ToneEnd, Voice
from gateway.errors import DetectError
from gateway.keys import parse_keys
from gateway.tones import Timing, ToneEngine, TonePlan, ToneSettings
from tests import sox_signals as sx
from tests.sox_signals import needs_sox


def feed_all(listener: Listener, pcm: np.ndarray, step: int = 800) -> list[object]:
    events = [e for i in range(0, len(pcm), step) for e in listener.feed(pcm[i: i + step])]
    return events + listener.flush()


def own_keys_and_echo(keys: str, lead_s: float, delay_s: float, loss_db: float
                      ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """What the gateway sends (its own tone engine: these are its keys) and
    that audio as the line's echo brings it back: ``loss_db`` down, ``delay_s`` late."""
    engine = ToneEngine(ToneSettings(rate=8000))
    timing = Timing(100, 100)
    sent = engine.render(TonePlan(parse_keys(keys), timing)).astype(np.float64)
    start = int(8000 * (lead_s + delay_s))
    echo = np.zeros(start + len(sent))
    echo[start:] = sent * 10 ** (-loss_db / 20)
    marks = [(k, lead_s + i * 0.2, lead_s + i * 0.2 + 0.1) for i, k in enumerate(keys)]
    return echo, marks


@needs_sox
@pytest.mark.parametrize(("delay_ms", "loss_db"), [(2, 6.0), (5, 12.0), (30, 20.0)])
def test_the_gateways_own_keys_in_the_echo_are_not_the_far_ends(delay_ms: int,
                                                                loss_db: float) -> None:
    echo, marks = own_keys_and_echo("123#", 0.5, delay_ms / 1000, loss_db)
    # The far end presses 7 and then 3 (a key the gateway sent too) after them.
    far = sx.synth([(1.6, []), *sx.keys("73", on_s=0.08, off_s=0.3, level=-20, lead_s=0.0)])
    n = max(len(echo), len(far))
    line = np.zeros(n)
    line[: len(echo)] += echo
    line[: len(far)] += far
    pcm = np.round(line).astype(np.int16)

    deaf = [e for e in feed_all(Listener("us"), pcm) if isinstance(e, Dtmf)]
    assert "".join(e.key for e in deaf) == "123#73", "the echo must be loud enough to hear"

    listener = Listener("us")
    for key, start, end in marks:
        listener.own_key(key, start, end)
    heard = [e for e in feed_all(listener, pcm) if isinstance(e, Dtmf)]
    assert [e.key for e in heard] == ["7", "3"]
    assert heard[0].t == pytest.approx(1.6, abs=0.005)


def test_own_keys_far_in_the_past_are_forgotten() -> None:
    listener = Listener("us")
    listener.own_key("5", 0.0, 0.1)
    listener.feed(np.zeros(8000 * 40, np.int16))
    listener.own_key("6", 40.0, 40.1)
    assert [own[0] for own in listener._own] == ["6"]


@needs_sox
def test_the_events_do_not_depend_on_the_block_size() -> None:
    words, rate = (sx.speech("Hello, you are through.", "en") if sx.ESPEAK else
                   (sx.noise(1.0), 8000))
    pcm = np.concatenate([
        sx.synth([(0.3, []), (2.0, [(350.0, -16.0), (440.0, -16.0)])]),
        sx.synth(sx.keys("159#", on_s=0.05, off_s=0.05)),
        sx.synth(sx.cadence((440, 480), (2000, 4000), 7.0)),
        sx.resample(words, rate, 8000), np.zeros(8000, np.int16)])
    reference = feed_all(Listener("us"), pcm, step=len(pcm))
    kinds = {type(e) for e in reference}
    assert {Dtmf, Tone, ToneEnd, Voice, Silence} <= kinds, reference
    for step in (37, 160, 1000, 4001):
        # Each feed's events come in time order; across feeds, in the order
        # they became certain (a key is certain only at its end).
        events = feed_all(Listener("us"), pcm, step=step)
        assert sorted(events, key=lambda e: e.t) == reference, step  # type: ignore[attr-defined]


def test_times_count_samples_at_the_capture_rate() -> None:
    listener = Listener("us", 44100)
    listener.feed(np.zeros(44100 * 3 + 50, np.int16))
    assert listener.time == pytest.approx(3 + 50 / 44100)
    listener.reset()
    assert listener.time == 0.0


def test_reset_forgets_what_was_heard() -> None:
    low, high = 770.0, 1336.0
    t = np.arange(8000) / 8000
    tone = (6000 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))).astype(np.int16)
    listener = Listener("us")
    listener.feed(tone[:4000])
    assert listener.key_sounding
    listener.reset()
    events = feed_all(listener, np.zeros(8000, np.int16))
    assert not any(isinstance(e, Dtmf) for e in events)


def test_the_json_shapes_of_the_issue() -> None:
    assert json.loads(Dtmf(1.23, "5", 80).to_json()) == {
        "t": 1.23, "event": "dtmf", "key": "5", "duration_ms": 80}
    assert Dtmf(1.23, "5", 80).to_json() == (
        '{"t": 1.230, "event": "dtmf", "key": "5", "duration_ms": 80}')
    assert Tone(0.0, "dial", "us").to_json() == (
        '{"t": 0.000, "event": "tone", "tone": "dial", "country": "us"}')
    assert ToneEnd(4.1, "ringback").to_json() == (
        '{"t": 4.100, "event": "tone_end", "tone": "ringback"}')
    assert Voice(4.35).to_json() == '{"t": 4.350, "event": "voice"}'
    assert Silence(9.0).to_json() == '{"t": 9.000, "event": "silence"}'


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Listener("xx"), "unknown country 'xx' (one of: at, au, ca, ch, de"),
    (lambda: Listener("us", 500), "sample rate 500 Hz is not usable"),
    (lambda: Listener("us", silence_s=0), "silence_s 0 is outside 0.1 to 600 s"),
    (lambda: Listener("us").feed(np.zeros((10, 2))), "feed takes one channel"),
    (lambda: Listener("us").own_key("x", 0, 1), "own_key: 'x' is not a DTMF key"),
    (lambda: Listener("us").own_key("1", 2, 1), "own_key: end 1 is before start 2"),
])
def test_bad_arguments_are_clear_errors(make: object, message: str) -> None:
    with pytest.raises(DetectError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()  # type: ignore[operator]
