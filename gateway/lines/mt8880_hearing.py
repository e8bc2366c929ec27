"""What an MT8880 line hears: call progress from the edges of the IRQ/CP pin.

In call-progress mode (CRA.CP, with CRA.IRQ, which the data sheet needs for
the pin to carry it) the chip's receiver passes only its call-progress band
(about 310-500 Hz on the data sheet: **verify**) and hard-limits what it
passes: IRQ/CP then carries a rectangular wave at the tone's own frequency
for as long as a tone in that band is on the line, and stays still
otherwise. The chip cannot decode DTMF meanwhile, and it says nothing of
frequencies beyond "in the band": cadence is all there is to go on.

:class:`EdgeProgress` turns the times of that wave's falling edges into the
detectors' events. Edges no further apart than :data:`HOLD_S` are one burst
(a period of any in-band tone is at most 3.3 ms; the bridge also covers the
beat nulls of two tones, jp's 16 Hz modulation and a late callback). Bursts
and the gaps between them are matched against the country's cadences
(``gateway.detect.countries``, through the detectors' own
:class:`~gateway.detect.progress.Cadence`), so ``busy``, ``ringback`` and the
rest mean the same on every line. What follows from hearing cadence alone:

- The special information tone (950/1400/1800 Hz) lies outside the band:
  it is never heard.
- Speech is energy like any other: a burst pattern that fits none of the
  country's tones is reported as ``voice``, and one that happens to fit a
  tone (a far end whose first words beat like busy) is taken for it.
- A continuous tone is recognised once it has outlasted every cadenced
  tone's longest burst, as the audio detectors do.

:class:`ChipEars` are the line's :class:`~gateway.lines.hearing.Ears` with
the driver told when the call is up, so that it can put the chip back into
DTMF mode to hear the far end's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.detect.countries import country as find_country
from gateway.detect.events import Silence, Tone, ToneEnd, Voice
from gateway.detect.progress import Cadence, _Element, _Kind
from gateway.lines.hearing import Ears, Hears, LineEvent

#: Falling edges at most this far apart belong to one burst. E.180's
#: shortest gaps are 200 ms (it, es, uk), which stay well clear of it.
HOLD_S = 0.1
#: Quiet this long, with no tone sounding or pending, is ``silence`` (as
#: the audio detectors' default).
SILENCE_S = 0.5


class EdgeProgress:
    """IRQ/CP falling edges (seconds, line time) to tone, tone_end, voice and
    silence events; no I/O. :meth:`feed` takes the edges since the last call
    and the time now, in order; :meth:`reset` starts afresh (the chip has just
    entered call-progress mode, so whatever came before was not heard)."""

    def __init__(self, country: str) -> None:
        table = find_country(country)
        self.code = country.strip().lower()
        # The chip gives no frequencies: every tone's bands are "unknown",
        # and elements carry none, so the cadence alone decides.
        self.cadence = Cadence(self.code, [_Kind(spec, frozenset()) for spec in table.tones])
        self.reset(0.0)

    def reset(self, now: float) -> None:
        self.cadence.reset()
        self._start: float | None = None  # the burst sounding, if any
        self._last = 0.0  # its latest edge
        self._prev_end: float | None = None  # the end of the burst before the gap
        self._last_sound = now
        self._state = ""  # "voice", "silence", "tone" or "" at the start

    @property
    def sounding(self) -> bool:
        return self._start is not None

    def feed(self, edges: Sequence[float], now: float) -> list[LineEvent]:
        out: list[LineEvent] = []
        for t in edges:
            if self._start is not None and t - self._last <= HOLD_S:
                self._last = max(self._last, t)
                continue
            if self._start is not None:
                self._closed(self._start, self._last, out)
            self._start = self._last = t
        if self._start is not None and now - self._last > HOLD_S:
            self._closed(self._start, self._last, out)
            self._start = None
        cadence = self.cadence
        if self._start is not None:
            if self._prev_end is not None and cadence.elements:
                cadence.elements.append(_Element(False, self._prev_end, self._start))
                self._prev_end = None
            self._update(_Element(True, self._start, self._last, None), out)
            self._last_sound = max(self._last_sound, self._last)
        elif self._prev_end is not None:
            if now > self._prev_end:
                self._update(_Element(False, self._prev_end, now), out)
            if cadence.active is None and not cadence.pending:
                self._prev_end = None  # no tone can follow on from that burst
                self._dropped(cadence.elements[0].start if cadence.elements else None, out)
                cadence.elements.clear()
        if cadence.active is not None:
            self._state = "tone"
        if (self._start is None and cadence.active is None and not cadence.pending
                and now - self._last_sound >= SILENCE_S and self._state != "silence"):
            out.append(Silence(round(float(self._last_sound), 3)))
            self._state = "silence"
        out.sort(key=lambda e: e.t)
        return out

    def _closed(self, on: float, off: float, out: list[LineEvent]) -> None:
        cadence = self.cadence
        if self._prev_end is not None and cadence.elements:
            cadence.elements.append(_Element(False, self._prev_end, on))
        cadence.elements.append(_Element(True, on, off, None))
        self._prev_end = off
        self._last_sound = max(self._last_sound, off)
        self._update(None, out)

    def _update(self, current: _Element | None, out: list[LineEvent]) -> None:
        """The cadence re-judged; bursts it gives up on without a tone having
        covered them are energy no tone explains: ``voice``."""
        cadence = self.cadence
        first = cadence.elements[0].start if cadence.elements else None
        was_active = cadence.active is not None
        found: list[Tone | ToneEnd] = []
        cadence.update(current, found)
        out.extend(found)
        if was_active or found or first is None:
            return
        if not cadence.elements or cadence.elements[0].start > first:
            self._dropped(first, out)

    def _dropped(self, first: float | None, out: list[LineEvent]) -> None:
        if first is not None and self._state not in ("voice", "tone"):
            out.append(Voice(round(float(first), 3)))
            self._state = "voice"
        elif self._state == "tone" and self.cadence.active is None:
            self._state = ""


class ChipEars(Ears):
    """The MT8880 line's ears. Events come from the driver's hearing thread
    (``heard``), in line time: seconds since the line went off hook.
    ``on_talking`` is called (on the caller's thread) once the call is up."""

    def __init__(self, line: str, hears: Hears, country: str,
                 on_talking: Callable[[], None]) -> None:
        super().__init__(line, hears, country)
        self._on_talking = on_talking

    @property
    def time(self) -> float:
        # No audio is fed here: line time is what the driver last reported.
        return self._now

    def talking(self) -> None:
        super().talking()
        self._on_talking()
