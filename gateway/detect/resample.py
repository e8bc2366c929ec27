"""Streaming rational resampling with a Kaiser-windowed sinc, in numpy.

Any integer input rate goes to the detectors' 8 kHz: the ratio is reduced
to ``L/M`` (48000 -> 1/6, 44100 -> 80/441) and each output sample is one
polyphase dot product of the input around its exact position, so the output
timeline is the input's (no group delay to correct: the filter is centred,
and the resampler holds back the few input samples it still needs).

Anti-aliasing: flat to 0.425 x the lower rate (3.4 kHz at 8 kHz output),
at least 80 dB down from 0.575 x (4.6 kHz); what folds back lands above
3.4 kHz, outside every band the detectors use.
"""

from __future__ import annotations

from math import ceil, gcd, pi

import numpy as np
import numpy.typing as npt

from gateway.errors import DetectError

Floats = npt.NDArray[np.float64]

PASS_FRACTION = 0.425
STOP_FRACTION = 0.575
ATTENUATION_DB = 80.0


def _design(up: int, down: int, rate_in: int) -> tuple[Floats, int]:
    """The polyphase table (``up`` rows of taps, each reversed for a dot
    product with the input in time order) and the taps per phase."""
    lower = min(rate_in, rate_in * up // down)
    fast = rate_in * up  # the upsampled rate the prototype filter runs at
    f_pass, f_stop = PASS_FRACTION * lower, STOP_FRACTION * lower
    width = 2 * pi * (f_stop - f_pass) / fast
    n = ceil((ATTENUATION_DB - 7.95) / (2.285 * width)) + 1
    half = ceil((n - 1) / (2 * up))  # taps per phase on each side
    length = 2 * up * half + 1
    centre = up * half
    beta = 0.1102 * (ATTENUATION_DB - 8.7)
    j = np.arange(length) - centre
    cutoff = (f_pass + f_stop) / fast  # of the upsampled rate, as 2 fc / fs
    proto = cutoff * np.sinc(cutoff * j) * np.kaiser(length, beta) * up
    taps = ceil(length / up)
    padded = np.zeros(taps * up)
    padded[:length] = proto
    # Row p holds h[p], h[p + up], ...: the taps that meet input samples
    # i_hi, i_hi - 1, ...; reversed so a window in time order dots with it.
    table = padded.reshape(taps, up).T[:, ::-1].copy()
    return table, taps


class Resampler:
    """Feed int16 (or float) blocks at ``rate_in``; get float64 samples at ``rate_out``.

    Output sample ``k`` is the input's value at time ``k / rate_out``; the
    last few outputs of a block wait for the input samples their filter
    needs, and :meth:`flush` releases them at the end of a stream.
    """

    def __init__(self, rate_in: int, rate_out: int = 8000) -> None:
        if isinstance(rate_in, bool) or not isinstance(rate_in, int) or rate_in < 1000:
            raise DetectError(f"sample rate {rate_in!r} Hz is not usable (1000 Hz or more)")
        if rate_in > 384000:
            raise DetectError(f"sample rate {rate_in} Hz is above 384000 Hz")
        self.rate_in, self.rate_out = rate_in, rate_out
        g = gcd(rate_in, rate_out)
        self._up, self._down = rate_out // g, rate_in // g
        if self._up == 1 and self._down == 1:
            self._table, self._taps = np.ones((1, 1)), 1
        else:
            self._table, self._taps = _design(self._up, self._down, rate_in)
        self._centre = self._up * ((self._taps - 1) // 2) if self._taps > 1 else 0
        # Integer decimation (48 kHz, 16 kHz...): the taps split by phase, so
        # that each output is a sum of ``down`` short convolutions over
        # strided views of the input, with no window copied out.
        self._per_phase = -(-self._taps // self._down)
        forward = np.zeros(self._per_phase * self._down)
        forward[: self._taps] = self._table[0][::-1]
        self._phases = [forward[p:: self._down].copy() for p in range(self._down)]
        self.reset()

    def reset(self) -> None:
        # The input before the first sample counts as silence.
        history = self._taps + self._down
        self._buf: Floats = np.zeros(history)
        self._buf_start = -history  # input index of _buf[0]
        self._fed = 0  # input samples fed
        self._next = 0  # next output index

    @property
    def delay_samples(self) -> int:
        """Input samples a block's last outputs wait for (the filter's half length)."""
        return self._centre // self._up + 1

    def feed(self, block: npt.ArrayLike) -> Floats:
        x = np.asarray(block, dtype=np.float64).reshape(-1)
        if self._up == self._down:
            self._fed += len(x)
            self._next += len(x)
            return x.copy()
        self._buf = np.concatenate([self._buf, x])
        self._fed += len(x)
        return self._run(self._fed)

    def flush(self) -> Floats:
        """The outputs still held back, up to the end of the input (zeros after it)."""
        if self._up == self._down:
            return np.zeros(0)
        end_out = -(-self._fed * self._up // self._down)  # ceil: outputs within the input
        pad = self.delay_samples + self._taps
        self._buf = np.concatenate([self._buf, np.zeros(pad)])
        out = self._run(self._fed + pad, limit=end_out)
        return out

    def _run(self, available: int, limit: int | None = None) -> Floats:
        up, down, taps = self._up, self._down, self._taps
        # Output k needs input up to i_hi = floor((k down + centre) / up).
        last = (up * available - 1 - self._centre) // down + 1
        if limit is not None:
            last = min(last, limit)
        k0 = self._next
        if last <= k0:
            return np.zeros(0)
        ks = np.arange(k0, last, dtype=np.int64)
        num = ks * down + self._centre
        if up == 1:
            out: Floats = np.zeros(len(ks))
            span, s0 = self._per_phase, int(num[0]) - self._buf_start
            for p, taps_p in enumerate(self._phases):
                start = s0 - p - (span - 1) * down
                u = self._buf[start: start + (len(ks) + span - 2) * down + 1: down]
                out += np.convolve(u, taps_p, "valid")
        else:
            first_window = num // up - taps + 1 - self._buf_start
            windows = np.lib.stride_tricks.sliding_window_view(self._buf, taps)
            out = np.einsum("ij,ij->i", windows[first_window], self._table[num % up])
        self._next = last
        # The first input sample still needed, and a phase's worth before it.
        keep_from = (last * down + self._centre) // up - taps + 1 - down
        drop = max(0, keep_from - self._buf_start)
        self._buf = self._buf[drop:]
        self._buf_start += drop
        return out
