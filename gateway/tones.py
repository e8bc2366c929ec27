"""DTMF synthesis with numpy: key strings to int16 PCM.

Frequencies are ITU-T Q.23's. Every limit keeps a key inside what Q.24
receivers accept (:mod:`gateway.q24`), with a margin for the line between
them: tone and gap lengths, twist (the high group is sent ``twist_db`` above
the low group, as generators customarily do) and level, whose maximum puts
the true peak of the two tones together a margin below full scale.

A digit's ``duration`` and ``gap`` are what a receiver times: the distance
between the tone's half-amplitude (-6 dB) points. Its raised-cosine ramps are
centred on those points, half outside the nominal tone and half inside, so
they keep the burst's spectrum inside the two tones without shortening it.

The engine knows nothing of HTTP, config files or hardware: drivers give it a
:class:`ToneSettings` and a :class:`TonePlan` and get samples back.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway import q24
from gateway.errors import ToneSettingsError
from gateway.keys import KEYS, Flash, Pause, Symbol, Tone

LOW_GROUP_HZ = (697.0, 770.0, 852.0, 941.0)
HIGH_GROUP_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
# Q.23's 4x4 matrix, row by row: "123A", "456B", "789C", "*0#D".
FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (LOW_GROUP_HZ[i // 4], HIGH_GROUP_HZ[i % 4]) for i, key in enumerate(KEYS)
}

SAMPLE_RATES = (8000, 16000, 22050, 44100, 48000)
DURATION_MS = (40, 2000)
GAP_MS = (50, 5000)
FULL_SCALE = 32767

#: Of Q.24's 8 dB for a low group louder than the high group, this much is
#: left to the line, whose loss rises with frequency and so adds twist this
#: way (several dB on a long loop), and to receivers that fall short of Q.24
#: here: multimon-ng's, an energy-share test in each group, misses keys from
#: about 4.5 dB.
LINE_TWIST_ALLOWANCE_DB = 5.0
#: Q.24's 4 dB for a louder high group is a receiver's edge, not its comfort:
#: measured, +4 dB already loses keys in one receiver and +3 dB none in two.
REVERSE_TWIST_MARGIN_DB = 1.0
#: ``twist_db`` (high group above low group, in dB): -3 to +3.
TWIST_DB = (
    -(q24.MAX_LOW_OVER_HIGH_DB - LINE_TWIST_ALLOWANCE_DB),
    q24.MAX_HIGH_OVER_LOW_DB - REVERSE_TWIST_MARGIN_DB,
)
#: The longest ramp is an eighth of the shortest tone: at 40 ms on and 50 ms
#: off a burst still has 35 ms at full amplitude and the gap 45 ms of
#: silence, more than Q.24's 40 ms pause. The shortest is 1 ms: below that
#: an edge's band-limited peak overshoots the samples' (by 0.4 dB at 8 kHz
#: with no ramp at all), eating the true-peak margin.
RAMP_MS = (1.0, DURATION_MS[0] / 8)
#: Headroom between the true (inter-sample) peak of both tones together and
#: full scale. It absorbs the overshoot of a resampler or a 300-3400 Hz
#: band-pass and stays under G.711's ceilings (mu-law decodes to at most
#: 0.17 dB below 16-bit full scale, A-law 0.14 dB), with room left for a
#: sound card's own filters.
TRUE_PEAK_MARGIN_DB = 1.0
#: The quietest low-group level; the loudest depends on twist, see
#: :func:`max_level_dbfs`.
MIN_LEVEL_DBFS = -60.0

Samples = npt.NDArray[np.int16]


def max_level_dbfs(twist_db: float) -> float:
    """The loudest low-group level at ``twist_db``, rounded down to 0.01 dB.

    Two sines of unrelated frequency line their peaks up sooner or later, so
    the true peak is the sum of their amplitudes: at this level it sits
    :data:`TRUE_PEAK_MARGIN_DB` below full scale (-8.08 dBFS at +2 dB twist).
    """
    sum_db = 20.0 * math.log10(1.0 + 10.0 ** (twist_db / 20.0))
    return math.floor((-TRUE_PEAK_MARGIN_DB - sum_db) * 100.0) / 100.0


def _span(low: float, high: float, unit: str) -> str:
    return f"{low:g} to {high:+g} {unit}" if low < 0 < high else f"{low:g} to {high:g} {unit}"


@dataclass(frozen=True, slots=True)
class Timing:
    """How long each digit sounds and how long the line is quiet after it,
    both between the tone's half-amplitude points."""

    duration_ms: int = 100
    gap_ms: int = 100

    def __post_init__(self) -> None:
        _check_range("duration", self.duration_ms, DURATION_MS)
        _check_range("gap", self.gap_ms, GAP_MS)


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToneSettingsError(f"{name} must be a whole number of milliseconds")
    if value < low:
        raise ToneSettingsError(f"{name} {value} ms is below the minimum {low} ms")
    if value > high:
        raise ToneSettingsError(f"{name} {value} ms is above the maximum {high} ms")


@dataclass(frozen=True, slots=True)
class TonePlan:
    """What to put on the line: parsed keys and their timing."""

    symbols: tuple[Symbol, ...]
    timing: Timing = Timing()

    @property
    def seconds(self) -> float:
        """Ideal time on the line: every digit plus its gap, plus the pauses
        (a hook flash is the line's, not the plan's: it counts nothing here)."""
        ms = 0
        for symbol in self.symbols:
            if isinstance(symbol, Tone):
                ms += self.timing.duration_ms + self.timing.gap_ms
            elif isinstance(symbol, Pause):
                ms += symbol.ms
        return ms / 1000.0

    def key_times(self) -> list[tuple[str, float, float]]:
        """Each key with its start and end (seconds from the plan's start,
        between the -6 dB points), as the tone engine renders them."""
        out: list[tuple[str, float, float]] = []
        ms = 0
        for symbol in self.symbols:
            if isinstance(symbol, Tone):
                out.append((symbol.key, ms / 1000, (ms + self.timing.duration_ms) / 1000))
                ms += self.timing.duration_ms + self.timing.gap_ms
            elif isinstance(symbol, Pause):
                ms += symbol.ms
        return out

    @property
    def flashes(self) -> int:
        return sum(1 for symbol in self.symbols if isinstance(symbol, Flash))

    def split(self) -> list[TonePlan | None]:
        """The plan in parts between its hook flashes: a plan of keys, or None
        for a flash."""
        parts: list[TonePlan | None] = []
        run: list[Symbol] = []
        for symbol in self.symbols:
            if isinstance(symbol, Flash):
                if run:
                    parts.append(TonePlan(tuple(run), self.timing))
                    run = []
                parts.append(None)
            else:
                run.append(symbol)
        if run:
            parts.append(TonePlan(tuple(run), self.timing))
        return parts


@dataclass(frozen=True, slots=True)
class ToneSettings:
    """Sample format and level of the rendered audio."""

    rate: int = 8000
    level_dbfs: float = -12.0
    twist_db: float = 2.0
    ramp_ms: float = 4.0

    def __post_init__(self) -> None:
        if self.rate not in SAMPLE_RATES:
            rates = ", ".join(map(str, SAMPLE_RATES))
            raise ToneSettingsError(f"rate {self.rate} Hz is not one of {rates}")
        # Written as "not inside" so that NaN, which fails every comparison,
        # is refused too.
        if not TWIST_DB[0] <= self.twist_db <= TWIST_DB[1]:
            raise ToneSettingsError(
                f"twist {self.twist_db:g} dB is outside {_span(*TWIST_DB, 'dB')}"
            )
        if not RAMP_MS[0] <= self.ramp_ms <= RAMP_MS[1]:
            raise ToneSettingsError(f"ramp {self.ramp_ms:g} ms is outside {_span(*RAMP_MS, 'ms')}")
        loudest = max_level_dbfs(self.twist_db)
        if not MIN_LEVEL_DBFS <= self.level_dbfs <= loudest:
            span = _span(MIN_LEVEL_DBFS, loudest, "dBFS")
            raise ToneSettingsError(
                f"level {self.level_dbfs:g} dBFS is outside {span} at {self.twist_db:g} dB twist"
                f" (true peak {TRUE_PEAK_MARGIN_DB:g} dB below full scale)"
            )

    @property
    def low_amplitude(self) -> float:
        """Peak of the low-group sine as a fraction of full scale."""
        return float(10.0 ** (self.level_dbfs / 20.0))

    @property
    def high_amplitude(self) -> float:
        return float(10.0 ** ((self.level_dbfs + self.twist_db) / 20.0))

    def samples(self, ms: float) -> int:
        return round(self.rate * ms / 1000.0)

    @property
    def ramp_samples(self) -> float:
        return self.rate * self.ramp_ms / 1000.0

    @property
    def ramp_reach(self) -> int:
        """How many samples a digit's ramp sounds before its half-amplitude
        start (and after its half-amplitude end)."""
        return math.ceil(self.ramp_samples / 2) - 1


def _raised_cosine(u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """0 at ``u <= 0``, 1 at ``u >= 1``, 0.5 at ``u = 0.5``, smooth between."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0))


class ToneEngine:
    """Renders tone plans. Digits are cached per (key, length): a 128-key string
    is at most 32 distinct syntheses and one placement each."""

    def __init__(self, settings: ToneSettings | None = None) -> None:
        self.settings = settings or ToneSettings()
        self._bursts: dict[tuple[str, int], Samples] = {}
        self._digits: dict[tuple[str, int], Samples] = {}

    def _envelope(self, n: int) -> npt.NDArray[np.float64]:
        """Ramps inside ``n`` samples, for tones whose length is their whole extent."""
        ramp = min(self.settings.samples(self.settings.ramp_ms), n // 2)
        envelope = np.ones(n)
        if ramp > 0:
            rise = _raised_cosine((np.arange(ramp) + 0.5) / ramp)
            envelope[:ramp] = rise
            envelope[n - ramp :] = rise[::-1]
        return envelope

    def _wave(
        self, frequencies: tuple[float, ...], amplitudes: tuple[float, ...], n: int
    ) -> npt.NDArray[np.float64]:
        t = np.arange(n) / self.settings.rate
        wave_ = np.zeros(n)
        for hz, amplitude in zip(frequencies, amplitudes, strict=True):
            wave_ += amplitude * np.sin(2.0 * np.pi * hz * t)
        return wave_

    def tone(
        self,
        frequencies: tuple[float, ...],
        duration_ms: float,
        amplitudes: tuple[float, ...] | None = None,
    ) -> Samples:
        """A plain single or dual tone (beeps, test signals, the tones of
        simulated hardware) exactly ``duration_ms`` long, its ramps inside."""
        if not 1 <= len(frequencies) <= 2:
            raise ToneSettingsError("a tone has one or two frequencies")
        nyquist = self.settings.rate / 2
        for hz in frequencies:
            if not 0 < hz < nyquist:
                raise ToneSettingsError(f"{hz} Hz is outside 0 to {nyquist:g} Hz")
        if duration_ms <= 0:
            raise ToneSettingsError("a tone needs a positive duration")
        if amplitudes is None:
            amplitudes = (self.settings.low_amplitude, self.settings.high_amplitude)[
                : len(frequencies)
            ]
        if sum(amplitudes) > 1.0:
            raise ToneSettingsError("the tone's amplitudes add up to more than full scale")
        n = max(self.settings.samples(duration_ms), 1)
        wave_ = self._wave(frequencies, amplitudes, n)
        return np.round(wave_ * self._envelope(n) * FULL_SCALE).astype(np.int16)

    def burst(self, key: str, samples: int) -> Samples:
        """One digit's tone exactly ``samples`` long, ramps inside (what a
        device gating its own oscillator emits); :meth:`render` uses :meth:`digit`."""
        cached = self._bursts.get((key, samples))
        if cached is None:
            cached = self.tone(FREQUENCIES[key], samples * 1000 / self.settings.rate)
            cached.setflags(write=False)
            self._bursts[(key, samples)] = cached
        return cached

    def digit(self, key: str, samples: int) -> Samples:
        """One digit whose half-amplitude points are ``samples`` apart.

        The ramps are centred on those points, so the result starts
        :attr:`ToneSettings.ramp_reach` samples before the first and ends as
        long after the second: ``samples + 2 * reach + 1`` samples in all.
        Sample ``reach`` is the -6 dB start.
        """
        cached = self._digits.get((key, samples))
        if cached is None:
            reach = self.settings.ramp_reach
            # Distance from the edge in ramp lengths, plus a half: 0.5 on the
            # edge itself, so the envelope is half amplitude there.
            rise = _raised_cosine(np.arange(-reach, reach + 1) / self.settings.ramp_samples + 0.5)
            envelope = np.ones(samples + 2 * reach + 1)
            envelope[: len(rise)] = rise
            envelope[-len(rise) :] = np.minimum(envelope[-len(rise) :], rise[::-1])
            amplitudes = (self.settings.low_amplitude, self.settings.high_amplitude)
            wave_ = self._wave(FREQUENCIES[key], amplitudes, len(envelope))
            cached = np.round(wave_ * envelope * FULL_SCALE).astype(np.int16)
            cached.setflags(write=False)
            self._digits[(key, samples)] = cached
        return cached

    def silence(self, ms: float) -> Samples:
        return np.zeros(self.settings.samples(ms), dtype=np.int16)

    def render(self, plan: TonePlan) -> Samples:
        """The plan as mono PCM: each digit, then its gap; pauses as silence.

        Every segment edge is placed on the sample nearest its ideal time,
        counted from the start, so rounding never accumulates over a long
        string. The whole timeline lies :attr:`ToneSettings.ramp_reach`
        samples late, so the first digit's rise starts at sample 0; the last
        gap ends as late in the next plan's rise, so between plans too the
        gap is whole at -6 dB.
        """
        rate = self.settings.rate
        out = np.zeros(round(plan.seconds * rate), dtype=np.int16)
        ms = 0
        for symbol in plan.symbols:
            if isinstance(symbol, Tone):
                start = round(ms * rate / 1000)
                ms += plan.timing.duration_ms
                digit = self.digit(symbol.key, round(ms * rate / 1000) - start)
                out[start : start + len(digit)] = digit
                ms += plan.timing.gap_ms
            elif isinstance(symbol, Pause):
                ms += symbol.ms
        return out


def route(mono: Samples, channels: int, tone_channels: frozenset[int]) -> Samples:
    """Interleaved frames of ``channels`` channels; ``mono`` only in ``tone_channels``."""
    if channels == 1:
        return mono if 0 in tone_channels else np.zeros_like(mono)
    frames = np.zeros((mono.shape[0], channels), dtype=np.int16)
    for channel in tone_channels:
        frames[:, channel] = mono
    return frames


def write_wav(path: str | Path, samples: Samples, rate: int) -> None:
    """Write 16-bit PCM; ``samples`` is mono (n,) or interleaved frames (n, channels)."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    # Open the file first: wave.open(path) leaves a half-built object behind
    # (and a warning on stderr) when the path cannot be created.
    with open(path, "wb") as f, wave.open(f, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


def read_wav(path: str | Path) -> tuple[Samples, int]:
    """Read 16-bit PCM written by :func:`write_wav` (or any 16-bit WAV)."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != 2:
            raise ToneSettingsError(f"{path}: only 16-bit WAV files are read")
        channels = src.getnchannels()
        data = np.frombuffer(src.readframes(src.getnframes()), dtype="<i2").astype(np.int16)
        rate = src.getframerate()
    return (data if channels == 1 else data.reshape(-1, channels)), rate
