"""DTMF reception to ITU-T Q.24's limits, block-vectorised over 20 ms Hann frames every 5 ms.

Each frame gets the complex DFT at the eight Q.23 frequencies (one matrix
product for all frames of a block) and a loose check: one row and one
column clearly above the rest of their group, together most of the frame's
energy, twist roughly in range. Runs of such frames are then judged whole,
which is where Q.24 is applied:

- time: a key starts and ends where its amplitude crosses half its peak,
  interpolated between frames (a symmetric window is half covered exactly
  there), so durations come out within a millisecond or two: keys of 30 ms
  and more are reported (Q.24: 40 ms must be, 20 ms must not); a dip
  shorter than 25 ms inside a key is bridged (Q.24 asks pauses of 40 ms to
  be heard and interruptions of 10 ms not to split a key);
- frequency: from the phase advance of each tone's DFT between frames 5 ms
  apart (unambiguous to +-100 Hz), averaged over the key; a tone is accepted
  within the midpoint of Q.24's limits, 2.5 % + 1 Hz (it must operate at
  1.5 % + 2 Hz and must not at 3.5 %);
- talk-off: the two tones must hold 80 % of the energy over the key, and
  neither may drift more than 4 Hz between its halves (a voice's pitch glides);
- twist and level: from the powers, corrected for the window's loss at the
  measured frequency; twist (high group above low) within
  ``-MAX_LOW_OVER_HIGH_DB - 1`` to ``MAX_HIGH_OVER_LOW_DB + 1`` dB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway import q24
from gateway.detect.events import Dtmf
from gateway.detect.frames import RATE, Floats, Framer, mean_square

KEYS = "123A456B789C*0#D"
LOW_HZ = (697.0, 770.0, 852.0, 941.0)
HIGH_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
FREQS = np.array(LOW_HZ + HIGH_HZ)

SIZE, HOP = 160, 40
#: Dips inside a key shorter than this are bridged; longer ones part two keys.
SPLIT_PAUSE_MS = 25.0
#: The shortest key reported, midway between Q.24's 20 ms (never) and 40 ms (always).
MIN_KEY_MS = 30.0
#: Frames without the key that close it (so a closed key is final).
CLOSE_FRAMES = 8
#: Frames kept before a key, for finding its rising edge.
MARGIN = 6
#: Both tones together, in mean square: about -42 dBm0 (Q.24 asks for a
#: 30 dB range down to about -36 dBm0 per tone).
MIN_LEVEL = mean_square(-42.0)
#: A frame's tones must carry this share of its energy (talk-off).
MIN_TONE_SHARE = 0.65
#: A key's tones may not move more than this between its halves (a 40 ms key
#: at 15 dB SNR measures up to 2.3 Hz; espeak-ng's gliding pitch 4 to 40 Hz).
MAX_DRIFT_HZ = 4.0
#: ...and over a whole key, corrected for the window's loss at its frequency.
MIN_KEY_SHARE = 0.8
#: Each tone this far above the next strongest of its group (6 dB less the
#: window's leak at the accepted frequency error).
MIN_GROUP_LEAD = 10 ** (5.0 / 10)
#: Measurement allowance on Q.24's twist limits.
TWIST_ALLOWANCE_DB = 1.0
#: The frames' twist gate is looser: frequency error moves the raw powers.
FRAME_TWIST_SLACK_DB = 4.0

_WINDOW = np.hanning(SIZE + 2)[1:-1]
_N = np.arange(SIZE)
_OMEGA = 2 * np.pi * FREQS / RATE
_BASIS = _WINDOW[:, None] * np.exp(-1j * _OMEGA[None, :] * _N[:, None])
_BASIS_RI = np.concatenate([_BASIS.real, _BASIS.imag], axis=1)
_POWER_SCALE = 2.0 / _WINDOW.sum() ** 2
_ENERGY_WEIGHTS = _WINDOW ** 2 / (_WINDOW ** 2).sum()
_HOP_TURN = np.exp(-1j * _OMEGA * HOP)
_MAX_REVERSE = 10 ** ((q24.MAX_HIGH_OVER_LOW_DB + FRAME_TWIST_SLACK_DB) / 10)
_MAX_NORMAL = 10 ** ((q24.MAX_LOW_OVER_HIGH_DB + FRAME_TWIST_SLACK_DB) / 10)


def deviation_limit_hz(nominal: float) -> float:
    """Half-way between Q.24's must-operate and must-not-operate deviations."""
    pct = (q24.ACCEPT_DEVIATION_PCT + q24.REJECT_DEVIATION_PCT) / 2
    return nominal * pct / 100 + q24.ACCEPT_DEVIATION_HZ / 2


_LIMIT_HZ = np.array([deviation_limit_hz(f) for f in FREQS])


def _offset_hz(dft: npt.NDArray[np.complex128], row: int, col: int) -> Floats:
    """Each tone's frequency error, from its DFT's phase advance frame to frame."""
    turn = (dft[1:] * np.conj(dft[:-1])).sum(axis=0) * _HOP_TURN[[row, col]]
    return np.asarray(np.angle(turn) * RATE / (2 * np.pi * HOP))


def _window_gain(offset_hz: Floats) -> Floats:
    """The Hann window's amplitude response at ``offset_hz`` from a bin."""
    phase = np.exp(-2j * np.pi * np.outer(offset_hz, _N) / RATE)
    return np.asarray(np.abs(phase @ _WINDOW) / _WINDOW.sum())


@dataclass
class _Frames:
    """Per-frame figures not yet final: powers and DFTs at the 8 tones, the candidate key."""

    power: Floats
    dft: npt.NDArray[np.complex128]
    key: npt.NDArray[np.int64]
    total: Floats

    @classmethod
    def empty(cls) -> _Frames:
        return cls(np.zeros((0, 8)), np.zeros((0, 8), dtype=np.complex128),
                   np.zeros(0, dtype=np.int64), np.zeros(0))

    def extend(self, other: _Frames) -> None:
        self.power = np.concatenate([self.power, other.power])
        self.dft = np.concatenate([self.dft, other.dft])
        self.key = np.concatenate([self.key, other.key])
        self.total = np.concatenate([self.total, other.total])

    def drop(self, n: int) -> None:
        self.power, self.dft, self.key = self.power[n:], self.dft[n:], self.key[n:]
        self.total = self.total[n:]


def analyse(frames: Floats) -> _Frames:
    """The figures of a block of frames, and each frame's candidate key (-1: none)."""
    ri = frames @ _BASIS_RI
    dft = ri[:, :8] + 1j * ri[:, 8:]
    squares = ri * ri
    power = (squares[:, :8] + squares[:, 8:]) * _POWER_SCALE
    total = (frames * frames) @ _ENERGY_WEIGHTS
    groups = power.reshape(-1, 2, 4)
    best = groups.argmax(axis=2)
    top = np.partition(groups, (2, 3), axis=2)
    p_row, p_col = top[:, 0, 3], top[:, 1, 3]
    both = p_row + p_col
    ok = ((both >= MIN_LEVEL) & (both >= MIN_TONE_SHARE * total)
          & (top[:, 0, 3] >= MIN_GROUP_LEAD * top[:, 0, 2])
          & (top[:, 1, 3] >= MIN_GROUP_LEAD * top[:, 1, 2])
          & (p_col <= p_row * _MAX_REVERSE) & (p_row <= p_col * _MAX_NORMAL))
    key = np.where(ok, best[:, 0] * 4 + best[:, 1], -1)
    return _Frames(power, dft, key, total)


class DtmfDetector:
    """Feed 8 kHz float samples; get the keys whose end has been heard."""

    def __init__(self) -> None:
        self._framer = Framer(SIZE, HOP)
        self.reset()

    def reset(self) -> None:
        self._framer.reset()
        self._pending = _Frames.empty()
        self._base = 0  # absolute index of the first pending frame
        self.active = False  # a key is sounding (its end not yet heard)

    def feed(self, x: Floats) -> list[Dtmf]:
        return self._take(self._framer.feed(x), final=False)

    def flush(self) -> list[Dtmf]:
        return self._take(self._framer.flush(), final=True)

    def _take(self, frames: Floats, final: bool) -> list[Dtmf]:
        if len(frames):
            self._pending.extend(analyse(frames))
        keys = self._pending.key
        total = len(keys)
        events: list[Dtmf] = []
        hits = np.flatnonzero(keys >= 0)
        keep_from = max(0, total - MARGIN)
        self.active = False
        if len(hits):
            # Runs of one key, bridging gaps shorter than CLOSE_FRAMES.
            cuts = np.flatnonzero((np.diff(hits) >= CLOSE_FRAMES)
                                  | (np.diff(keys[hits]) != 0)) + 1
            starts = np.concatenate([[0], cuts])
            ends = np.concatenate([cuts, [len(hits)]]) - 1
            for s, e in zip(hits[starts], hits[ends], strict=True):
                if not final and total - 1 - e < CLOSE_FRAMES and e == hits[-1]:
                    keep_from = max(0, min(keep_from, int(s) - MARGIN))
                    self.active = True
                    break
                events.extend(self._judge(int(s), int(e), int(keys[s])))
                keys[s: e + 1] = -1  # judged: the frames stay only for the next key's edge
        self._pending.drop(keep_from)
        self._base += keep_from
        return events

    def _judge(self, s: int, e: int, key: int) -> list[Dtmf]:
        row, col = key // 4, 4 + key % 4
        lo, hi = max(0, s - MARGIN), min(len(self._pending.key), e + MARGIN + 1)
        power = self._pending.power[lo:hi]
        amp = np.sqrt(power[:, row] + power[:, col])
        peak = amp[s - lo: e - lo + 1].max()
        above = amp >= peak / 2
        # Stretches at or above half the peak, as (first, last) frame offsets.
        edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
        rises, falls = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
        spans: list[tuple[float, float, int, int]] = []
        for a, b in zip(rises.tolist(), falls.tolist(), strict=True):
            if b < s - lo or a > e - lo:
                continue
            t_on = self._crossing(amp, a - 1, a, peak / 2) if a > 0 else float(a)
            t_off = self._crossing(amp, b, b + 1, peak / 2) if b + 1 < len(amp) else float(b)
            if spans and (t_on - spans[-1][1]) * HOP * 1000 / RATE < SPLIT_PAUSE_MS:
                spans[-1] = (spans[-1][0], t_off, spans[-1][2], b)
            else:
                spans.append((t_on, t_off, a, b))
        found = []
        for t_on, t_off, a, b in spans:
            ms = (t_off - t_on) * HOP * 1000 / RATE
            if ms < MIN_KEY_MS:
                continue
            if not self._tones_pass(lo + a, lo + b, row, col, key):
                continue
            start = self._framer.centre(self._base + lo + t_on) / RATE
            found.append(Dtmf(round(float(start), 4), KEYS[key], round(float(ms))))
        return found

    @staticmethod
    def _crossing(amp: Floats, i: int, j: int, level: float) -> float:
        """Where ``amp`` crosses ``level`` between frames ``i`` and ``j``, in frames."""
        a, b = amp[i], amp[j]
        return i + (level - a) / (b - a) if b != a else float(j)

    def _tones_pass(self, a: int, b: int, row: int, col: int, key: int) -> bool:
        """Q.24's frequency, twist and level checks over frames ``a..b`` of a key."""
        keys = self._pending.key[a: b + 1]
        if np.count_nonzero(keys == key) * 2 < len(keys) or b <= a:
            return False
        dft = self._pending.dft[a: b + 1][:, [row, col]]
        offset = _offset_hz(dft, row, col)
        if np.any(np.abs(offset) > _LIMIT_HZ[[row, col]]):
            return False
        # Talk-off: a voice's pitch glides, a key's tones do not.
        half = len(dft) // 2
        drift = _offset_hz(dft[half:], row, col) - _offset_hz(dft[: half + 1], row, col)
        if np.any(np.abs(drift) > MAX_DRIFT_HZ):
            return False
        gain = _window_gain(offset) ** 2
        power = self._pending.power[a: b + 1][:, [row, col]] / gain
        # Talk-off: speech that puts two harmonics on a key's frequencies
        # still has energy elsewhere; a key (even at 15 dB SNR) has little.
        if power.sum(axis=1).mean() < MIN_KEY_SHARE * self._pending.total[a: b + 1].mean():
            return False
        power = power.mean(axis=0)
        twist_db = 10 * np.log10(power[1] / power[0])
        if not (-q24.MAX_LOW_OVER_HIGH_DB - TWIST_ALLOWANCE_DB <= twist_db
                <= q24.MAX_HIGH_OVER_LOW_DB + TWIST_ALLOWANCE_DB):
            return False
        return bool(power.sum() >= MIN_LEVEL)
