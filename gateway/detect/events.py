"""What the detectors report: small frozen records with the JSON shape of ``dtmf-gateway detect``.

``t`` is seconds from the first sample fed, counted in samples (never read
from a clock), so a recording and a live line give the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


def _t(t: float) -> str:
    return f'{{"t": {t:.3f}, '


@dataclass(frozen=True, slots=True)
class Dtmf:
    """A key from the far end: ``t`` is its start (half-amplitude point), reported at its end."""

    t: float
    key: str
    duration_ms: int

    def to_json(self) -> str:
        return (_t(self.t) + f'"event": "dtmf", "key": {json.dumps(self.key)}, '
                f'"duration_ms": {self.duration_ms}}}')

    def describe(self) -> str:
        return f"dtmf {self.key} ({self.duration_ms} ms)"


@dataclass(frozen=True, slots=True)
class Tone:
    """A call-progress tone recognised from its frequencies and cadence; ``t`` is its start."""

    t: float
    tone: str
    country: str

    def to_json(self) -> str:
        return (_t(self.t) + f'"event": "tone", "tone": {json.dumps(self.tone)}, '
                f'"country": {json.dumps(self.country)}}}')

    def describe(self) -> str:
        return f"tone {self.tone} ({self.country})"


@dataclass(frozen=True, slots=True)
class ToneEnd:
    """The tone stopped or broke its cadence; ``t`` is the end of its last burst."""

    t: float
    tone: str

    def to_json(self) -> str:
        return _t(self.t) + f'"event": "tone_end", "tone": {json.dumps(self.tone)}}}'

    def describe(self) -> str:
        return f"tone_end {self.tone}"


@dataclass(frozen=True, slots=True)
class Voice:
    """Energy on the line that is none of the known tones (speech, music, noise bursts)."""

    t: float

    def to_json(self) -> str:
        return _t(self.t) + '"event": "voice"}'

    def describe(self) -> str:
        return "voice"


@dataclass(frozen=True, slots=True)
class Silence:
    """The line has been quiet (no voice, no tone) since ``t``."""

    t: float

    def to_json(self) -> str:
        return _t(self.t) + '"event": "silence"}'

    def describe(self) -> str:
        return "silence"


Event = Dtmf | Tone | ToneEnd | Voice | Silence
