"""What a line hears, and how a call follows it.

A driver that can hear gives its line an :class:`Ears`. Audio drivers (an
audio HAT's capture, the simulated line's far end) feed it blocks of PCM
from a :class:`CaptureLoop`, and the detectors of :mod:`gateway.detect`
turn them into events; drivers whose hardware reports for itself (an
MT8880's call-progress output, a voice modem's V.253 reports) give it the
same events directly. Every event carries its time on the *line's*
timeline, seconds of audio since the line went off hook, counted in
samples: a capture that delivers faster than real time (a file) is judged
by what it holds, never by the wall clock.

From those events :class:`CallProgress` decides an outbound call's set-up
(dial tone, then ringback, busy, congestion, a special information tone,
an answer, or nothing for too long), and afterwards :class:`Ears` tells the
call layer, through its :class:`LineHandler`, when the far end has gone
(busy, reorder or dial tone after the talk, a loop-current break, the
modem's own report) and which keys it pressed.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.detect import Dtmf, Listener, Silence, Tone, ToneEnd, Voice
from gateway.errors import CallFailed, LineFault, LineInterrupted
from gateway.tones import Samples

log = logging.getLogger(__name__)


# -- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopBreak:
    """Loop current stopped for ``ms`` (a loop-sense input, a modem's ``l``)."""

    t: float
    ms: int


@dataclass(frozen=True, slots=True)
class Reversal:
    """The exchange reversed the loop's polarity: on lines that signal it, the answer."""

    t: float


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The hardware says the far end has gone (a modem's NO CARRIER)."""

    t: float
    why: str


LineEvent = Dtmf | Tone | ToneEnd | Voice | Silence | LoopBreak | Reversal | Disconnected
"""Everything a line may hear, in the line's time."""

#: Events kept for a set-up not yet followed: far more than the first
#: seconds after off hook can hold.
BACKLOG = 256

#: Tones after which the far end is gone, when heard during the talk.
GONE_TONES = frozenset({"busy", "congestion", "dial", "sit"})


class Hears(enum.Flag):
    """What a driver can hear (the README's driver table says it per line)."""

    NOTHING = 0
    #: Call-progress tones: dial tone, ringback, busy, congestion, SIT.
    TONES = enum.auto()
    #: Line energy: speech or silence (answer detection).
    VOICE = enum.auto()
    #: Keys the far end presses.
    KEYS = enum.auto()
    #: Loop current: breaks (the far end's disconnect), polarity reversal.
    LOOP = enum.auto()


class EarsTap(Protocol):
    """Something that takes what a line hears as it hears it (a Record
    command): the audio blocks fed, and the events. Called on the hearing
    thread: it must not wait for the line."""

    def audio(self, block: Samples, rate: int) -> None: ...

    def events(self, events: Sequence[LineEvent], now: float) -> None: ...


class LineHandler(Protocol):
    """What the call layer is told; called from the line's hearing thread,
    so a handler must not wait for the line."""

    def ringing(self) -> None:
        """The far end rings: ringback is heard."""

    def far_end_left(self, why: str) -> None:
        """During the talk, the line says the far end has gone."""

    def key(self, key: str, duration_ms: int) -> None:
        """The far end pressed ``key``."""

    def fault(self, exc: LineFault) -> None:
        """The line's hearing failed (its capture device vanished)."""


# -- an outbound call's set-up ---------------------------------------------------------


@dataclass(frozen=True)
class ProgressRules:
    """How long each stage of a call's set-up may take, in line time."""

    #: Dial tone must be heard within this after going off hook ...
    dial_tone_s: float = 3.0
    #: ... unless the line gives none (a PBX extension): then dial at once.
    expect_dial_tone: bool = True
    #: Ringing (or silence) for this long after dialling: ``NoAnswer``.
    no_answer_s: float = 60.0
    #: Silence this long after dialling, with no ringback ever: taken as the
    #: answer of a far end that says nothing (a modem, an alarm panel).
    silent_answer_s: float = 8.0
    #: An answer (ringback stopped, speech began) stands once this much more
    #: has been heard without a busy, congestion or SIT tone starting: long
    #: enough for the detectors to recognise any of those.
    confirm_s: float = 2.0
    #: Sound this soon after our own dialling is its echo, not the far end.
    echo_s: float = 0.3
    #: With nothing heard this long after dialling (no ringback, no answer,
    #: no failure), the call counts as answered: for hardware that reports
    #: what it hears and may report nothing (a modem), which then gets the
    #: fixed wait of a line that cannot hear. None: never assumed.
    assume_answer_s: float | None = None


class _Stage(enum.Enum):
    DIAL_TONE = "waiting for dial tone"
    DIALLING = "dialling"
    PROGRESS = "waiting for an answer"
    DONE = "done"


#: Result states of a call that did not connect, by the tone that said so.
FAILED_BY_TONE = {"busy": "Busy", "congestion": "Congestion", "sit": "SpecialInformationTone"}


class CallProgress:
    """One outbound call's set-up, decided from what the line hears.

    The driver calls :meth:`wait_dial_tone`, dials, calls :meth:`dialled`
    and then :meth:`wait_answer`; the line's hearing thread calls
    :meth:`heard` meanwhile. The waits end on the line's timeline; their
    ``wall_s`` bound only catches a hearing that stopped delivering audio.

    An answer is ringback that stops, speech after dialling, a polarity
    reversal, or (from a far end that never rings back) long silence; it
    stands once :attr:`ProgressRules.confirm_s` more has passed without a
    tone that says the call failed, and dates from when it happened.
    """

    def __init__(self, dialed: str, rules: ProgressRules, started: float,
                 on_ringing: Callable[[], None] = lambda: None) -> None:
        self.dialed = dialed
        self.rules = rules
        self._on_ringing = on_ringing
        self._cond = threading.Condition()
        self._stage = _Stage.DIAL_TONE if rules.expect_dial_tone else _Stage.DIALLING
        self._started = started
        self._dialled_at: float | None = None
        self._quiet_since: float | None = None
        self._ringing = False
        #: When the far end seems to have answered (not yet confirmed).
        self._candidate: float | None = None
        self._now = started
        self._failure: CallFailed | None = None
        self.answered_at: float | None = None
        self._stopped = False
        self._fault: LineFault | None = None
        #: What the driver's thread is waiting for, while it waits.
        self._awaited: Callable[[], bool] | None = None

    # -- from the hearing thread -----------------------------------------------------
    def heard(self, events: Sequence[LineEvent], now: float) -> None:
        """Events up to line time ``now`` (also called with none, as time passes)."""
        if self.take(events, now):
            self._on_ringing()

    def take(self, events: Sequence[LineEvent], now: float) -> bool:
        """:meth:`heard` without telling anyone of the ringing: True when
        the far end started to ring."""
        ring = False
        with self._cond:
            for event in events:
                ring |= self._take(event)
            self._now = max(self._now, now)
            self._check_time()
            self._cond.notify_all()
        return ring

    def _take(self, event: LineEvent) -> bool:
        """One event; True when the far end starts to ring."""
        if self._stage is _Stage.DONE:
            return False
        if self._stage is _Stage.DIAL_TONE:
            if isinstance(event, Tone) and event.tone == "dial":
                self._stage = _Stage.DIALLING
            return False
        # Dialling or after: what the far end does. Dial tone itself goes on
        # until the first digit; it says nothing about the call.
        if isinstance(event, Tone):
            if event.tone in FAILED_BY_TONE:
                self._fail(FAILED_BY_TONE[event.tone], f"{event.tone} tone at {event.t:.1f} s")
            elif event.tone == "ringback":
                # Ringing (again): whatever looked like an answer was not one.
                self._candidate = None
                self._quiet_since = None
                if not self._ringing:
                    self._ringing = True
                    return True
            return False
        if isinstance(event, Reversal) and self._stage is _Stage.PROGRESS:
            self._answer(event.t)
        elif isinstance(event, ToneEnd) and event.tone == "ringback":
            self._maybe_answered(event.t)
        elif isinstance(event, Voice):
            self._quiet_since = None
            if self._after_dialling(event.t):
                self._maybe_answered(event.t)
        elif isinstance(event, Silence):
            self._quiet_since = event.t
        elif isinstance(event, Disconnected | LoopBreak) and self._stage is _Stage.PROGRESS:
            self._fail("NoAnswer", f"the line dropped ({_what(event)})")
        return False

    def _after_dialling(self, t: float) -> bool:
        return self._dialled_at is not None and t >= self._dialled_at + self.rules.echo_s

    def _maybe_answered(self, t: float) -> None:
        if self._candidate is None:
            self._candidate = t

    def _check_time(self) -> None:
        rules = self.rules
        if self._stage is _Stage.DIAL_TONE:
            if self._now - self._started > rules.dial_tone_s:
                self._fail("NoDialTone", f"no dial tone within {rules.dial_tone_s:g} s")
            return
        if self._stage is not _Stage.PROGRESS or self._dialled_at is None:
            return
        if self._candidate is not None and self._now >= self._candidate + rules.confirm_s:
            self._answer(self._candidate)
        elif (rules.assume_answer_s is not None and not self._ringing and self._candidate is None
              and self._now - self._dialled_at >= rules.assume_answer_s):
            self._answer(self._dialled_at + rules.assume_answer_s)
        elif self._now - self._dialled_at > rules.no_answer_s:
            self._fail("NoAnswer", f"no answer within {rules.no_answer_s:g} s")
        elif not self._ringing and self._quiet_since is not None:
            quiet_from = max(self._quiet_since, self._dialled_at)
            if self._now - quiet_from > rules.silent_answer_s:
                self._answer(quiet_from)

    def _answer(self, at: float) -> None:
        self.answered_at = at
        self._stage = _Stage.DONE

    def _fail(self, state: str, detail: str) -> None:
        self._failure = CallFailed(self.dialed, state, detail)
        self._stage = _Stage.DONE

    # -- from the driver's command -------------------------------------------------
    def stop(self) -> None:
        """The line went on hook (a hang-up): the waits end."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def failed(self, exc: LineFault) -> None:
        """The line's hearing failed (its capture device went): the waits raise ``exc``."""
        with self._cond:
            self._fault = exc
            self._cond.notify_all()

    def wait_dial_tone(self, wall_s: float) -> None:
        """Until dial tone; CallFailed ``NoDialTone`` when none came in time."""
        self._wait(lambda: self._stage is not _Stage.DIAL_TONE, wall_s)

    def dialled(self) -> None:
        """The number is dialled: from now the far end's answer counts."""
        with self._cond:
            if self._stage is _Stage.DIALLING:
                self._stage = _Stage.PROGRESS
                self._dialled_at = self._now
            self._check_time()
            self._cond.notify_all()

    def wait_answer(self, wall_s: float) -> float:
        """Until the far end answers; its line time. CallFailed when it will not."""
        self._wait(lambda: self._stage is _Stage.DONE, wall_s)
        assert self.answered_at is not None
        return self.answered_at

    @property
    def waiting(self) -> bool:
        """A driver's thread waits on this set-up, and what it waits for has
        not been heard yet: a simulated line lets its line time run only then."""
        with self._cond:
            awaited = self._awaited
            return awaited is not None and not (awaited() or self._failure is not None
                                                or self._stopped or self._fault is not None)

    def _wait(self, done: Callable[[], bool], wall_s: float) -> None:
        deadline = time.monotonic() + wall_s
        with self._cond:
            self._awaited = done
            try:
                while not (done() or self._failure is not None or self._stopped
                           or self._fault is not None):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LineFault(f"the line's hearing stopped while {self._stage.value} "
                                        f"(nothing heard for {wall_s:g} s)")
                    self._cond.wait(left)
            finally:
                self._awaited = None
            if self._fault is not None:
                raise self._fault
            if self._stopped:
                raise LineInterrupted("the line went on hook")
            if self._failure is not None:
                raise self._failure


def _what(event: LineEvent) -> str:
    if isinstance(event, LoopBreak):
        return f"loop current broke for {event.ms} ms"
    if isinstance(event, Disconnected):
        return event.why
    return type(event).__name__


# -- a line's hearing --------------------------------------------------------------------


class Ears:
    """One line's hearing: its events in line time, to the call set-up in
    progress and then to the call layer.

    ``cpc_ms``: a loop-current break at least this long means the far end
    hung up (the exchange's "calling party control" open). ``detectors``:
    False for hardware that judges what it hears itself (a modem's V.253
    reports): no detectors run, and line time is what :meth:`heard` is given.
    """

    def __init__(self, line: str, hears: Hears, country: str = "us", rate: int = 8000,
                 *, cpc_ms: int = 250, detectors: bool = True) -> None:
        self.line = line
        self.hears = hears
        self.cpc_ms = cpc_ms
        self.handler: LineHandler | None = None
        self._listener = Listener(country, rate) if detectors and hears & (
            Hears.TONES | Hears.VOICE | Hears.KEYS) else None
        self._lock = threading.Lock()
        self._progress: CallProgress | None = None
        self._talking = False
        self._now = 0.0
        #: Heard since off hook while no set-up was followed yet (the capture
        #: may start hearing before the driver's command gets to track()).
        self._backlog: list[LineEvent] = []
        self._taps: list[EarsTap] = []
        self._listening = False

    @property
    def time(self) -> float:
        """Line time now: seconds heard since the line went off hook."""
        return self._listener.time if self._listener is not None else self._now

    @property
    def progress(self) -> CallProgress | None:
        """The outbound call's set-up being followed, until :meth:`talking`."""
        with self._lock:
            return self._progress

    def start(self) -> None:
        """The line went off hook: line time starts again at 0."""
        with self._lock:
            if self._listener is not None:
                self._listener.reset()
            self._now = 0.0
            self._progress = None
            self._talking = False
            self._backlog = []
            self._listening = True

    def stop(self) -> None:
        """The line went on hook: a set-up waiting on it ends."""
        with self._lock:
            progress, self._progress = self._progress, None
            self._talking = False
            self._backlog = []
            self._listening = False
        if progress is not None:
            progress.stop()

    # -- what the call layer asks ------------------------------------------------------
    def track(self, dialed: str, rules: ProgressRules) -> CallProgress:
        """Follow an outbound call's set-up from now, and from what was heard
        since off hook (in order, before anything newer reaches it)."""
        handler = self.handler
        on_ringing = handler.ringing if handler is not None else (lambda: None)
        with self._lock:
            # A set-up in progress is no talk: a dial tone now is the one
            # waited for (a transfer's recall), not the far end gone.
            self._talking = False
            progress = CallProgress(dialed, rules, self.time, on_ringing)
            backlog, self._backlog = self._backlog, []
            rang = progress.take(backlog, self._now) if backlog else False
            self._progress = progress
        if rang:
            on_ringing()
        return progress

    def talking(self) -> None:
        """The call is connected: from now the far end may leave."""
        with self._lock:
            self._progress = None
            self._talking = True
            self._backlog = []

    def own_key(self, key: str, start: float, end: float) -> None:
        """The gateway itself sends ``key`` from ``start`` to ``end`` (line
        time): its echo is not the far end's key."""
        if self._listener is not None:
            with self._lock:
                self._listener.own_key(key, start, end)

    # -- what the driver feeds ------------------------------------------------------------
    @property
    def rate(self) -> int:
        """The sample rate of the audio fed (0 where none is)."""
        return self._listener.rate if self._listener is not None else 0

    @property
    def captures_audio(self) -> bool:
        """Audio is fed to these ears (a line whose far end can be recorded)."""
        return self._listener is not None and self.hears & Hears.VOICE != Hears.NOTHING

    def add_tap(self, tap: EarsTap) -> None:
        with self._lock:
            self._taps = [*self._taps, tap]

    def remove_tap(self, tap: EarsTap) -> None:
        with self._lock:
            self._taps = [t for t in self._taps if t is not tap]

    def feed(self, block: Samples) -> None:
        """Received audio (mono, at the capture's rate), from the capture thread."""
        assert self._listener is not None, "feed() is for lines that capture audio"
        with self._lock:
            events = self._listener.feed(block)
            now = self._listener.time
            taps, rate = self._taps, self._listener.rate
        for tap in taps:
            tap.audio(block, rate)
        self.heard(events, now)

    def heard(self, events: Sequence[LineEvent], now: float | None = None) -> None:
        """Events the driver heard (by the detectors, or as the hardware
        reported them), up to line time ``now`` (default: the latest event)."""
        if now is None:
            now = max((e.t for e in events), default=self._now)
        with self._lock:
            self._now = max(self._now, now)
            progress, talking, handler = self._progress, self._talking, self.handler
            taps = self._taps
            if progress is None and not talking and self._listening:
                self._backlog.extend(events)
                del self._backlog[:-BACKLOG]
        if progress is not None:
            progress.heard(events, now)
        for tap in taps:
            tap.events(events, now)
        if handler is None:
            return
        for event in events:
            if isinstance(event, Dtmf):
                handler.key(event.key, event.duration_ms)
            elif talking:
                why = self._gone(event)
                if why:
                    with self._lock:
                        if not self._talking:
                            return
                        self._talking = False
                    handler.far_end_left(why)
                    return

    def _gone(self, event: LineEvent) -> str:
        if isinstance(event, Tone) and event.tone in GONE_TONES:
            return f"{event.tone} tone"
        if isinstance(event, LoopBreak) and event.ms >= self.cpc_ms:
            return f"loop current broke for {event.ms} ms"
        if isinstance(event, Disconnected):
            return event.why
        return ""

    def failed(self, exc: LineFault) -> None:
        """The hearing itself failed (from the capture thread): a set-up
        waiting on it fails with ``exc``, and the call layer is told."""
        with self._lock:
            progress, self._progress = self._progress, None
            self._talking = False
        if progress is not None:
            progress.failed(exc)
        handler = self.handler
        if handler is not None:
            handler.fault(exc)


# -- capturing audio ---------------------------------------------------------------------


class CaptureSource(Protocol):
    """Where a line's received audio comes from (an ALSA capture PCM, a
    simulated far end). Used by one thread at a time."""

    #: Samples per second of what :meth:`read` returns.
    rate: int

    def read(self) -> Samples:
        """The next block of mono samples; blocks until there is one. Raises
        LineFault when the device fails; an empty block when it has ended."""

    def close(self) -> None:
        """Release the device. Safe to call twice, from any thread."""


#: How far a capture may run ahead of the wall clock before it is paced.
LEAD_S = 0.2


class CaptureLoop:
    """Reads a :class:`CaptureSource` on a thread of its own, from off hook
    to on hook, into the line's :class:`Ears`.

    A sound card delivers in real time and blocks in between. A source that
    delivers faster (a file behind ALSA's ``file`` plugin, which also starts
    again at its end) is paced to ``speed`` times real time, so that what
    the far end plays meets what the gateway does (going off hook, dialling)
    as it would on a line; the detectors' times come from sample counts
    either way.
    """

    def __init__(self, line: str, open_source: Callable[[], CaptureSource], ears: Ears,
                 speed: float = 1.0) -> None:
        self.line = line
        self._open_source = open_source
        self.ears = ears
        self.speed = speed
        self._thread: threading.Thread | None = None
        self._source: CaptureSource | None = None
        self._stop = threading.Event()
        self.blocks = 0

    def start(self) -> None:
        """Open the source (LineFault if it cannot be) and start reading."""
        self.stop()
        self.ears.start()
        self._stop.clear()
        self._source = self._open_source()
        self._thread = threading.Thread(target=self._run, args=(self._source,),
                                        name=f"{self.line}-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        source, self._source = self._source, None
        if source is not None:
            source.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        self.ears.stop()

    def _run(self, source: CaptureSource) -> None:
        started = time.monotonic()
        heard = 0
        try:
            while not self._stop.is_set():
                block = source.read()
                if self._stop.is_set() or len(block) == 0:
                    return
                self.blocks += 1
                self.ears.feed(block)
                heard += len(block)
                if self.speed > 0:
                    ahead = heard / source.rate / self.speed - (time.monotonic() - started)
                    if ahead > LEAD_S and self._stop.wait(ahead - LEAD_S / 2):
                        return
        except LineFault as exc:
            if not self._stop.is_set():
                log.error("line %s: capture failed: %s", self.line, exc)
                self.ears.failed(exc)
        except Exception as exc:
            if not self._stop.is_set():
                log.exception("line %s: capture failed", self.line)
                self.ears.failed(LineFault(f"capture failed: {type(exc).__name__}: {exc}"))
