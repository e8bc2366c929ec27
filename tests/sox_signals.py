"""Test signals made by sox and espeak-ng, never by the gateway's own tone engine.

Levels are dBm0 per tone: 0 dBm0 is a sine 3.14 dB below full scale (G.711's
digital milliwatt), typed in here rather than taken from the code under test.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

SOX = shutil.which("sox")
ESPEAK = shutil.which("espeak-ng")
needs_sox = pytest.mark.skipif(SOX is None and not __import__("os").environ.get("CI"),
                               reason="sox is not installed (apt-get install sox)")
needs_espeak = pytest.mark.skipif(ESPEAK is None and not __import__("os").environ.get("CI"),
                                  reason="espeak-ng is not installed")

Pcm = npt.NDArray[np.int16]
#: A stretch of signal: seconds, and the (Hz, dBm0) tones sounding together (none: silence).
Part = tuple[float, Sequence[tuple[float, float]]]

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = "123A456B789C*0#D"


def dtmf_hz(key: str) -> tuple[float, float]:
    i = DTMF_KEYS.index(key)
    return DTMF_ROWS[i // 4], DTMF_COLS[i % 4]


def amplitude(dbm0: float) -> float:
    """A sine's peak, as a fraction of full scale, at ``dbm0``."""
    return float(10 ** ((dbm0 - 3.14) / 20))


def _raw(args: list[str], rate: int, stdin: bytes | None = None) -> Pcm:
    assert SOX is not None, "sox is not installed"
    done = subprocess.run([SOX, "-D", "-R", "-V1", *args], input=stdin, capture_output=True,
                          check=True, timeout=120)
    return np.frombuffer(done.stdout, dtype="<i2").astype(np.int16)


def synth(parts: Sequence[Part], rate: int = 8000) -> Pcm:
    """One sox run: each part a chain of ``synth`` sines mixed to one channel."""
    chains: list[str] = []
    for seconds, tones in parts:
        if seconds <= 0:
            continue  # sox's synth takes a length of 0 as "for ever"
        if chains:
            chains.append(":")
        if tones:
            chains += ["synth", f"{seconds:.6f}"]
            for hz, _ in tones:
                chains += ["sine", f"{hz:.4f}"]
            mix = ",".join(f"{i + 1}v{amplitude(level):.8f}" for i, (_, level) in enumerate(tones))
            chains += ["remix", mix]
        else:
            chains += ["synth", f"{seconds:.6f}", "sine", "0", "remix", "1v0"]
    # The null input needs as many channels as the most tones in a part:
    # every chain starts from it, and ``remix`` mixes them to one.
    width = max([len(tones) for _, tones in parts] + [1])
    return _raw(["-r", str(rate), "-c", str(width), "-n", "-t", "raw", "-r", str(rate), "-e",
                 "signed", "-b", "16", "-c", "1", "-", *chains], rate)


def keys(string: str, on_s: float = 0.08, off_s: float = 0.08, level: float = -10.0,
         twist_db: float = 0.0, low_factor: float = 1.0, high_factor: float = 1.0,
         lead_s: float = 0.2) -> list[Part]:
    """DTMF keys: each ``on_s`` then ``off_s`` of silence; ``twist_db`` puts the
    high group above the low one (the low group at ``level``)."""
    parts: list[Part] = [(lead_s, [])]
    for key in string:
        low, high = dtmf_hz(key)
        parts.append((on_s, [(low * low_factor, level), (high * high_factor, level + twist_db)]))
        parts.append((off_s, []))
    parts.append((lead_s, []))
    return parts


def cadence(hz: Sequence[float], pattern_ms: Sequence[int], seconds: float,
            level: float = -13.0, stretch: float = 1.0, shift: float = 1.0) -> list[Part]:
    """A cadenced tone for ``seconds``: ``pattern_ms`` on, off, ... repeating,
    every duration times ``stretch`` and every frequency times ``shift``."""
    parts: list[Part] = []
    total, i = 0.0, 0
    while total < seconds:
        ms = pattern_ms[i % len(pattern_ms)] * stretch / 1000
        on = i % 2 == 0
        parts.append((ms, [(f * shift, level - (3.0 if len(hz) > 1 else 0.0)) for f in hz]
                      if on else []))
        total += ms
        i += 1
    return parts


def noise(seconds: float, rate: int = 8000) -> Pcm:
    """sox's white noise, full band, about -10 dBFS."""
    return _raw(["-n", "-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1", "-",
                 "synth", f"{seconds:.6f}", "whitenoise", "vol", "0.3"], rate)


def g711(pcm: Pcm, law: str, rate: int = 8000) -> Pcm:
    """Through a G.711 coder and back (sox): ``law`` is ``mu-law`` or ``a-law``."""
    raw = ["-t", "raw", "-r", str(rate), "-c", "1"]
    coded = subprocess.run([SOX or "sox", "-D", "-V1", *raw, "-e", "signed", "-b", "16", "-",
                            *raw, "-e", law, "-b", "8", "-"], input=pcm.astype("<i2").tobytes(),
                           capture_output=True, check=True).stdout
    return _raw([*raw, "-e", law, "-b", "8", "-", *raw, "-e", "signed", "-b", "16", "-"], rate,
                stdin=coded)


def resample(pcm: Pcm, rate: int, to: int) -> Pcm:
    """sox's own resampler (for signals the detectors then get at 8 kHz)."""
    raw = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1"]
    return _raw([*raw, "-r", str(rate), "-", *raw, "-r", str(to), "-"], to,
                stdin=pcm.astype("<i2").tobytes())


def speech(text: str, voice: str, speed: int = 160, pitch: int = 50) -> tuple[Pcm, int]:
    """espeak-ng's speech of ``text`` as (samples, rate)."""
    assert ESPEAK is not None, "espeak-ng is not installed"
    wav = subprocess.run([ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout",
                          text], capture_output=True, check=True, timeout=120).stdout
    with wave.open(io.BytesIO(wav)) as src:
        rate = src.getframerate()
        # espeak-ng writes 0xFFFFFFFF as the length on a pipe: read what is there.
        data = wav[44:]
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16), rate


def level_dbm0(pcm: npt.ArrayLike) -> float:
    """The mean-square level of ``pcm`` in dBm0."""
    ms = float(np.mean(np.asarray(pcm, dtype=np.float64) ** 2))
    return 10 * np.log10(ms / ((32767 * 10 ** (-3.14 / 20)) ** 2 / 2))
