"""Test helpers that talk to real, independent tools (multimon-ng, sox)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

MULTIMON = shutil.which("multimon-ng")
needs_multimon = pytest.mark.skipif(
    MULTIMON is None and not __import__("os").environ.get("CI"),
    reason="multimon-ng is not installed (apt-get install multimon-ng)",
)

DECODER_RATE = 22050  # multimon-ng's native input rate


Pcm = npt.NDArray[np.int16]


def resample(samples: Pcm, rate: int, to: int = DECODER_RATE) -> Pcm:
    """Linear-interpolation resampling: enough for DTMF, which sits below 1.7 kHz."""
    if rate == to:
        return samples
    n_out = int(len(samples) * to / rate)
    t_out = np.arange(n_out) * (rate / to)
    return np.round(np.interp(t_out, np.arange(len(samples)), samples.astype(np.float64))).astype(
        np.int16
    )


def multimon_decode(samples: npt.NDArray[np.int16], rate: int) -> str:
    """Decode mono PCM with multimon-ng's DTMF demodulator; the keys it heard, in order.

    Silence is added either side so the decoder sees a first and last digit whole.
    """
    if MULTIMON is None:
        raise RuntimeError("multimon-ng is not installed (apt-get install multimon-ng)")
    if samples.ndim != 1:
        raise ValueError("decode one channel at a time")
    pad = np.zeros(DECODER_RATE // 5, dtype=np.int16)
    pcm = np.concatenate([pad, resample(samples, rate), pad]).astype("<i2").tobytes()
    out = subprocess.run(
        [MULTIMON, "-q", "-a", "DTMF", "-t", "raw", "-"],
        input=pcm,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return "".join(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("DTMF:")
    )


def decode_wav(path: str | Path, channel: int = 0) -> str:
    """Decode one channel of a 16-bit WAV file."""
    from gateway.tones import read_wav

    samples, rate = read_wav(path)
    if samples.ndim == 2:
        samples = np.ascontiguousarray(samples[:, channel])
    return multimon_decode(samples, rate)


def decode_raw(path: str | Path, rate: int, channels: int = 1, channel: int = 0) -> str:
    """Decode raw little-endian int16 interleaved PCM (an ALSA ``file`` plugin's output)."""
    data = np.fromfile(str(path), dtype="<i2").astype(np.int16)
    if channels > 1:
        frames = data[: len(data) // channels * channels].reshape(-1, channels)
        data = np.ascontiguousarray(frames[:, channel])
    return multimon_decode(data, rate)
