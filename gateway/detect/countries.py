"""Call-progress tones per country: frequencies and cadences.

Values from ITU-T E.180 Supplement 2 (the ITU's survey of national tones)
as PBXs tabulate it; Asterisk's ``configs/samples/indications.conf.sample``
is the best-known public copy and the source of the cadences below, checked
against AS/CA S002 for Australia. Cadences are milliseconds on, off, on,
off ... repeating; an empty cadence is a continuous tone. Frequencies of a
tone sound together.

Where a country signals congestion with its busy tone (hu, jp; au's
congestion differs from its busy tone only by 5 Hz on every other burst,
which no detector of a 375 ms burst can resolve), the table has no
congestion entry and the detector reports ``busy``. Special information
tones (three rising tones of about 330 ms) are listed per country too;
``ca`` uses the ``us`` table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """One tone: ``name`` as reported, the frequencies sounding together, its cadence."""

    name: str
    hz: tuple[float, ...]
    cadence_ms: tuple[int, ...] = ()
    #: Amplitude modulation (jp ringback: 400 Hz modulated at 16 Hz); the
    #: 128 ms analysis window averages it out, so it is documentation only.
    modulation_hz: float = 0.0

    @property
    def continuous(self) -> bool:
        return not self.cadence_ms


@dataclass(frozen=True, slots=True)
class Country:
    code: str
    name: str
    tones: tuple[ToneSpec, ...]
    #: Special information tone: three tones of about 330 ms each, rising.
    sit_hz: tuple[float, float, float] = (950.0, 1400.0, 1800.0)


def _c(code: str, name: str, *tones: ToneSpec,
       sit_hz: tuple[float, float, float] = (950.0, 1400.0, 1800.0)) -> Country:
    return Country(code, name, tones, sit_hz)


T = ToneSpec
_US = _c("us", "United States / Canada",
         T("dial", (350.0, 440.0)),
         T("ringback", (440.0, 480.0), (2000, 4000)),
         T("busy", (480.0, 620.0), (500, 500)),
         T("congestion", (480.0, 620.0), (250, 250)))

COUNTRIES: dict[str, Country] = {c.code: c for c in (
    _US,
    _c("uk", "United Kingdom",
       T("dial", (350.0, 440.0)),
       T("ringback", (400.0, 450.0), (400, 200, 400, 2000)),
       T("busy", (400.0,), (375, 375)),
       T("congestion", (400.0,), (400, 350, 225, 525))),
    _c("de", "Germany",
       T("dial", (425.0,)),
       T("ringback", (425.0,), (1000, 4000)),
       T("busy", (425.0,), (480, 480)),
       T("congestion", (425.0,), (240, 240))),
    _c("fr", "France",
       T("dial", (440.0,)),
       T("ringback", (440.0,), (1500, 3500)),
       T("busy", (440.0,), (500, 500)),
       T("congestion", (440.0,), (250, 250))),
    _c("it", "Italy",
       T("dial", (425.0,), (200, 200, 600, 1000)),
       T("ringback", (425.0,), (1000, 4000)),
       T("busy", (425.0,), (500, 500)),
       T("congestion", (425.0,), (200, 200))),
    _c("es", "Spain",
       T("dial", (425.0,)),
       T("ringback", (425.0,), (1500, 3000)),
       T("busy", (425.0,), (200, 200)),
       T("congestion", (425.0,), (200, 200, 200, 200, 200, 600))),
    _c("nl", "Netherlands",
       T("dial", (425.0,)),
       T("ringback", (425.0,), (1000, 4000)),
       T("busy", (425.0,), (500, 500)),
       T("congestion", (425.0,), (250, 250))),
    _c("at", "Austria",
       T("dial", (420.0,)),
       T("ringback", (420.0,), (1000, 5000)),
       T("busy", (420.0,), (400, 400)),
       T("congestion", (420.0,), (200, 200)),
       sit_hz=(950.0, 1450.0, 1850.0)),
    _c("ch", "Switzerland",
       T("dial", (425.0,)),
       T("ringback", (425.0,), (1000, 4000)),
       T("busy", (425.0,), (500, 500)),
       T("congestion", (425.0,), (200, 200))),
    _c("hu", "Hungary",
       T("dial", (425.0,)),
       T("ringback", (425.0,), (1250, 3750)),
       T("busy", (425.0,), (300, 300))),
    _c("au", "Australia",
       T("dial", (413.0, 438.0)),
       T("ringback", (413.0, 438.0), (400, 200, 400, 2000)),
       T("busy", (425.0,), (375, 375))),
    _c("nz", "New Zealand",
       T("dial", (400.0,)),
       T("ringback", (400.0, 450.0), (400, 200, 400, 2000)),
       T("busy", (400.0,), (500, 500)),
       T("congestion", (400.0,), (250, 250))),
    _c("jp", "Japan",
       T("dial", (400.0,)),
       T("ringback", (400.0,), (1000, 2000), modulation_hz=16.0),
       T("busy", (400.0,), (500, 500))),
)}
COUNTRIES["ca"] = _US


def country(code: str) -> Country:
    """The table for ``code`` (case-insensitive); a clear error for an unknown one."""
    from gateway.errors import DetectError

    found = COUNTRIES.get(code.strip().lower())
    if found is None:
        raise DetectError(f"unknown country {code!r} (one of: {', '.join(sorted(COUNTRIES))})")
    return found
