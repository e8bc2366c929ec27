"""A simulated phone line: runs everywhere, and is strict where a line is.

It keeps a hook state, answers outbound calls after a ring time, rings on
demand, and spends real time on every tone (scaled by ``time_scale``). What
it carries, the tone engine's audio and a timestamped event log, goes to the
:class:`~gateway.lines.recording.StreamingRecorder` it is given (by
:func:`gateway.lines.build_line`: ``<record_dir>/<CallId>.wav`` and
``.log``). Like a real loop, it carries no audio on hook: tones sent then are
a fault, not a silent success; and a line that cannot record is a faulted
line: opening it, going off hook and every write raise LineFault.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.errors import LineFault, LineInterrupted
from gateway.keys import Pause, Tone
from gateway.lines.base import CallTiming, HookState, LineDriver, Party, Routing
from gateway.lines.recording import DEFAULT_MAX_RECORD_S, MAX_RECORD_S, StreamingRecorder
from gateway.tones import Samples, Timing, ToneEngine, TonePlan, route


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
        if self.options.time_scale > 0 and self._released.wait(seconds * self.options.time_scale):
            raise LineInterrupted("the line went on hook")

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        self._hook = HookState.ON_HOOK
        if self.recorder is not None:
            self.recorder.check()
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

    def on_hook(self) -> None:
        self._released.set()
        if self._hook is HookState.OFF_HOOK:
            self._hook = HookState.ON_HOOK
            self._note("on-hook")

    # -- signalling ------------------------------------------------------------
    def place_call(
        self, dialed: str, timing: Timing, call_timing: CallTiming | None = None,
        *, no_answer_s: float | None = None,
    ) -> None:
        with self._faults_on_hook():
            self._event(f"dial {dialed}")
            super().place_call(dialed, timing, call_timing, no_answer_s=no_answer_s)
            self._event("answered")

    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("the line is on hook: tones would reach nobody")
        with self._faults_on_hook():
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
            self._record(frames[:cut])
            self._wait(cut / self.engine.settings.rate)
            self.fail_after_digits = None
            raise LineFault("simulated hardware fault")
        if self.fail_after_digits is not None:
            self.fail_after_digits -= digits
        self._record(frames)
        self._wait(plan.seconds)

    def _samples_for_digits(self, plan: TonePlan, digits: int) -> int:
        seconds = 0.0
        for symbol in plan.symbols:
            if isinstance(symbol, Pause):
                seconds += symbol.ms / 1000
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
        with self._faults_on_hook():
            self._event(f"speak {party.value} {language or '-'} {text!r}")
            self._record(route(self.engine.silence(seconds * 1000), routing.channels,
                               routing.channels_for(party)))
        self._wait(seconds)

    @property
    def audio_rate(self) -> int:
        return self.engine.settings.rate

    def play_audio(self, samples: Samples, party: Party = Party.ALL) -> None:
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("the line is on hook: audio would reach nobody")
        routing = self.options.routing
        with self._faults_on_hook():
            self._event(f"play {party.value} {len(samples) / self.audio_rate:.3f} s")
            self._record(route(samples, routing.channels, routing.channels_for(party)))
        self._wait(len(samples) / self.audio_rate)

    def ring(self, caller_id: str | None = None) -> None:
        """Ring the line from outside (tests, the console)."""
        self._note(f"ring {caller_id or '-'}")
        self._ring(caller_id)

    def _record(self, frames: Samples) -> None:
        if self.recorder is not None:
            self.recorder.audio(frames)
