"""Call-progress tones per country, SIT and line energy, with signals made by sox.

The tones below are typed in here from ITU-T E.180 Supplement 2 as Asterisk's
indications.conf and AS/CA S002 give them, not read from the detector's table:
(frequencies, cadence in ms on/off...; () is continuous). Real exchanges
drift a few percent in frequency and 10-20 % in cadence; each tone is also
tried 2.5 % off in frequency and 15 % off in cadence, both ways.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.detect import Listener, Silence, Tone, ToneEnd, Voice
from gateway.detect.events import Event
from tests import sox_signals as sx
from tests.sox_signals import needs_espeak, needs_sox

pytestmark = needs_sox

TONES: dict[str, dict[str, tuple[tuple[float, ...], tuple[int, ...]]]] = {
    "us": {"dial": ((350, 440), ()), "ringback": ((440, 480), (2000, 4000)),
           "busy": ((480, 620), (500, 500)), "congestion": ((480, 620), (250, 250))},
    "ca": {"dial": ((350, 440), ()), "ringback": ((440, 480), (2000, 4000)),
           "busy": ((480, 620), (500, 500)), "congestion": ((480, 620), (250, 250))},
    "uk": {"dial": ((350, 440), ()), "ringback": ((400, 450), (400, 200, 400, 2000)),
           "busy": ((400,), (375, 375)), "congestion": ((400,), (400, 350, 225, 525))},
    "de": {"dial": ((425,), ()), "ringback": ((425,), (1000, 4000)),
           "busy": ((425,), (480, 480)), "congestion": ((425,), (240, 240))},
    "fr": {"dial": ((440,), ()), "ringback": ((440,), (1500, 3500)),
           "busy": ((440,), (500, 500)), "congestion": ((440,), (250, 250))},
    "it": {"dial": ((425,), (200, 200, 600, 1000)), "ringback": ((425,), (1000, 4000)),
           "busy": ((425,), (500, 500)), "congestion": ((425,), (200, 200))},
    "es": {"dial": ((425,), ()), "ringback": ((425,), (1500, 3000)),
           "busy": ((425,), (200, 200)),
           "congestion": ((425,), (200, 200, 200, 200, 200, 600))},
    "nl": {"dial": ((425,), ()), "ringback": ((425,), (1000, 4000)),
           "busy": ((425,), (500, 500)), "congestion": ((425,), (250, 250))},
    "at": {"dial": ((420,), ()), "ringback": ((420,), (1000, 5000)),
           "busy": ((420,), (400, 400)), "congestion": ((420,), (200, 200))},
    "ch": {"dial": ((425,), ()), "ringback": ((425,), (1000, 4000)),
           "busy": ((425,), (500, 500)), "congestion": ((425,), (200, 200))},
    "hu": {"dial": ((425,), ()), "ringback": ((425,), (1250, 3750)),
           "busy": ((425,), (300, 300))},
    "au": {"dial": ((413, 438), ()), "ringback": ((413, 438), (400, 200, 400, 2000)),
           "busy": ((425,), (375, 375))},
    "nz": {"dial": ((400,), ()), "ringback": ((400, 450), (400, 200, 400, 2000)),
           "busy": ((400,), (500, 500)), "congestion": ((400,), (250, 250))},
    "jp": {"dial": ((400,), ()), "busy": ((400,), (500, 500))},
}
CASES = [(c, name) for c, tones in TONES.items() for name in tones]
#: (frequency factor, cadence factor): nominal, and drifted both ways.
DRIFTS = [(1.0, 1.0), (1.025, 1.15), (0.975, 0.85)]


def heard(pcm: np.ndarray, country: str, rate: int = 8000, block_s: float = 0.1) -> list[Event]:
    listener = Listener(country, rate)
    step = int(rate * block_s)
    events = [e for i in range(0, len(pcm), step) for e in listener.feed(pcm[i: i + step])]
    return events + listener.flush()


def tones_in(events: list[Event]) -> list[tuple[str, str]]:
    return [(type(e).__name__, e.tone) for e in events if isinstance(e, Tone | ToneEnd)]


def signal(hz: tuple[float, ...], pattern: tuple[int, ...], drift: tuple[float, float],
           seconds: float) -> np.ndarray:
    shift, stretch = drift
    lead: list[sx.Part] = [(0.5, [])]
    if pattern:
        body = sx.cadence(hz, pattern, seconds, stretch=stretch, shift=shift)
    else:
        body = [(seconds, [(f * shift, -16.0) for f in hz])]
    return sx.synth(lead + body + [(6.0, [])])


@pytest.mark.parametrize("drift", DRIFTS, ids=["nominal", "high-slow", "low-fast"])
@pytest.mark.parametrize(("country", "name"), CASES)
def test_each_countrys_tones_are_recognised_and_not_confused(
        country: str, name: str, drift: tuple[float, float]) -> None:
    hz, pattern = TONES[country][name]
    # Two cycles and a bit (so a tone that needs the second cycle gets it).
    seconds = max(4.0, 2.2 * sum(pattern) / 1000 * drift[1]) if pattern else 4.0
    events = heard(signal(hz, pattern, drift, seconds), country)
    found = tones_in(events)
    assert found == [("Tone", name), ("ToneEnd", name)], events
    start = next(e for e in events if isinstance(e, Tone))
    assert start.t == pytest.approx(0.5, abs=0.03) and start.country == country


@pytest.mark.parametrize("country", ["hu", "jp", "au"])
def test_where_congestion_is_the_busy_tone_it_is_reported_as_busy(country: str) -> None:
    # hu and jp: the same cadence; au (Asterisk): busy's cadence, alternate
    # bursts at 420 Hz instead of 425 Hz.
    parts: list[sx.Part] = [(0.5, [])]
    hz = {"hu": (425, 425), "jp": (400, 400), "au": (425, 420)}[country]
    on_ms = {"hu": 300, "jp": 500, "au": 375}[country]
    for i in range(8):
        parts += [(on_ms / 1000, [(hz[i % 2], -16.0)]), (on_ms / 1000, [])]
    assert tones_in(heard(sx.synth([*parts, (3.0, [])]), country)) == [
        ("Tone", "busy"), ("ToneEnd", "busy")]


def test_japanese_ringback_modulated_at_16_hz() -> None:
    """E.180: 400 Hz amplitude-modulated by 16 Hz (90 %), 1 s on, 2 s off:
    a carrier and two sidebands 16 Hz either side at 0.45 of its amplitude."""
    side = -16.0 + 20 * np.log10(0.45)
    am = [(400.0, -16.0), (384.0, side), (416.0, side)]
    parts: list[sx.Part] = [(0.5, [])]
    for _ in range(3):
        parts += [(1.0, am), (2.0, [])]
    assert tones_in(heard(sx.synth([*parts, (2.0, [])]), "jp")) == [
        ("Tone", "ringback"), ("ToneEnd", "ringback")]


@pytest.mark.parametrize("country", ["us", "de", "uk", "es", "it"])
def test_busy_and_congestion_stay_apart_at_the_edges_of_their_tolerance(country: str) -> None:
    """Busy 20 % fast and congestion 20 % slow are still told apart."""
    for name, stretch in (("busy", 0.8), ("congestion", 1.2)):
        hz, pattern = TONES[country][name]
        pcm = signal(hz, pattern, (1.0, stretch), 2.2 * sum(pattern) / 1000 * stretch + 2)
        assert tones_in(heard(pcm, country)) == [("Tone", name), ("ToneEnd", name)], name


@pytest.mark.parametrize(("country", "sit"), [
    ("us", ((913.8, 274), (1370.6, 274), (1776.7, 380))),
    ("de", ((950.0, 330), (1400.0, 330), (1800.0, 330))),
    ("at", ((950.0, 330), (1450.0, 330), (1850.0, 330))),
])
def test_special_information_tones(country: str, sit: tuple[tuple[float, int], ...]) -> None:
    parts: list[sx.Part] = [(0.5, [])]
    for _ in range(2):
        for hz, ms in sit:
            parts += [(ms / 1000, [(hz, -16.0)]), (0.015, [])]
        parts.append((1.0, []))
    events = heard(sx.synth([*parts, (2.0, [])]), country)
    assert tones_in(events) == [("Tone", "sit"), ("ToneEnd", "sit")]
    assert next(e for e in events if isinstance(e, Tone)).t == pytest.approx(0.5, abs=0.03)


def test_a_tone_that_is_no_tone_of_the_country_is_not_reported() -> None:
    # us busy frequencies with a cadence no us tone has, and a continuous 1 kHz.
    parts: list[sx.Part] = [(0.5, [])]
    for _ in range(5):
        parts += [(0.9, [(480.0, -16.0), (620.0, -16.0)]), (0.9, [])]
    parts += [(3.0, [(1000.0, -16.0)]), (1.0, [])]
    assert tones_in(heard(sx.synth(parts), "us")) == []


def test_silence_is_reported_after_a_tone_ends_and_at_the_start() -> None:
    pcm = sx.synth([(1.0, []), (3.0, [(350.0, -16.0), (440.0, -16.0)]), (2.0, [])])
    events = heard(pcm, "us")
    kinds = [(type(e).__name__, round(e.t, 2)) for e in events]
    assert kinds == [("Silence", 0.0), ("Tone", 1.0), ("ToneEnd", 4.0), ("Silence", 4.0)], kinds


@needs_espeak
def test_answer_ringback_stops_then_speech() -> None:
    """The sequence the call layer answers on: ringback, then the far end speaks
    in what would have been the ringback's silence."""
    words, rate = sx.speech("Hello, this is the far end speaking. How can I help you?", "en")
    words8k = sx.resample(words, rate, 8000)
    lead = sx.synth([(0.5, []), *sx.cadence((440, 480), (2000, 4000), 8.0), (1.0, [])])
    # ends at 0.5 + 2 + 4 + 2 = 8.5 s of tone, then 1 s of silence before the words.
    pcm = np.concatenate([lead[: int(9.5 * 8000)], words8k, np.zeros(8000, np.int16)])
    events = heard(pcm, "us")
    names = [type(e).__name__ for e in events]
    assert names[:3] == ["Tone", "ToneEnd", "Voice"], events
    assert events[1].t == pytest.approx(8.5, abs=0.03)
    onset = 9.5 + np.flatnonzero(np.abs(words8k) > 300)[0] / 8000
    assert events[2].t == pytest.approx(onset, abs=0.06)
    assert isinstance(events[-1], Silence) and events[-1].t > events[2].t


@needs_espeak
def test_voice_and_silence_timestamps() -> None:
    words, rate = sx.speech("One two three. Four five six.", "en")
    w = sx.resample(words, rate, 8000)
    pcm = np.concatenate([np.zeros(16000, np.int16), w, np.zeros(24000, np.int16)])
    events = heard(pcm, "de")
    voice = [e for e in events if isinstance(e, Voice)]
    silence = [e for e in events if isinstance(e, Silence)]
    loud = np.flatnonzero(np.abs(w) > 300)
    assert voice and voice[0].t == pytest.approx(2.0 + loud[0] / 8000, abs=0.06)
    assert silence[0].t == 0.0
    # The last silence starts where the speech ends (within a 20 ms hop or two).
    assert silence[-1].t == pytest.approx(2.0 + loud[-1] / 8000, abs=0.06)
    assert not tones_in(events)
