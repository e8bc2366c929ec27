"""What a simulated far end sounds like: national tones, its keys, a voice.

A generator of its own, independent of the gateway's tone engine
(:mod:`gateway.tones`) and of the detectors' tables
(:mod:`gateway.detect.countries`): the tables here are typed in from the
published sources, so a slip in either side shows up as a tone the
gateway fails to recognise instead of hiding in a shared constant.

Call-progress tones are written as PBXs publish them (Asterisk's
``indications.conf``, after ITU-T E.180 Supplement 2): ``f1+f2/ms`` sounds
the frequencies together for ``ms``, ``0/ms`` is silence, an element
without a duration sounds for ever, ``f*m`` is ``f`` amplitude-modulated
at ``m`` Hz, and the list repeats.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.tones import Samples

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float64]

#: Per country: dial tone, ringback, busy and congestion (reorder), from
#: Asterisk's ``configs/samples/indications.conf.sample`` (E.180 Suppl. 2;
#: au from AS/CA S002). Where a country has no congestion tone of its own
#: (hu, jp) it plays its busy tone; au's congestion is its busy tone with
#: every other burst at 420 Hz.
NATIONAL_TONES: dict[str, dict[str, str]] = {
    "us": {"dial": "350+440", "ringback": "440+480/2000,0/4000",
           "busy": "480+620/500,0/500", "congestion": "480+620/250,0/250"},
    "uk": {"dial": "350+440", "ringback": "400+450/400,0/200,400+450/400,0/2000",
           "busy": "400/375,0/375", "congestion": "400/400,0/350,400/225,0/525"},
    "de": {"dial": "425", "ringback": "425/1000,0/4000",
           "busy": "425/480,0/480", "congestion": "425/240,0/240"},
    "fr": {"dial": "440", "ringback": "440/1500,0/3500",
           "busy": "440/500,0/500", "congestion": "440/250,0/250"},
    "it": {"dial": "425/200,0/200,425/600,0/1000", "ringback": "425/1000,0/4000",
           "busy": "425/500,0/500", "congestion": "425/200,0/200"},
    "es": {"dial": "425", "ringback": "425/1500,0/3000",
           "busy": "425/200,0/200", "congestion": "425/200,0/200,425/200,0/200,425/200,0/600"},
    "nl": {"dial": "425", "ringback": "425/1000,0/4000",
           "busy": "425/500,0/500", "congestion": "425/250,0/250"},
    "at": {"dial": "420", "ringback": "420/1000,0/5000",
           "busy": "420/400,0/400", "congestion": "420/200,0/200"},
    "ch": {"dial": "425", "ringback": "425/1000,0/4000",
           "busy": "425/500,0/500", "congestion": "425/200,0/200"},
    "hu": {"dial": "425", "ringback": "425/1250,0/3750",
           "busy": "425/300,0/300", "congestion": "425/300,0/300"},
    "au": {"dial": "413+438", "ringback": "413+438/400,0/200,413+438/400,0/2000",
           "busy": "425/375,0/375", "congestion": "425/375,0/375,420/375,0/375"},
    "nz": {"dial": "400", "ringback": "400+450/400,0/200,400+450/400,0/2000",
           "busy": "400/500,0/500", "congestion": "400/250,0/250"},
    # NTT's ringback is 400 Hz modulated at 16 Hz (Asterisk writes "400+15").
    "jp": {"dial": "400", "ringback": "400*16/1000,0/2000",
           "busy": "400/500,0/500", "congestion": "400/500,0/500"},
}
NATIONAL_TONES["ca"] = NATIONAL_TONES["us"]

#: The special information tone of ITU-T Q.35 / E.180 (950, 1400, 1800 Hz,
#: 330 ms each, then a second of silence), and the national variants of it.
SIT = "950/330,1400/330,1800/330,0/1000"
NATIONAL_SIT = {
    "uk": "950/330,0/15,1400/330,0/15,1800/330,0/1000",  # BT SIN 350
    "at": "950/330,1450/330,1850/330,0/1000",
}

#: Levels per frequency in dBm0, those of the North American precise tone
#: plan; E.180 leaves levels to each country, and these lie inside the
#: range the others use.
TONE_DBM0 = {"dial": -13.0, "ringback": -19.0, "busy": -24.0, "congestion": -24.0,
             "sit": -24.0}

#: DTMF frequencies of ITU-T Q.23, keys in the order of the keypad's rows.
Q23_ROWS = (697.0, 770.0, 852.0, 941.0)
Q23_COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
Q23_KEYS = "123A456B789C*0#D"
#: A telephone set's keys: the high group 2 dB above the low one.
KEY_LOW_DBM0, KEY_HIGH_DBM0 = -9.0, -7.0

#: What the far party says when it answers, and its level (speech RMS).
GREETING = "Hello, you are through to the far end."
SPEECH_DBM0 = -20.0

#: Tone bursts rise and fall in this long (a raised cosine): an exchange's
#: gate is not a click.
EDGE_MS = 2.0
#: Amplitude modulation depth of ``f*m`` (Asterisk's fixed 90 %).
AM_DEPTH = 0.9
FULL_SCALE = 32767.0


def amplitude(dbm0: float) -> float:
    """A sine's peak at ``dbm0``, in int16 units (0 dBm0: 3.14 dB below full scale)."""
    return FULL_SCALE * 10 ** ((dbm0 - 3.14) / 20)


def to_pcm(x: Floats) -> Samples:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a tone list: what sounds, for how long (None: for ever)."""

    hz: tuple[float, ...]
    ms: float | None
    modulation_hz: float = 0.0


def parse_tone(spec: str) -> tuple[Element, ...]:
    """``"425/480,0/480"`` and its like (see the module's docstring)."""
    elements: list[Element] = []
    for item in spec.split(","):
        sound, _, ms = item.strip().partition("/")
        modulation = 0.0
        hz: tuple[float, ...]
        if "*" in sound:
            carrier, _, mod = sound.partition("*")
            hz, modulation = (float(carrier),), float(mod)
        else:
            hz = tuple(float(f) for f in sound.split("+") if float(f) > 0)
        elements.append(Element(hz, float(ms) if ms else None, modulation))
    if any(e.ms is None for e in elements) and len(elements) > 1:
        raise ValueError(f"{spec!r}: only a tone of one element may sound for ever")
    return tuple(elements)


class CadencedTone:
    """A national tone at one level, rendered for any stretch of its own time.

    :meth:`render` is a pure function of the offset (samples since the tone
    began), so the tone is the same whatever blocks it is read in.
    """

    def __init__(self, spec: str, dbm0: float, rate: int) -> None:
        self.spec = spec
        self.elements = parse_tone(spec)
        self.rate = rate
        self.peak = amplitude(dbm0)
        self.cycle_ms = None if self.elements[0].ms is None else sum(
            e.ms or 0.0 for e in self.elements)
        ends = np.cumsum([e.ms or 0.0 for e in self.elements])
        self._ends = ends
        self._starts = ends - [e.ms or 0.0 for e in self.elements]

    @property
    def sound_ms(self) -> float:
        """From a cycle's start to the end of its last sound: one ring of a ringback."""
        last = max(i for i, e in enumerate(self.elements) if e.hz)
        return float(self._ends[last])

    def render(self, offset: int, n: int) -> Floats:
        t = (offset + np.arange(n)) / self.rate
        if self.cycle_ms is None:
            return self._sound(self.elements[0], t)
        out = np.zeros(n)
        pos = (t * 1000.0) % self.cycle_ms
        which = np.minimum(np.searchsorted(self._ends, pos, side="right"),
                           len(self.elements) - 1)
        edge = np.minimum(pos - self._starts[which], self._ends[which] - pos) / EDGE_MS
        envelope = 0.5 - 0.5 * np.cos(np.pi * np.clip(edge, 0.0, 1.0))
        for i, element in enumerate(self.elements):
            if element.hz:
                mask = which == i
                out[mask] = self._sound(element, t[mask]) * envelope[mask]
        return out

    def _sound(self, element: Element, t: Floats) -> Floats:
        wave = np.zeros(len(t))
        for hz in element.hz:
            wave += np.sin(2 * np.pi * hz * t)
        if element.modulation_hz:
            wave *= (1 + AM_DEPTH * np.sin(2 * np.pi * element.modulation_hz * t)) / (1 + AM_DEPTH)
        return self.peak * wave


def national_tone(country: str, name: str, rate: int) -> CadencedTone:
    """``name`` (dial, ringback, busy, congestion, sit) as ``country`` plays it."""
    spec = NATIONAL_SIT.get(country, SIT) if name == "sit" else NATIONAL_TONES[country][name]
    return CadencedTone(spec, TONE_DBM0[name], rate)


@functools.lru_cache(maxsize=64)
def key_burst(key: str, samples: int, rate: int) -> Samples:
    """One key of a telephone set: its Q.23 pair for ``samples`` (read-only)."""
    index = Q23_KEYS.index(key)
    low, high = Q23_ROWS[index // 4], Q23_COLUMNS[index % 4]
    t = np.arange(samples) / rate
    edge = np.minimum(np.arange(samples) + 0.5, samples - np.arange(samples) - 0.5)
    envelope = 0.5 - 0.5 * np.cos(np.pi * np.clip(edge / (EDGE_MS * rate / 1000), 0.0, 1.0))
    wave = (amplitude(KEY_LOW_DBM0) * np.sin(2 * np.pi * low * t)
            + amplitude(KEY_HIGH_DBM0) * np.sin(2 * np.pi * high * t))
    burst = to_pcm(wave * envelope)
    burst.setflags(write=False)
    return burst


def synthetic_voice(rate: int, seconds: float = 2.4) -> Floats:
    """Something the detectors hear as speech and never as a tone or a key,
    without a synthesiser: syllables of a harmonic-rich voice whose pitch
    glides all the time (no tone holds still long enough to be one), its
    harmonics shaped by formants that move from syllable to syllable."""
    n = round(rate * seconds)
    t = np.arange(n) / rate
    syllable_s = 0.24
    within = (t % syllable_s) / syllable_s
    index = np.floor(t / syllable_s)
    # 100-190 Hz, falling through each syllable and wandering between them.
    pitch = 150 + 25 * np.sin(2 * np.pi * 0.6 * t) + 30 * (0.5 - within)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    formants = (500 + 250 * np.sin(index * 1.7), 1500 + 400 * np.sin(index * 2.3), 2500.0)
    voice = np.zeros(n)
    for k in range(1, int(3400 / 190)):
        hz = k * pitch
        gain = sum(np.exp(-(((hz - f) / 180.0) ** 2)) for f in formants) + 0.05
        voice += gain * np.sin(k * phase) / k**0.5
    # Voiced for 70 % of each syllable, with soft edges; a pause every 4th.
    envelope = np.sin(np.pi * np.clip(within / 0.7, 0.0, 1.0)) ** 2
    envelope[index % 4 == 3] = 0.0
    return np.asarray(voice * envelope, dtype=np.float64)


def _at_speech_level(x: Floats) -> Samples:
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    power = np.mean(frames**2, axis=1)
    voiced = power[power > power.max() * 1e-3]
    rms = float(np.sqrt(np.mean(voiced))) if voiced.size else 1.0
    # A sine at the level has an RMS of its peak / sqrt(2).
    return to_pcm(x * (amplitude(SPEECH_DBM0) / np.sqrt(2) / rms))


@functools.lru_cache(maxsize=8)
def greeting(rate: int, synthesiser: bool = True) -> Samples:
    """The far party's "hello" at ``rate``: espeak-ng when it is installed
    (``synthesiser``), else :func:`synthetic_voice` (read-only)."""
    x: Floats | None = None
    if synthesiser:
        from gateway.speech import Synthesiser
        from gateway.tones import ToneSettings

        try:
            x = Synthesiser().render(GREETING, "en", ToneSettings(rate=rate)).astype(np.float64)
        except Exception as exc:  # not installed, or failing: the far end still speaks
            log.debug("far end's voice without espeak-ng: %s", exc)
    voice = _at_speech_level(x if x is not None and x.size else synthetic_voice(rate))
    voice.setflags(write=False)
    return voice


class Schedule:
    """Audio placed at sample positions on a timeline, taken block by block
    in time order (what is taken is forgotten). Overlapping pieces add up."""

    def __init__(self, channels: int = 1) -> None:
        self.channels = channels
        self._pieces: list[tuple[int, Floats]] = []

    def add(self, start: int, audio: npt.ArrayLike) -> None:
        piece = np.asarray(audio, dtype=np.float64).reshape(-1, self.channels)
        if len(piece):
            self._pieces.append((start, piece))

    def cut(self, at: int) -> None:
        """Nothing from sample ``at`` on."""
        self._pieces = [(start, piece[: at - start]) for start, piece in self._pieces
                        if start < at]

    def take(self, start: int, n: int) -> Floats:
        """Samples ``start`` to ``start + n``: an (n, channels) array."""
        out = np.zeros((n, self.channels))
        kept = []
        for at, piece in self._pieces:
            a, b = max(start, at), min(start + n, at + len(piece))
            if a < b:
                out[a - start : b - start] += piece[a - at : b - at]
            if at + len(piece) > start + n:
                kept.append((at, piece))
        self._pieces = kept
        return out
