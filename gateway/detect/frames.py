"""Overlapping analysis frames over a stream, and the level scale both detectors use."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

RATE = 8000
#: 0 dBm0 is a sine this far below full scale (ITU-T G.711's digital milliwatt).
DBM0_BELOW_FULL_SCALE_DB = 3.14
_MS_0DBM0 = (32767 * 10 ** (-DBM0_BELOW_FULL_SCALE_DB / 20)) ** 2 / 2


def mean_square(dbm0: float) -> float:
    """The mean square (int16 units) of a signal at ``dbm0``."""
    return float(_MS_0DBM0 * 10 ** (dbm0 / 10))


def dbm0(mean_sq: npt.ArrayLike) -> Floats:
    return np.asarray(10 * np.log10(np.maximum(np.asarray(mean_sq, dtype=np.float64), 1e-12)
                                    / _MS_0DBM0))


class Framer:
    """Frames of ``size`` samples every ``hop``; frame ``j`` is centred on sample ``j*hop + hop/2``.

    The stream is preceded by ``(size - hop) / 2`` zeros so that the first
    frame is centred on the first hop, which keeps every detector's frame
    ``j`` on the same time as every other's with the same hop.
    """

    def __init__(self, size: int, hop: int) -> None:
        if (size - hop) % 2:
            raise ValueError("size - hop must be even")
        self.size, self.hop = size, hop
        self.reset()

    def reset(self) -> None:
        self._buf: Floats = np.zeros((self.size - self.hop) // 2)
        self.frames_out = 0

    def centre(self, frame: float) -> float:
        """The sample position (8 kHz) at the centre of frame ``frame``."""
        return frame * self.hop + self.hop / 2

    def feed(self, x: Floats) -> Floats:
        buf = np.concatenate([self._buf, x]) if len(self._buf) else x
        n = (len(buf) - self.size) // self.hop + 1 if len(buf) >= self.size else 0
        if n <= 0:
            self._buf = buf
            return np.zeros((0, self.size))
        step = buf.strides[0]
        frames = np.lib.stride_tricks.as_strided(buf, (n, self.size), (step * self.hop, step),
                                                 writeable=False)
        self._buf = buf[n * self.hop:]
        self.frames_out += n
        return frames

    def flush(self) -> Floats:
        """The frames whose centre lies within what was fed, padding with zeros."""
        return self.feed(np.zeros(self.size // 2))
