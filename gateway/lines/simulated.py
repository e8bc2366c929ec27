"""A simulated phone line: runs everywhere, and is strict where a line is.

It keeps a hook state, answers outbound calls after a ring time, rings on
demand, and spends real time on every tone (scaled by ``time_scale``). What
it carries, the tone engine's audio and a timestamped event log, goes to the
:class:`~gateway.lines.recording.StreamingRecorder` it is given (by
:func:`gateway.lines.build_line`: ``<record_dir>/<CallId>.wav`` and
``.log``). Like a real loop, it carries no audio on hook: tones sent then are
a fault, not a silent success; and a line that cannot record is a faulted
line: opening it, going off hook and every write raise LineFault.

With an ``exchange`` (:mod:`gateway.lines.exchange`) the line has a far end
and hears it: the exchange's audio is the line's capture, read by a
:class:`~gateway.lines.hearing.CaptureLoop` into the line's
:class:`~gateway.lines.hearing.Ears` exactly as an audio HAT's capture is,
and calls follow what is heard. Line time is then the far end's audio read
since off hook; the line's own tones are placed on it (so they never
overlap, whatever the machine's load) and the recording holds both
directions on that timeline, the far end (with the echo of the line's own
tones) in a channel after the line's own.

How line time runs against the wall clock:

- While a command waits on the line (a Call's set-up waiting for dial tone
  or the answer, a SendDTMF's keys, a Speak), at ``time_scale`` wall
  seconds per line second; with ``time_scale = 0`` as fast as the far end
  can be heard.
- While a command works between those waits, not at all: the gateway's
  own reaction takes no line time, so what it decides (answered, busy)
  does not depend on how loaded the machine is.
- Between commands, at ``time_scale``; with ``time_scale = 0`` at the wall
  clock's pace, so what the far end does later in a call (its keys, its
  hang-up) happens as it would on a real line, for a client to see.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from gateway.detect.countries import COUNTRIES
from gateway.errors import LineFault, LineInterrupted
from gateway.keys import Pause, Tone
from gateway.lines.base import CallTiming, HookState, LineDriver, Party, Routing
from gateway.lines.exchange import Exchange, ExchangeEvent, ExchangeOptions, Kind
from gateway.lines.exchange_audio import Schedule, to_pcm
from gateway.lines.hearing import CaptureLoop, Ears, Hears, LineEvent, LoopBreak, Reversal
from gateway.lines.recording import DEFAULT_MAX_RECORD_S, MAX_RECORD_S, StreamingRecorder
from gateway.tones import Samples, Timing, ToneEngine, TonePlan, route

#: What a line with an exchange hears: its tones, speech, keys and loop current.
HEARS = Hears.TONES | Hears.VOICE | Hears.KEYS | Hears.LOOP
#: The far end's audio is read in blocks this long (line time).
BLOCK_S = 0.05
#: Wall-clock bounds assume the far end is heard at least this many times
#: faster than real time where it runs as fast as it can (time_scale 0);
#: bench/bench_exchange.py measures some 250x on one core.
MIN_SPEED = 20.0
#: A wait on line time whose clock has not moved for this long (wall) has
#: lost its far end. The far end is in this process and a capture that
#: fails says so itself: this is for a machine that stalls (a loaded CI
#: runner reclaiming memory), so it is generous.
STALL_S = 15.0
#: How often a held clock looks whether the command waits again.
HOLD_POLL_S = 0.002


@dataclass
class SimulatedOptions:
    """``[[line]]`` keys for ``driver = "simulated"``."""

    record_dir: str = field(default="recordings", metadata={"path": True})
    #: Seconds of audio after which a call's recording stops (the call goes on).
    max_record_s: float = field(default=DEFAULT_MAX_RECORD_S, metadata={
        "min": MAX_RECORD_S[0], "max": MAX_RECORD_S[1]})
    time_scale: float = field(default=1.0, metadata={"min": 0.0, "max": 10.0})
    routing: Routing = field(default_factory=Routing)
    call_timing: CallTiming = field(
        default_factory=lambda: CallTiming(dial_tone_ms=200, answer_wait_ms=1000)
    )
    #: Whose call-progress tones the line expects to hear, with an exchange
    #: ("" = ``[tones] country``).
    country: str = field(default="", metadata={"choices": ("", *sorted(COUNTRIES))})
    #: The far end (``[line.exchange]``); none: the line hears nothing and
    #: calls keep the fixed waits of ``call_timing``.
    exchange: ExchangeOptions | None = None

    @property
    def recorded_channels(self) -> int:
        """The line's own channels, and the far end's after them."""
        return self.routing.channels + (self.exchange is not None)


class SimulatedLine(LineDriver):
    driver_name = "simulated"

    def __init__(self, name: str, options: SimulatedOptions, engine: ToneEngine,
                 recorder: StreamingRecorder | None = None) -> None:
        super().__init__(name)
        self.options = options
        self.call_timing = options.call_timing
        self.engine = engine
        #: Where the line's calls go; None records nothing.
        self.recorder = recorder
        #: The line's last events, for tests and the console (a call's whole
        #: log is the recorder's, on disk).
        self.events: collections.deque[tuple[float, str]] = collections.deque(maxlen=1000)
        self._opened = False
        # Set while on hook: what the line is doing stops when it goes on hook.
        self._released = threading.Event()
        self._released.set()
        #: Fault injection for tests: raise LineFault after this many more digits.
        self.fail_after_digits: int | None = None
        #: The far end, with an exchange configured.
        self.exchange: Exchange | None = None
        self._capture: CaptureLoop | None = None
        if options.exchange is not None:
            self._hear(options.exchange)

    def _hear(self, options: ExchangeOptions) -> None:
        rate = self.engine.settings.rate
        country = self.options.country or "us"
        scale = self.options.time_scale
        self.exchange = Exchange(options, country, rate)
        self.exchange.subscribe(self._far_end_did)
        self.ears = Ears(self.name, HEARS, country, rate)
        self.wall_factor = max(scale, 1 / MIN_SPEED)
        self._capture = CaptureLoop(self.name, self._open_far_end, self.ears,
                                    speed=1 / scale if scale else 0.0)
        # The line's clock: the capture renders under it, waits wait on it.
        self._clock = threading.Condition(threading.RLock())
        self._commands = 0
        self._awaited: float | None = None
        #: cut_output() ended the wait in progress.
        self._cut = False
        self._free_at = 0.0
        self._outgoing = Schedule(self.options.routing.channels)
        self._loop_events: list[tuple[float, LineEvent]] = []
        self._rang: tuple[str, float] | None = None

    def _event(self, what: str) -> None:
        self.events.append((time.time(), what))
        if self.recorder is not None:
            self.recorder.event(what)

    def _note(self, what: str) -> None:
        """An event where raising is not allowed (on hook, close, a ring from
        outside): a recording that fails here says so at its next write."""
        with contextlib.suppress(LineFault):
            self._event(what)

    @contextlib.contextmanager
    def _faults_on_hook(self) -> Iterator[None]:
        """The driver's fail-safe rule for faults of the recording too: on hook
        after any LineFault."""
        try:
            yield
        except LineFault:
            self.on_hook()
            raise

    def _wait(self, seconds: float) -> None:
        # A hang-up from another thread puts the line on hook: like a real
        # line, the tones (or the dialling) stop there.
        if self.exchange is not None:
            self._wait_line(self.exchange.now + seconds)
        elif self.options.time_scale > 0 and self._released.wait(
                seconds * self.options.time_scale):
            raise LineInterrupted("the line went on hook")

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        self._hook = HookState.ON_HOOK
        if self.recorder is not None:
            self.recorder.check()
        if self.exchange is not None:
            self.exchange.prepare()
        self._opened = True
        self._note("open")

    def close(self) -> None:
        self.on_hook()
        if self._opened:
            self._note("close")
        self._opened = False

    # -- hook ------------------------------------------------------------------
    def off_hook(self) -> None:
        if not self._opened:
            raise LineFault("the line is not open")
        if self.recorder is not None:
            # Before the loop closes: a call that could not be recorded would
            # answer 200 and leave no trace.
            self.recorder.check()
        self._hook = HookState.OFF_HOOK
        self._released.clear()
        self._event("off-hook")
        if self._capture is not None:
            try:
                self._capture.start()
            except BaseException:
                self.on_hook()
                raise

    def on_hook(self) -> None:
        self._released.set()
        if self._capture is not None:
            self._capture.stop()
        if self._hook is HookState.OFF_HOOK:
            self._hook = HookState.ON_HOOK
            self._note("on-hook")

    # -- signalling ------------------------------------------------------------
    def place_call(
        self, dialed: str, timing: Timing, call_timing: CallTiming | None = None,
        *, no_answer_s: float | None = None,
    ) -> None:
        with self._faults_on_hook(), self._command():
            self._event(f"dial {dialed}")
            super().place_call(dialed, timing, call_timing, no_answer_s=no_answer_s)
            self._event("answered")

    def answer(self) -> None:
        with self._command():
            super().answer()

    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("the line is on hook: tones would reach nobody")
        with self._faults_on_hook(), self._command():
            self._emit(plan, party)

    def _emit(self, plan: TonePlan, party: Party) -> None:
        audio = self.engine.render(plan)
        routing = self.options.routing
        frames = route(audio, routing.channels, routing.channels_for(party))
        digits = sum(1 for s in plan.symbols if isinstance(s, Tone))
        self._event(f"emit {party.value} {len(plan.symbols)} symbols {digits} digits "
                    f"{plan.timing.duration_ms}/{plan.timing.gap_ms} ms")
        if self.fail_after_digits is not None and digits > self.fail_after_digits:
            # Emulate hardware dying part-way: what was sent before is on the line.
            cut = self._samples_for_digits(plan, self.fail_after_digits)
            self._carry(audio[:cut], frames[:cut], cut / self.engine.settings.rate, plan)
            self.fail_after_digits = None
            raise LineFault("simulated hardware fault")
        if self.fail_after_digits is not None:
            self.fail_after_digits -= digits
        self._carry(audio, frames, plan.seconds, plan)

    def _carry(self, mono: Samples, frames: Samples, seconds: float,
               plan: TonePlan | None = None) -> None:
        """Put the line's own audio on the line and spend its time there."""
        if self.exchange is None:
            self._record(frames)
            self._wait(seconds)
            return
        rate = self.engine.settings.rate
        with self._clock:
            start = max(self.exchange.now, self._free_at)
            self._free_at = start + seconds
            self._outgoing.add(round(start * rate), frames)
            self.exchange.transmit(mono, start)
            # The rendering lies half a ramp late; keys past its end are not in it.
            late, ends = self.engine.settings.ramp_reach / rate, len(mono) / rate
            keys = [(key, on + late, off + late) for key, on, off in
                    (plan.key_times() if plan is not None else []) if on + late < ends]
            for key, on, off in keys:
                assert self.ears is not None
                self.ears.own_key(key, start + on, start + off)
            if keys:
                self.exchange.dialled("".join(k for k, _, _ in keys), start + keys[0][1],
                                      start + keys[-1][2])
            # Under the clock still: a key heard from now on may cut it short.
            self._wait_line(start + seconds)

    def _samples_for_digits(self, plan: TonePlan, digits: int) -> int:
        seconds = 0.0
        for symbol in plan.symbols:
            if not isinstance(symbol, Tone):
                seconds += symbol.ms / 1000 if isinstance(symbol, Pause) else 0
                continue
            if digits == 0:
                break
            digits -= 1
            seconds += (plan.timing.duration_ms + plan.timing.gap_ms) / 1000
        return round(seconds * self.engine.settings.rate)

    def speak(self, text: str, language: str | None = None, party: Party = Party.ALL) -> None:
        # No synthesiser here: the simulation logs what would be said and spends
        # a speaking person's time on it (about 15 characters a second).
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("the line is on hook: speech would reach nobody")
        seconds = min(len(text) / 15.0, 10.0)
        routing = self.options.routing
        silence = self.engine.silence(seconds * 1000)
        with self._faults_on_hook(), self._command():
            self._event(f"speak {party.value} {language or '-'} {text!r}")
            self._carry(silence, route(silence, routing.channels, routing.channels_for(party)),
                        seconds)

    @property
    def audio_rate(self) -> int:
        return self.engine.settings.rate

    def play_audio(self, samples: Samples, party: Party = Party.ALL) -> None:
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("the line is on hook: audio would reach nobody")
        routing = self.options.routing
        frames = route(samples, routing.channels, routing.channels_for(party))
        with self._faults_on_hook(), self._command():
            self._event(f"play {party.value} {len(samples) / self.audio_rate:.3f} s")
            self._carry(samples, frames, len(samples) / self.audio_rate)

    def flash(self, ms: int) -> None:
        """A hook flash: the loop is open for ``ms`` of line time. With an
        exchange, it holds the far party and gives recall dial tone."""
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("on hook: there is no loop to flash")
        with self._faults_on_hook(), self._command():
            self._event(f"flash {ms} ms")
            if self.exchange is None:
                self._wait(ms / 1000)
                return
            with self._clock:
                start = max(self.exchange.now, self._free_at)
                self._free_at = start + ms / 1000
                self.exchange.flash(start, ms)
                self._wait_line(start + ms / 1000)

    def cut_output(self) -> None:
        """With an exchange: what the line is sending stops now (a far-end
        key over a prompt), and the command returns as if it were done.
        Without, the simulated line lets it finish, as a line without ears
        never hears the key."""
        if self.exchange is None:
            return
        with self._clock:
            if self._awaited is None:
                return
            now = self.exchange.now
            self._outgoing.cut(round(now * self.engine.settings.rate))
            self.exchange.stop_transmit(now)
            self._free_at = now
            self._cut = True
            self._clock.notify_all()

    def ring(self, caller_id: str | None = None) -> None:
        """Ring the line from outside (tests). With an exchange,
        answering within ``call_timing.ring_timeout_ms`` connects the far
        party of ``caller_id`` (``exchange.default`` for an unknown one)."""
        self._note(f"ring {caller_id or '-'}")
        if self.exchange is not None:
            self._rang = (caller_id or "", time.monotonic())
        self._ring(caller_id)

    def _record(self, frames: Samples) -> None:
        if self.recorder is not None:
            self.recorder.audio(frames)

    def status(self) -> dict[str, object]:
        out = super().status()
        if self.exchange is not None:
            out["exchange"] = self.exchange.country
        return out

    # -- the far end ---------------------------------------------------------------
    @contextlib.contextmanager
    def _command(self) -> Iterator[None]:
        """A command runs: line time stands still except while it waits on the line."""
        if self.exchange is None:
            yield
            return
        with self._clock:
            self._commands += 1
        try:
            yield
        finally:
            with self._clock:
                self._commands -= 1
                self._clock.notify_all()

    def _scale(self) -> float | None:
        """Wall seconds per line second now (0: as fast as it can be heard);
        None: line time stands still (see the module's docstring)."""
        scale = self.options.time_scale
        if self._commands == 0:
            return scale or 1.0
        assert self.exchange is not None and self.ears is not None
        if self._awaited is not None and self._awaited > self.exchange.now:
            return scale
        progress = self.ears.progress
        if progress is not None and progress.waiting:
            return scale
        return None

    def _wall(self, line_s: float) -> float:
        return line_s * self.wall_factor + STALL_S

    def _wait_line(self, until: float) -> None:
        """Until line time ``until``: what the far end sends meanwhile is heard."""
        exchange = self.exchange
        assert exchange is not None
        with self._clock:
            self._awaited = until
            self._cut = False
            self._clock.notify_all()
            try:
                moved, heard = time.monotonic(), exchange.now
                while exchange.now < until and not self._cut:
                    if self._released.is_set():
                        raise LineInterrupted("the line went on hook")
                    self._clock.wait(0.1)
                    if exchange.now != heard:
                        moved, heard = time.monotonic(), exchange.now
                    elif time.monotonic() - moved > STALL_S + 4 * BLOCK_S * self.options.time_scale:
                        raise LineFault(f"the far end's audio stopped for {STALL_S:g} s")
            finally:
                self._awaited = None

    def _open_far_end(self) -> _FarEnd:
        assert self.exchange is not None
        rang, self._rang = self._rang, None
        # As long as the call layer keeps an unanswered call ringing.
        timeout = self.call_timing.ring_timeout_ms / 1000
        answering = rang[0] if rang is not None and time.monotonic() - rang[1] < timeout else None
        with self._clock:
            self._free_at = 0.0
            self._outgoing = Schedule(self.options.routing.channels)
            self._loop_events = []
            self.exchange.off_hook(answering)
            return _FarEnd(self)

    def _far_end_did(self, event: ExchangeEvent) -> None:
        """From the exchange, as its audio is read (the capture thread)."""
        self._event(f"far end: {event.describe()}")
        if event.kind is Kind.LOOP_BREAK:
            # The loop-sense input knows the break's length at its end.
            self._loop_events.append((event.t + event.ms / 1000, LoopBreak(event.t, event.ms)))
        elif event.kind is Kind.REVERSAL:
            self._loop_events.append((event.t, Reversal(event.t)))

    def _loop_heard(self, until: float) -> list[LineEvent]:
        """Loop-current events the loop-sense input knows of by line time ``until``."""
        due = [e for at, e in self._loop_events if at <= until]
        self._loop_events = [(at, e) for at, e in self._loop_events if at > until]
        return due


class _FarEnd:
    """The far end as the line's capture (a :class:`~gateway.lines.hearing.CaptureSource`):
    the exchange's audio block by block, on the line's clock, into the
    line's recording beside the line's own."""

    def __init__(self, line: SimulatedLine) -> None:
        assert line.exchange is not None
        self._line = line
        self._exchange = line.exchange
        self.rate = line.exchange.rate
        self._block = round(BLOCK_S * self.rate)
        self._closed = False
        #: Where pacing counts from: (wall, line time, wall seconds per line second).
        self._anchor: tuple[float, float, float] | None = None

    def read(self) -> Samples:
        line, exchange = self._line, self._exchange
        with line._clock:
            if not self._paced():
                return np.zeros(0, dtype=np.int16)
            heard = exchange.now
            # Those of the blocks already heard: after their audio.
            loop = line._loop_heard(heard)
            block = exchange.read(self._block)
            own = line._outgoing.take(round(heard * self.rate), self._block)
            if line.recorder is not None:
                line.recorder.audio(to_pcm(np.column_stack((own, block))))
            line._clock.notify_all()
        if loop and line.ears is not None:
            line.ears.heard(loop, heard)
        return block

    def _paced(self) -> bool:
        """Until the next block is due; False once closed."""
        line, exchange = self._line, self._exchange
        while not self._closed:
            scale = line._scale()
            if scale is None:
                self._anchor = None
                line._clock.wait(HOLD_POLL_S)
                continue
            if scale == 0:
                self._anchor = None
                return True
            if self._anchor is None or self._anchor[2] != scale:
                self._anchor = (time.monotonic(), exchange.now, scale)
            wall, heard, _ = self._anchor
            left = wall + (exchange.now + BLOCK_S - heard) * scale - time.monotonic()
            if left <= 0:
                return True
            line._clock.wait(left)
        return False

    def close(self) -> None:
        line = self._line
        with line._clock:
            self._closed = True
            self._exchange.on_hook()
            line._clock.notify_all()
