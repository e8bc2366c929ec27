"""DTMF synthesis with numpy: key strings to int16 PCM.

Frequencies are ITU-T Q.23's. Defaults and limits follow Q.24 receivers
(tone on >= 40 ms, off >= 50 ms). The high group is sent ``twist_db`` above the
low group, as generators customarily do (nominal -9 dBm / -11 dBm on a line).
Each burst is shaped by a raised-cosine ramp so its spectrum stays inside the
two tones instead of splattering into the other band.

The engine knows nothing of HTTP, config files or hardware: drivers give it a
:class:`ToneSettings` and a :class:`TonePlan` and get samples back.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.errors import ToneSettingsError
from gateway.keys import KEYS, Pause, Symbol, Tone

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

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class Timing:
    """How long each digit sounds and how long the line is quiet after it."""

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
        """Ideal time on the line: every digit plus its gap, plus the pauses."""
        ms = 0
        for symbol in self.symbols:
            if isinstance(symbol, Tone):
                ms += self.timing.duration_ms + self.timing.gap_ms
            else:
                ms += symbol.ms
        return ms / 1000.0


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
        # Q.24 receivers accept up to 8 dB normal and 4 dB reverse twist.
        if not -4.0 <= self.twist_db <= 8.0:
            raise ToneSettingsError(f"twist {self.twist_db} dB is outside -4 to 8 dB")
        if not 0.0 <= self.ramp_ms <= 10.0:
            raise ToneSettingsError(f"ramp {self.ramp_ms} ms is outside 0 to 10 ms")
        peak = self.low_amplitude + self.high_amplitude
        if self.level_dbfs < -60.0 or peak > 1.0:
            raise ToneSettingsError(
                f"level {self.level_dbfs} dBFS with {self.twist_db} dB twist "
                f"{'is below -60 dBFS' if self.level_dbfs < -60.0 else 'would clip'}"
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


class ToneEngine:
    """Renders tone plans. Bursts are cached per (key, duration): a 128-key string
    is at most 16 distinct syntheses and one concatenation."""

    def __init__(self, settings: ToneSettings | None = None) -> None:
        self.settings = settings or ToneSettings()
        self._bursts: dict[tuple[str, int], Samples] = {}

    def _envelope(self, n: int) -> npt.NDArray[np.float64]:
        ramp = min(self.settings.samples(self.settings.ramp_ms), n // 2)
        envelope = np.ones(n)
        if ramp > 0:
            # Raised cosine from 0 to 1 over `ramp` samples, mirrored at the end.
            rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
            envelope[:ramp] = rise
            envelope[n - ramp :] = rise[::-1]
        return envelope

    def tone(
        self,
        frequencies: tuple[float, ...],
        duration_ms: float,
        amplitudes: tuple[float, ...] | None = None,
    ) -> Samples:
        """A plain single or dual tone (beeps, test signals), ramped like a digit."""
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
        t = np.arange(n) / self.settings.rate
        wave_ = np.zeros(n)
        for hz, amplitude in zip(frequencies, amplitudes, strict=True):
            wave_ += amplitude * np.sin(2.0 * np.pi * hz * t)
        return np.round(wave_ * self._envelope(n) * FULL_SCALE).astype(np.int16)

    def burst(self, key: str, samples: int) -> Samples:
        """One digit's tone, ``samples`` long, without its gap."""
        cached = self._bursts.get((key, samples))
        if cached is None:
            cached = self.tone(FREQUENCIES[key], samples * 1000 / self.settings.rate)
            cached.setflags(write=False)
            self._bursts[(key, samples)] = cached
        return cached

    def silence(self, ms: float) -> Samples:
        return np.zeros(self.settings.samples(ms), dtype=np.int16)

    def render(self, plan: TonePlan) -> Samples:
        """The plan as mono PCM: each digit, then its gap; pauses as silence.

        Segment edges are placed on the sample nearest their ideal time, counted
        from the start, so rounding never accumulates over a long string.
        """
        rate = self.settings.rate
        out = np.zeros(round(plan.seconds * rate), dtype=np.int16)
        ms = 0
        for symbol in plan.symbols:
            if isinstance(symbol, Tone):
                start = round(ms * rate / 1000)
                ms += plan.timing.duration_ms
                end = round(ms * rate / 1000)
                out[start:end] = self.burst(symbol.key, end - start)
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
