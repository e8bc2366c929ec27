"""A small exchange and a far party: the other end of a simulated line.

Configured per dialled number (``[line.exchange]`` and its
``numbers."100"`` tables), it does what an exchange and the telephone
behind it do: dial tone from off hook until the first digit, then after
the dialling ringback for a few rings and an answer (with speech or
silence), or a busy, congestion or special information tone, or ringing
for ever; once answered the far party may press keys at given moments and
hang up at a given moment (a loop-current break, then reorder, dial tone,
busy tone or silence). Its sounds come from :mod:`gateway.lines.exchange_audio`,
a generator of its own.

One object serves any simulated line (the simulated line's capture, a
simulated MT8880's input, a simulated modem's event reports):

- The line tells it what it does: :meth:`Exchange.off_hook`,
  :meth:`~Exchange.on_hook`, :meth:`~Exchange.dialled` (the keys of a
  number, with their times) and :meth:`~Exchange.transmit` (the line's
  own audio, which comes back as echo).
- Audio is pulled block by block with :meth:`~Exchange.read`; line time
  (:attr:`~Exchange.now`) is the samples read since off hook, and every
  time given to or reported by the exchange is on that timeline.
- What the far end does is an :class:`ExchangeEvent` on
  :attr:`~Exchange.timeline` (and to every :meth:`~Exchange.subscribe`\\ r)
  as the audio that carries it is read: dial tone, the number, each ring,
  the answer, each key, the hang-up, a loop break.

The exchange knows nothing of the gateway: it neither decodes the line's
DTMF nor reads the detectors' tables; the line says what it dialled.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gateway.errors import KeyStringError
from gateway.keys import Pause, Tone, parse_keys, tone_keys
from gateway.lines.exchange_audio import (
    NATIONAL_TONES,
    CadencedTone,
    Floats,
    Schedule,
    greeting,
    key_burst,
    national_tone,
    to_pcm,
)
from gateway.tones import Samples

#: What a far party does with a call to its number.
RESULTS = ("answer", "busy", "congestion", "sit", "no-answer")
#: What it sends once it has answered.
ANSWERS = ("speech", "silence")
#: What the exchange plays once the far party has hung up ("reorder": the
#: country's congestion tone).
HANG_UP_TONES = ("reorder", "dial", "busy", "silence")
#: Countries whose tones the exchange plays ("" = the line's own).
EXCHANGE_COUNTRIES = ("", *sorted(NATIONAL_TONES))


# -- configuration ---------------------------------------------------------------


@dataclass
class KeyPress:
    """``press = [{ at_s = 3.0, keys = "1#" }]``: keys the far party presses,
    the first ``at_s`` after the answer, each ``duration_ms`` long with
    ``gap_ms`` after it (``w``/``W`` in ``keys`` wait, as in SendDTMF)."""

    at_s: float = field(metadata={"min": 0.0, "max": 86400.0})
    keys: str
    duration_ms: int = field(default=100, metadata={"min": 10, "max": 5000})
    gap_ms: int = field(default=100, metadata={"min": 10, "max": 5000})

    def __post_init__(self) -> None:
        try:
            parse_keys(self.keys)
        except KeyStringError as exc:
            raise ValueError(f"keys: {exc}") from None


@dataclass
class FarParty:
    """What happens to a call to one number (``[line.exchange.numbers."100"]``)."""

    #: answer, busy, congestion, sit (a special information tone), no-answer
    #: (rings for ever).
    result: str = field(default="answer", metadata={"choices": RESULTS})
    #: Rings before the answer (0: answers at once, without ringback).
    rings: int = field(default=2, metadata={"min": 0, "max": 100})
    #: What it sends when it answers: a spoken greeting, or silence.
    answer: str = field(default="speech", metadata={"choices": ANSWERS})
    #: The exchange reverses the loop's polarity at the answer (business lines).
    reversal: bool = False
    press: list[KeyPress] = field(default_factory=list)
    #: Hangs up this long after the answer (unset: never).
    hang_up_s: float | None = field(default=None, metadata={"min": 0.0, "max": 86400.0})
    #: What the exchange plays then.
    hang_up_tone: str = field(default="reorder", metadata={"choices": HANG_UP_TONES})
    #: Loop current breaks this long at the hang-up, before the tone (0: no break).
    loop_break_ms: int = field(default=0, metadata={"min": 0, "max": 10000})


@dataclass
class ExchangeOptions:
    """``[line.exchange]``: the simulated line's far end."""

    #: Whose tones the exchange plays; "" = the line's own ``country``.
    country: str = field(default="", metadata={"choices": EXCHANGE_COUNTRIES})
    #: Dial tone from off hook until the first digit (false: silence).
    dial_tone: bool = True
    #: From the end of the dialling to the ringback (or the busy tone...).
    post_dial_ms: int = field(default=500, metadata={"min": 0, "max": 30000})
    #: The line's own audio comes back this much weaker ...
    echo_loss_db: float = field(default=20.0, metadata={"min": 6.0, "max": 80.0})
    #: ... and this much later (a hybrid's echo).
    echo_ms: float = field(default=5.0, metadata={"min": 0.0, "max": 100.0})
    #: Numbers not listed in ``numbers``.
    default: FarParty = field(default_factory=FarParty)
    numbers: dict[str, FarParty] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for number in self.numbers:
            try:
                symbols = parse_keys(number)
            except KeyStringError as exc:
                raise ValueError(f"numbers: {number!r} cannot be dialled: {exc}") from None
            if any(isinstance(s, Pause) for s in symbols):
                raise ValueError(f"numbers: {number!r}: a number is keys only, no pauses")
        # As dialled: the keys' canonical (upper-case) spelling.
        self.numbers = {tone_keys(parse_keys(n)): p for n, p in self.numbers.items()}

    def party(self, number: str) -> FarParty:
        """Who answers ``number`` (its keys as dialled)."""
        return self.numbers.get(number.upper(), self.default)


# -- what the far end does ---------------------------------------------------------------


class Kind(enum.Enum):
    """What an :class:`ExchangeEvent` reports."""

    DIAL_TONE = "dial-tone"
    DIAL_TONE_END = "dial-tone-end"
    #: The dialling ended; ``detail`` is the number.
    NUMBER = "number"
    #: A ring of the ringback begins; ``detail`` counts them from 1.
    RING = "ring"
    #: The far party answered; ``detail`` is speech or silence.
    ANSWER = "answer"
    #: The greeting ended: silence follows.
    SPEECH_END = "speech-end"
    #: The line's polarity reversed (at the answer).
    REVERSAL = "reversal"
    BUSY = "busy"
    CONGESTION = "congestion"
    SIT = "sit"
    #: The far party's key begins; ``detail`` is the key, ``ms`` its length.
    KEY = "key"
    #: The far party hung up; ``detail`` is the tone that follows.
    HANG_UP = "hang-up"
    #: Loop current stops for ``ms``.
    LOOP_BREAK = "loop-break"
    #: The line flashed its hook for ``ms``: the far party is held.
    FLASH = "flash"


@dataclass(frozen=True, slots=True)
class ExchangeEvent:
    """Something the far end did, at line time ``t``."""

    t: float
    kind: Kind
    detail: str = ""
    ms: int = 0

    def describe(self) -> str:
        return " ".join(p for p in (self.kind.value, self.detail,
                                    f"{self.ms} ms" if self.ms else "") if p)


@dataclass
class _Part:
    """What the exchange sends from sample ``start`` until the next part."""

    start: int
    tone: CadencedTone | None = None
    clip: Samples | None = None
    #: A ringback's rings: (samples per ring, how many; None: for ever).
    rings: tuple[int, int | None] | None = None

    def render(self, offset: int, n: int) -> Floats:
        if self.tone is not None:
            return self.tone.render(offset, n)
        out = np.zeros(n)
        if self.clip is not None and offset < len(self.clip):
            piece = self.clip[offset : offset + n]
            out[: len(piece)] = piece
        return out


Subscriber = Callable[[ExchangeEvent], None]


class Exchange:
    """The far end of one line (see the module's docstring). Thread-safe:
    one thread reads its audio while another tells it what the line does.

    ``country`` is the line's (``options.country`` says otherwise); ``rate``
    the samples per second of everything it is given and gives.
    ``synthesiser``: the far party speaks with espeak-ng when it is
    installed; False always uses the built-in voice.
    """

    def __init__(self, options: ExchangeOptions, country: str = "us", rate: int = 8000,
                 *, synthesiser: bool = True) -> None:
        self.options = options
        self.country = options.country or country
        if self.country not in NATIONAL_TONES:
            raise ValueError(f"the exchange has no tones for country {self.country!r}")
        self.rate = rate
        self.synthesiser = synthesiser
        self._tones = {name: national_tone(self.country, name, rate)
                       for name in ("dial", "ringback", "busy", "congestion", "sit")}
        self._echo_gain = 10 ** (-options.echo_loss_db / 20)
        self._echo_delay = round(options.echo_ms * rate / 1000)
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._off_hook = False
        self._reset()

    def _reset(self) -> None:
        self._sample = 0
        self._parts: list[_Part] = [_Part(0)]
        self._keys = Schedule()
        self._echo = Schedule()
        self._due: list[tuple[int, ExchangeEvent]] = []
        self._timeline: list[ExchangeEvent] = []
        self._waiting_number = False

    # -- what others read ------------------------------------------------------------
    @property
    def now(self) -> float:
        """Line time: seconds of audio read since off hook."""
        return self._sample / self.rate

    @property
    def timeline(self) -> list[ExchangeEvent]:
        """What the far end has done since off hook, in time order."""
        with self._lock:
            return list(self._timeline)

    def subscribe(self, subscriber: Subscriber) -> None:
        """``subscriber(event)`` for each event as its audio is read (on the
        reading thread, which it must not hold up)."""
        self._subscribers.append(subscriber)

    def prepare(self) -> None:
        """Make the far party's voice now (espeak-ng takes a moment), not mid-call."""
        greeting(self.rate, self.synthesiser)

    # -- what the line does -------------------------------------------------------------
    def off_hook(self, answering: str | None = None) -> None:
        """The line seized: line time starts at 0. ``answering`` is the number
        of a party whose call the line answers (its ringing came from
        outside): it is connected at once. Otherwise the exchange waits for
        a number, with dial tone."""
        with self._lock:
            self._reset()
            self._off_hook = True
            if answering is not None:
                self._answer(0, self.options.party(answering))
            else:
                self._waiting_number = True
                if self.options.dial_tone:
                    self._parts = [_Part(0, self._tones["dial"])]
                    self._schedule(0, Kind.DIAL_TONE)

    def on_hook(self) -> None:
        """The line released: the far end is gone until the next off hook."""
        with self._lock:
            self._off_hook = False
            self._parts = [_Part(self._sample)]
            self._keys = Schedule()
            self._echo = Schedule()
            self._due.clear()
            self._waiting_number = False

    def dialled(self, keys: str, start: float, end: float) -> None:
        """The line sent DTMF ``keys`` from ``start`` to ``end`` (line time).
        Waiting for a number, the exchange takes them as the whole number:
        dial tone stops at the first, the far end answers after the last.
        Otherwise they reach the far party only as sound."""
        number = tone_keys(parse_keys(keys)) if keys else ""
        with self._lock:
            if not (self._off_hook and self._waiting_number and number):
                return
            self._waiting_number = False
            first = max(self._sample, round(start * self.rate))
            last = max(first, round(end * self.rate))
            if self.options.dial_tone:
                self._schedule(first, Kind.DIAL_TONE_END)
            self._replace_from(_Part(first))
            self._schedule(last, Kind.NUMBER, number)
            self._connect(last + round(self.options.post_dial_ms * self.rate / 1000),
                          self.options.party(number))

    def flash(self, start: float, ms: int) -> None:
        """The line broke its loop at ``start`` for ``ms`` (a hook flash,
        register recall): the far party is held, and what it was going to
        do never comes. When the loop closes the exchange gives recall dial
        tone and takes the keys dialled next as a number (a transfer's
        target); going on hook then completes the transfer."""
        with self._lock:
            if not self._off_hook:
                return
            at = max(self._sample, round(start * self.rate))
            back = at + round(ms * self.rate / 1000)
            self._due = [due for due in self._due if due[0] < at]
            self._keys.cut(at)
            self._echo.cut(at)
            self._schedule(at, Kind.FLASH, ms=ms)
            self._replace_from(_Part(at))
            self._waiting_number = True
            if self.options.dial_tone:
                self._replace_from(_Part(back, self._tones["dial"]))
                self._schedule(back, Kind.DIAL_TONE)

    def transmit(self, audio: Samples, start: float) -> None:
        """The line's own audio (mono) from line time ``start``: it comes
        back as echo, ``echo_loss_db`` weaker and ``echo_ms`` late."""
        with self._lock:
            at = round(start * self.rate) + self._echo_delay
            x = np.asarray(audio, dtype=np.float64) * self._echo_gain
            skip = max(0, self._sample - at)
            self._echo.add(at + skip, x[skip:])

    def stop_transmit(self, at: float) -> None:
        """The line's own audio stops at line time ``at`` (cut short): what
        :meth:`transmit` gave for later never reaches the line."""
        with self._lock:
            self._echo.cut(max(self._sample, round(at * self.rate)))

    # -- the far party's script -------------------------------------------------------------
    def _schedule(self, sample: int, kind: Kind, detail: str = "", ms: int = 0) -> None:
        self._due.append((sample, ExchangeEvent(sample / self.rate, kind, detail, ms)))
        self._due.sort(key=lambda due: due[0])

    def _replace_from(self, part: _Part) -> None:
        self._parts = [p for p in self._parts if p.start < part.start] + [part]

    def _connect(self, at: int, party: FarParty) -> None:
        """After the dialling: ringback, an answer, or a tone that says no."""
        if party.result in ("busy", "congestion", "sit"):
            self._replace_from(_Part(at, self._tones[party.result]))
            self._schedule(at, Kind(party.result))
            return
        ringback = self._tones["ringback"]
        assert ringback.cycle_ms is not None
        cycle = round(ringback.cycle_ms * self.rate / 1000)
        if party.result == "no-answer":
            self._replace_from(_Part(at, ringback, rings=(cycle, None)))
            return
        if party.rings == 0:
            self._answer(at, party)
            return
        self._replace_from(_Part(at, ringback, rings=(cycle, party.rings)))
        # It picks up as the last ring ends.
        self._answer(at + (party.rings - 1) * cycle
                     + round(ringback.sound_ms * self.rate / 1000), party)

    def _answer(self, at: int, party: FarParty) -> None:
        rate = self.rate
        hang_up = None if party.hang_up_s is None else at + round(party.hang_up_s * rate)
        speech = party.answer == "speech"
        self._replace_from(_Part(at, clip=greeting(rate, self.synthesiser) if speech else None))
        self._schedule(at, Kind.ANSWER, party.answer)
        if party.reversal:
            self._schedule(at, Kind.REVERSAL)
        if speech:
            ends = at + len(greeting(rate, self.synthesiser))
            if hang_up is None or ends < hang_up:
                self._schedule(ends, Kind.SPEECH_END)
        for press in party.press:
            self._press(at + round(press.at_s * rate), press, hang_up)
        if hang_up is not None:
            self._hang_up(hang_up, party)

    def _press(self, t: int, press: KeyPress, until: int | None = None) -> None:
        rate = self.rate
        on, off = round(press.duration_ms * rate / 1000), round(press.gap_ms * rate / 1000)
        for symbol in parse_keys(press.keys):
            if until is not None and t + on > until:
                break
            if isinstance(symbol, Tone):
                self._keys.add(t, key_burst(symbol.key, on, rate))
                self._schedule(t, Kind.KEY, symbol.key, press.duration_ms)
                t += on + off
            elif isinstance(symbol, Pause):
                t += round(symbol.ms * rate / 1000)
            # A hook flash is the line's: a far party's "f" is nothing.

    def press(self, keys: str, duration_ms: int = 100, gap_ms: int = 100) -> None:
        """The far party presses ``keys`` now, beside what its number's
        ``press`` says (a test's far party that answers what it hears).
        Off hook only; ValueError for keys SendDTMF would refuse."""
        press = KeyPress(0.0, keys, duration_ms, gap_ms)
        with self._lock:
            if self._off_hook:
                self._press(self._sample, press)

    def _hang_up(self, at: int, party: FarParty) -> None:
        self._schedule(at, Kind.HANG_UP, party.hang_up_tone)
        if party.loop_break_ms:
            self._replace_from(_Part(at))
            self._schedule(at, Kind.LOOP_BREAK, ms=party.loop_break_ms)
            at += round(party.loop_break_ms * self.rate / 1000)
        name = {"reorder": "congestion", "dial": "dial", "busy": "busy"}.get(party.hang_up_tone)
        self._replace_from(_Part(at, self._tones[name] if name else None))

    # -- the audio ------------------------------------------------------------------
    def read(self, n: int) -> Samples:
        """The next ``n`` samples the line receives (silence on hook); line
        time moves on by as much. Events they carry go to the timeline."""
        with self._lock:
            if not self._off_hook:
                return np.zeros(n, dtype=np.int16)
            start, end = self._sample, self._sample + n
            out = (self._keys.take(start, n) + self._echo.take(start, n))[:, 0]
            events = self._rings(start, end)
            for i, part in enumerate(self._parts):
                until = self._parts[i + 1].start if i + 1 < len(self._parts) else end
                a, b = max(start, part.start), min(end, until)
                if a < b:
                    out[a - start : b - start] += part.render(a - part.start, b - a)
            while self._due and self._due[0][0] < end:
                events.append(self._due.pop(0)[1])
            events.sort(key=lambda e: e.t)
            self._timeline.extend(events)
            self._parts = [p for i, p in enumerate(self._parts)
                           if i + 1 == len(self._parts) or self._parts[i + 1].start > end]
            self._sample = end
        for event in events:
            for subscriber in self._subscribers:
                subscriber(event)
        return to_pcm(out)

    def _rings(self, start: int, end: int) -> list[ExchangeEvent]:
        found = []
        for i, part in enumerate(self._parts):
            if part.rings is None:
                continue
            cycle, count = part.rings
            until = self._parts[i + 1].start if i + 1 < len(self._parts) else end
            first = max(0, -(-(start - part.start) // cycle))
            last = (min(end, until) - 1 - part.start) // cycle
            if count is not None:
                last = min(last, count - 1)
            found += [ExchangeEvent((part.start + k * cycle) / self.rate, Kind.RING, str(k + 1))
                      for k in range(first, last + 1)]
        return found
