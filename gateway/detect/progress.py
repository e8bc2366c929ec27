"""Call-progress tones, special information tones and line energy, over 128 ms frames every 20 ms.

One FFT per frame (Hann, 1024 points: 7.8 Hz bins, enough to tell 440 from
480 Hz) gives, per frame, the energy in each of the country's tone bands
(its tables' frequencies +-3 %, merged where they lie within 5 % of each
other), in the three SIT bands and in the DTMF bands. A frame is *tonal*
when one of those sets holds most of its energy.

Bursts of tonal frames are timed at half their peak amplitude, interpolated
between frames, and handed to :class:`Cadence` as on/off elements. A tone
is recognised when exactly one tone of the country fits every element seen
(durations within 20 % + 40 ms, frequencies present as the table says) and
enough has been seen (see :data:`EVIDENCE_S`); it ends at the first element
that does not fit. Gaps shorter than about 150 ms are not seen at all
(jp's 16 Hz modulation, the SIT's 15-30 ms gaps).

Line energy: each 20 ms hop is *voice* when it is above
:data:`VOICE_DBM0` and its frame is not tonal; 60 ms of voice in a row is a
``voice`` event, and ``silence`` follows once the line has been quiet for
``silence_s`` while no tone is sounding or could still be sounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.detect.countries import Country, ToneSpec
from gateway.detect.events import Silence, Tone, ToneEnd, Voice
from gateway.detect.frames import RATE, Floats, Framer, mean_square

SIZE, HOP = 1024, 160
HOP_S = HOP / RATE
#: Frequency tolerance of a tone band ("a few %" in E.180's tables).
FREQ_TOL = 0.03
#: Frequencies closer than this are one band (au's 413/425/438 Hz).
MERGE_TOL = 0.05
#: SIT bands: E.180 allows +-50 Hz (us SITs sit at 914/985, 1371/1429, 1777).
SIT_TOL_HZ = 60.0
SIT_MS = (200.0, 460.0)
SIT_JOIN_S = (-0.08, 0.10)
SIT_REPEAT_S = 1.3
#: Cadence tolerance.
CADENCE_TOL = 0.20
CADENCE_ABS_S = 0.04
#: Seen elements (completed, plus an off in progress) before a cadenced tone
#: is reported, and the continuous tone's minimum.
EVIDENCE_S = 1.0
CONTINUOUS_S = 0.5
MIN_OFF_S = 0.2
TONE_SHARE = 0.75
SIT_SHARE = 0.6
DTMF_SHARE = 0.7
MIN_TONE_LEVEL = mean_square(-45.0)
VOICE_DBM0 = -42.0
VOICE_HOPS = 3
#: Frames without tone that close a burst.
CLOSE_FRAMES = 3
MARGIN = 8
#: Frames decided on together (100 ms).
CHUNK = 5
#: A cluster holding this share of a burst's tone energy is present in it.
PRESENT_SHARE = 0.15
#: ... judged on the frames within 1 dB of the burst's peak, once there are this many.
PLATEAU = 10 ** (-1 / 20)
PLATEAU_FRAMES = 2

_WINDOW = np.hanning(SIZE + 2)[1:-1]
_BIN_HZ = RATE / SIZE
_BINS = np.arange(SIZE // 2 + 1) * _BIN_HZ
_MAIN_LOBE_HZ = 2 * _BIN_HZ
_SCALE = 2.0 / (SIZE * (_WINDOW ** 2).sum())
_CENTRE = slice((SIZE - HOP) // 2, (SIZE + HOP) // 2)
_DTMF_HZ = (697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0)


def _clusters(freqs: list[float]) -> list[tuple[float, float]]:
    """Frequencies merged where neighbours lie within MERGE_TOL, as (lowest, highest)."""
    out: list[list[float]] = []
    for f in sorted(set(freqs)):
        if out and f <= out[-1][1] * (1 + MERGE_TOL):
            out[-1][1] = f
        else:
            out.append([f, f])
    return [(lo, hi) for lo, hi in out]


def _masks(bands: list[tuple[float, float]]) -> Floats:
    """One column per band, 1 on its bins; overlapping bands split at the midpoint."""
    mask = np.zeros((len(_BINS), len(bands)))
    for i, (lo, hi) in enumerate(bands):
        left = lo if i == 0 else max(lo, (bands[i - 1][1] + lo) / 2)
        right = hi if i == len(bands) - 1 else min(hi, (hi + bands[i + 1][0]) / 2)
        mask[(left <= _BINS) & (right > _BINS), i] = 1.0
    return mask


@dataclass(frozen=True, slots=True)
class _Kind:
    spec: ToneSpec
    clusters: frozenset[int]


@dataclass(slots=True)
class _Element:
    on: bool
    start: float
    end: float
    #: The bands present; None while a burst has just begun.
    clusters: frozenset[int] | None = frozenset()

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Cadence:
    """Matches on/off elements against a country's tones; see the module docstring."""

    def __init__(self, code: str, kinds: list[_Kind]) -> None:
        self.code = code
        self.kinds = kinds
        self.reset()

    def reset(self) -> None:
        self.elements: list[_Element] = []
        self.active: _Kind | None = None
        self.pending = False

    @staticmethod
    def _fits(seconds: float, expected_ms: int, in_progress: bool, first: bool) -> bool:
        expected = expected_ms / 1000
        high = expected * (1 + CADENCE_TOL) + CADENCE_ABS_S
        if in_progress or first:
            return seconds <= high
        return abs(seconds - expected) <= expected * CADENCE_TOL + CADENCE_ABS_S

    def _consistent(self, kind: _Kind, current: _Element | None) -> bool:
        elements = self.elements + ([current] if current is not None else [])
        if not elements or not elements[0].on:
            return False
        for e in elements:
            if e.on and e.clusters is not None and e.clusters != kind.clusters:
                return False
        pattern = kind.spec.cadence_ms
        if not pattern:
            # A completed burst counts as well as one in progress, so that a
            # recording fed in one piece gives what it gives fed in periods.
            return len(elements) == 1 and elements[0].on
        for phase in range(0, len(pattern), 2):
            ok = True
            for i, e in enumerate(elements):
                last = current is not None and i == len(elements) - 1
                first = i == 0 and e.start <= CADENCE_ABS_S
                if not self._fits(e.seconds, pattern[(phase + i) % len(pattern)], last, first):
                    ok = False
                    break
            if ok:
                return True
        return False

    def _evidence(self, kind: _Kind, current: _Element | None) -> bool:
        if not kind.spec.cadence_ms:
            burst = current if current is not None else self.elements[0]
            return burst.seconds >= CONTINUOUS_S
        seen = sum(e.seconds for e in self.elements)
        done = len(self.elements)
        if current is not None and not current.on:
            seen += current.seconds
            if current.seconds >= MIN_OFF_S:
                done += 1
        return done >= 2 and seen >= EVIDENCE_S

    def update(self, current: _Element | None, events: list[Tone | ToneEnd]) -> None:
        """Re-judge after a completed element or with the element in progress."""
        if self.active is not None:
            kind = self.active
            if self._consistent(kind, current):
                del self.elements[: max(0, len(self.elements) - 12) // 2 * 2]
                return
            if current is not None and (not self.elements or self._consistent(kind, None)):
                breaking, at = current, current.start
                keep = len(self.elements)
            else:
                breaking = self.elements[-1]
                at = breaking.end if kind.spec.continuous and breaking.on else breaking.start
                keep = len(self.elements) - 1
                if kind.spec.continuous and breaking.on:
                    keep += 1
            events.append(ToneEnd(round(float(at), 3), kind.spec.name))
            self.active = None
            self.elements = self.elements[keep:]
            if self.elements and not self.elements[0].on:
                self.elements = self.elements[1:]
        while True:
            fitting = [k for k in self.kinds if self._consistent(k, current)]
            if fitting or not self.elements:
                break
            self.elements = self.elements[2:]  # start again at the next burst
        self.pending = bool(fitting)
        names = {k.spec.name for k in fitting}
        if len(names) == 1 and self._evidence(fitting[0], current):
            self.active, self.pending = fitting[0], False
            first = self.elements[0] if self.elements else current
            assert first is not None
            events.append(Tone(round(float(first.start), 3), fitting[0].spec.name, self.code))

    def stop(self, at: float, events: list[Tone | ToneEnd]) -> None:
        """The tone cannot go on (voice on the line, the end of the stream)."""
        if self.active is not None:
            events.append(ToneEnd(round(float(at), 3), self.active.spec.name))
        self.reset()


@dataclass(slots=True)
class _Run:
    """Tonal frames of one band set being timed: absolute frame indices."""

    first: int
    last: int


class ProgressDetector:
    """Feed 8 kHz float samples; get tone, tone_end, voice and silence events."""

    def __init__(self, country: Country, silence_s: float = 0.5, voice_dbm0: float = VOICE_DBM0,
                 code: str | None = None) -> None:
        self.country = country
        self.code = code or country.code
        self.silence_s = silence_s
        self.voice_level = mean_square(voice_dbm0)
        freqs = [f for t in country.tones for f in t.hz]
        clusters = _clusters(freqs)
        tone_bands = [(lo * (1 - FREQ_TOL) - _MAIN_LOBE_HZ, hi * (1 + FREQ_TOL) + _MAIN_LOBE_HZ)
                      for lo, hi in clusters]
        kinds = []
        for spec in country.tones:
            idx = frozenset(i for i, (lo, hi) in enumerate(clusters)
                            for f in spec.hz if lo <= f <= hi)
            kinds.append(_Kind(spec, idx))
        sit = [(f - SIT_TOL_HZ - _MAIN_LOBE_HZ, f + SIT_TOL_HZ + _MAIN_LOBE_HZ)
               for f in country.sit_hz]
        dtmf = [(f * 0.965 - _MAIN_LOBE_HZ, f * 1.035 + _MAIN_LOBE_HZ) for f in _DTMF_HZ]
        self._n_tone = len(clusters)
        self._masks = np.concatenate([_masks(tone_bands), _masks(sit),
                                      _masks(dtmf).sum(axis=1, keepdims=True)], axis=1)
        self._framer = Framer(SIZE, HOP)
        self.cadence = Cadence(self.code, kinds)
        self.reset()

    def reset(self) -> None:
        self._framer.reset()
        self.cadence.reset()
        self._frame0 = 0  # absolute index of the first kept frame
        self._band = np.zeros((0, self._n_tone + 3))  # per frame: band mean squares
        self._voice = np.zeros(0, dtype=bool)
        self._tonal_sound = np.zeros(0, dtype=bool)
        self._done = 0  # absolute index of the first frame not yet decided on
        self._sit_on = np.zeros((0, 3), dtype=bool)
        self._tone_on = np.zeros(0, dtype=bool)
        self._next_tone = 0  # absolute index of the first frame not yet scanned
        self._next_sit = 0
        self._tone_run: _Run | None = None
        self._last_burst_end: float | None = None
        self._sit_runs: list[_Run | None] = [None, None, None]
        self._sit_bursts: list[tuple[int, float, float]] = []
        self.sit_active_until: float | None = None  # the end of the last SIT
        self._sit_last_end = 0.0
        self._sit_seen = 0.0  # the end of the last burst in a SIT band
        # Line energy.
        self._voice_run = 0
        self._voice_start = 0.0
        self.state: str | None = None
        self._last_sound = 0.0

    # -- frames -------------------------------------------------------------

    def feed(self, x: Floats) -> list[Tone | ToneEnd | Voice | Silence]:
        return self._take(self._framer.feed(x), final=False)

    def flush(self) -> list[Tone | ToneEnd | Voice | Silence]:
        return self._take(self._framer.flush(), final=True)

    def _take(self, frames: Floats, final: bool) -> list[Tone | ToneEnd | Voice | Silence]:
        events: list[Tone | ToneEnd | Voice | Silence] = []
        if len(frames):
            spectrum = np.fft.rfft(frames * _WINDOW, axis=1)
            power = (spectrum.real ** 2 + spectrum.imag ** 2) * _SCALE
            band = power @ self._masks
            total = power.sum(axis=1) + 1e-9
            hop_ms = (frames[:, _CENTRE] ** 2).mean(axis=1)
            nt = self._n_tone
            tone_level = band[:, :nt].sum(axis=1)
            tone_on = (tone_level >= TONE_SHARE * total) & (tone_level >= MIN_TONE_LEVEL)
            sit_on = (band[:, nt: nt + 3] >= SIT_SHARE * total[:, None]) & (
                band[:, nt: nt + 3] >= MIN_TONE_LEVEL)
            dtmf_on = band[:, nt + 3] >= DTMF_SHARE * total
            tonal = tone_on | sit_on.any(axis=1) | dtmf_on
            loud = hop_ms >= self.voice_level
            self._band = np.concatenate([self._band, band[:, : nt + 3]])
            self._tone_on = np.concatenate([self._tone_on, tone_on])
            self._sit_on = np.concatenate([self._sit_on, sit_on])
            self._voice = np.concatenate([self._voice, loud & ~tonal])
            self._tonal_sound = np.concatenate([self._tonal_sound, loud & tonal])
        available = self._frame0 + len(self._tone_on)
        # The decisions run over fixed chunks of frames, whatever the size of
        # the blocks fed, so that a recording gives the same events fed in
        # one piece or in 10 ms periods.
        while available - self._done >= CHUNK or (final and available > self._done):
            self._chunk(min(self._done + CHUNK, available), events)
        if final:
            now = self._time(available - 1) + HOP_S / 2 if available else 0.0
            self._chunk(available, events, final=True)
            ends: list[Tone | ToneEnd] = []
            self.cadence.stop(self._stop_time(now), ends)
            events.extend(ends)
            if self.sit_active_until is not None:
                events.append(ToneEnd(round(float(self._sit_last_end), 3), "sit"))
                self.sit_active_until = None
            self._silence(now, events)
        return events

    def _chunk(self, end: int, events: list[Tone | ToneEnd | Voice | Silence],
               final: bool = False) -> None:
        base = self._frame0
        new = slice(self._done - base, end - base)
        voice, tonal = self._voice[new], self._tonal_sound[new]
        if voice.any() or self._voice_run:
            for i, (v, t) in enumerate(zip(voice.tolist(), tonal.tolist(), strict=True)):
                self._energy(self._done + i, v, t, events)
        elif tonal.any():
            last = self._done + int(np.flatnonzero(tonal)[-1])
            self._last_sound = max(self._last_sound, self._time(last) + HOP_S / 2)
        self._done = end
        # Most chunks hold no tone at all: skip the bookkeeping then.
        if (final or self._tone_run is not None or self._last_burst_end is not None
                or self.cadence.active is not None or self._tone_on[new].any()):
            self._scan_tone(end, final, events)
        else:
            self._next_tone = end
        if (final or self.sit_active_until is not None or self._sit_bursts
                or any(r is not None for r in self._sit_runs) or self._sit_on[new].any()):
            self._scan_sit(end, final, events)
        else:
            self._next_sit = end
        if end:
            self._silence(self._time(end - 1) + HOP_S / 2, events)
        self._trim(end)

    def _time(self, frame: float) -> float:
        return self._framer.centre(frame) / RATE

    def _stop_time(self, now: float) -> float:
        if self._tone_run is None and self._last_burst_end is not None:
            return self._last_burst_end
        return now

    def _trim(self, end: int) -> None:
        keep = end - MARGIN
        if self._tone_run is not None:
            keep = min(keep, self._tone_run.first - MARGIN)
        for run in self._sit_runs:
            if run is not None:
                keep = min(keep, run.first - MARGIN)
        drop = max(0, keep - self._frame0)
        if drop:
            self._band = self._band[drop:]
            self._tone_on = self._tone_on[drop:]
            self._sit_on = self._sit_on[drop:]
            self._voice = self._voice[drop:]
            self._tonal_sound = self._tonal_sound[drop:]
            self._frame0 += drop

    # -- bursts -------------------------------------------------------------

    def _edges(self, amp: Floats, first: int, last: int) -> tuple[float, float]:
        """Half-power crossings around frames ``first..last`` (kept-relative), in frames.

        Band energy, unlike one DFT bin's amplitude, follows the window's
        squared mass, which a symmetric window has half of at its centre: so
        half power, not half amplitude, marks the edge."""
        level = amp[first: last + 1].max() / np.sqrt(2)
        a, b = first, last
        while amp[a] < level:
            a += 1
        while amp[b] < level:
            b -= 1
        while a > 0 and amp[a - 1] >= level:
            a -= 1
        while b + 1 < len(amp) and amp[b + 1] >= level:
            b += 1
        on = a - 1 + (level - amp[a - 1]) / (amp[a] - amp[a - 1]) if a > 0 else float(a)
        off = b + (amp[b] - level) / (amp[b] - amp[b + 1]) if b + 1 < len(amp) else float(b)
        return on, off

    def _runs(self, flags: npt.NDArray[np.bool_], start: int, end: int,
              run: _Run | None, final: bool) -> tuple[list[_Run], _Run | None]:
        """Closed runs of ``flags`` (absolute frames ``start..end-1``) and the open one."""
        closed: list[_Run] = []
        base = self._frame0
        hits = np.flatnonzero(flags[start - base: end - base]) + start
        for h in hits.tolist():
            if run is not None and h - run.last <= CLOSE_FRAMES:
                run.last = h
            else:
                if run is not None:
                    closed.append(run)
                run = _Run(h, h)
        if run is not None and (final or end - 1 - run.last >= CLOSE_FRAMES):
            closed.append(run)
            run = None
        return closed, run

    def _scan_tone(self, end: int, final: bool, events: list[Tone | ToneEnd | Voice | Silence]
                   ) -> None:
        start = self._next_tone
        closed, self._tone_run = self._runs(self._tone_on, start, end, self._tone_run, final)
        self._next_tone = end
        nt = self._n_tone
        amp = np.sqrt(self._band[:, :nt].sum(axis=1))
        out: list[Tone | ToneEnd] = []
        for run in closed:
            on, off, clusters = self._burst(amp, run, nt)
            if self._last_burst_end is not None and self.cadence.elements:
                self.cadence.elements.append(_Element(False, self._last_burst_end, on))
            self.cadence.elements.append(_Element(True, on, off, clusters))
            self._last_burst_end = off
            self._last_sound = max(self._last_sound, off)
            self.cadence.update(None, out)
        if self._tone_run is not None:
            on, so_far, clusters = self._burst(amp, self._tone_run, nt, open_=True)
            now = self._time(end - 1)
            if self._last_burst_end is not None and self.cadence.elements:
                self.cadence.elements.append(_Element(False, self._last_burst_end, on))
                self._last_burst_end = None
            self.cadence.update(_Element(True, on, max(on, so_far), clusters), out)
            self._last_sound = max(self._last_sound, now)
        elif self._last_burst_end is not None:
            now = self._time(end - 1)
            if now > self._last_burst_end:
                self.cadence.update(_Element(False, self._last_burst_end, now), out)
            if self.cadence.active is None and not self.cadence.pending:
                self._last_burst_end = None  # no tone can follow on from that burst
                self.cadence.elements.clear()
        events.extend(out)

    def _burst(self, amp: Floats, run: _Run, nt: int, open_: bool = False
               ) -> tuple[float, float, frozenset[int] | None]:
        """A burst's half-power edges (for one still sounding, the last frame
        at half power stands for its end so far) and the bands present in it."""
        base = self._frame0
        on, off = self._edges(amp, run.first - base, run.last - base)
        if open_:
            level = amp[run.first - base: run.last - base + 1].max() / np.sqrt(2)
            off = float(np.flatnonzero(amp[: run.last - base + 1] >= level)[-1])
        # The bands are judged on the burst's plateau: where the window is
        # only partly in the tone, its hard edge spreads energy over the band.
        span = amp[run.first - base: run.last - base + 1]
        plateau = np.flatnonzero(span >= PLATEAU * span.max()) + run.first - base
        if open_ and len(plateau) < PLATEAU_FRAMES:
            return self._time(base + on), self._time(base + max(on, off)), None
        bands = self._band[plateau, :nt].sum(axis=0)
        share = bands / max(bands.sum(), 1e-12)
        clusters = frozenset(int(i) for i in np.flatnonzero(share >= PRESENT_SHARE))
        return self._time(base + on), self._time(base + off), clusters

    # -- special information tones ---------------------------------------------

    def _scan_sit(self, end: int, final: bool, events: list[Tone | ToneEnd | Voice | Silence]
                  ) -> None:
        start = self._next_sit
        self._next_sit = end
        nt = self._n_tone
        for band in range(3):
            closed, self._sit_runs[band] = self._runs(self._sit_on[:, band], start, end,
                                                      self._sit_runs[band], final)
            amp = np.sqrt(self._band[:, nt + band])
            if self._sit_runs[band] is not None:
                self._sit_seen = self._time(end - 1)
            for run in closed:
                on, off = self._edges(amp, run.first - self._frame0, run.last - self._frame0)
                self._sit_seen = max(self._sit_seen, self._time(self._frame0 + off))
                t_on, t_off = self._time(self._frame0 + on), self._time(self._frame0 + off)
                if SIT_MS[0] <= (t_off - t_on) * 1000 <= SIT_MS[1]:
                    self._sit_bursts.append((band, t_on, t_off))
                    self._last_sound = max(self._last_sound, t_off)
        self._sit_bursts.sort(key=lambda b: b[1])
        while len(self._sit_bursts) >= 3:
            (b0, s0, e0), (b1, s1, e1), (b2, s2, e2) = self._sit_bursts[:3]
            if (b0, b1, b2) == (0, 1, 2) and SIT_JOIN_S[0] <= s1 - e0 <= SIT_JOIN_S[1] \
                    and SIT_JOIN_S[0] <= s2 - e1 <= SIT_JOIN_S[1]:
                if self.sit_active_until is None:
                    events.append(Tone(round(float(s0), 3), "sit", self.code))
                self.sit_active_until = e2
                self._sit_last_end = e2
                del self._sit_bursts[:3]
            else:
                del self._sit_bursts[0]
        now = self._time(end - 1) if end else 0.0
        if self.sit_active_until is not None and now > max(self._sit_last_end,
                                                           self._sit_seen) + SIT_REPEAT_S:
            events.append(ToneEnd(round(float(self._sit_last_end), 3), "sit"))
            self.sit_active_until = None

    # -- line energy --------------------------------------------------------------

    def _energy(self, frame: int, voice: bool, tonal_sound: bool,
                events: list[Tone | ToneEnd | Voice | Silence]) -> None:
        t_start = self._time(frame) - HOP_S / 2
        if tonal_sound:
            self._last_sound = max(self._last_sound, t_start + HOP_S)
        if not voice:
            self._voice_run = 0
            return
        if self._voice_run == 0:
            self._voice_start = t_start
        self._voice_run += 1
        if self._voice_run >= VOICE_HOPS:
            self._last_sound = max(self._last_sound, t_start + HOP_S)
            if self.state != "voice":
                ends: list[Tone | ToneEnd] = []
                if self.cadence.active is not None and self._tone_run is None \
                        and self._last_burst_end is not None:
                    self.cadence.stop(min(self._last_burst_end, self._voice_start), ends)
                else:
                    self.cadence.stop(self._voice_start, ends)
                self._last_burst_end = None
                if self.sit_active_until is not None:
                    ends.append(ToneEnd(round(float(self._sit_last_end), 3), "sit"))
                    self.sit_active_until = None
                events.extend(ends)
                events.append(Voice(round(float(self._voice_start), 3)))
                self.state = "voice"

    def _silence(self, now: float, events: list[Tone | ToneEnd | Voice | Silence]) -> None:
        busy = (self.cadence.active is not None or self.cadence.pending
                or self._tone_run is not None or self.sit_active_until is not None
                or self._voice_run >= VOICE_HOPS)
        if self.cadence.active is not None or self.sit_active_until is not None:
            self.state = "tone"  # so that silence is reported again once it ends
        if self.state != "silence" and not busy and now - self._last_sound >= self.silence_s:
            events.append(Silence(round(float(self._last_sound), 3)))
            self.state = "silence"
