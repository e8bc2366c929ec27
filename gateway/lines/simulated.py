"""A simulated phone line: runs everywhere, and is strict where a line is.

It keeps a hook state, answers outbound calls after a ring time, rings on
demand, spends real time on every tone (scaled by ``time_scale``), and records
each call's audio from the tone engine to ``<record_dir>/<CallId>.wav`` with a
timestamped event log beside it (``<CallId>.log``). Like a real loop, it
carries no audio on hook: tones sent then are a fault, not a silent success.
"""

from __future__ import annotations

import collections
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.errors import LineFault, LineInterrupted
from gateway.keys import Pause, Tone
from gateway.lines.base import CallTiming, HookState, LineDriver, Party, Routing
from gateway.tones import Samples, Timing, ToneEngine, TonePlan, route


@dataclass
class SimulatedOptions:
    """``[[line]]`` keys for ``driver = "simulated"``."""

    record_dir: str = field(default="recordings", metadata={"path": True})
    time_scale: float = field(default=1.0, metadata={"min": 0.0, "max": 10.0})
    routing: Routing = field(default_factory=Routing)
    call_timing: CallTiming = field(
        default_factory=lambda: CallTiming(dial_tone_ms=200, answer_wait_ms=1000)
    )


class SimulatedLine(LineDriver):
    driver_name = "simulated"

    def __init__(self, name: str, options: SimulatedOptions, engine: ToneEngine) -> None:
        super().__init__(name)
        self.options = options
        self.call_timing = options.call_timing
        self.engine = engine
        self.record_dir = Path(options.record_dir)
        self.events: collections.deque[tuple[float, str]] = collections.deque(maxlen=1000)
        self._recording: wave.Wave_write | None = None
        self._log: list[str] = []
        self._call_id: str | None = None
        self._lock = threading.Lock()
        self._opened = False
        # Set while on hook: what the line is doing stops when it goes on hook.
        self._released = threading.Event()
        self._released.set()
        #: Fault injection for tests: raise LineFault after this many more digits.
        self.fail_after_digits: int | None = None

    def _event(self, what: str) -> None:
        stamp = time.time()
        self.events.append((stamp, what))
        if self._call_id is not None:
            self._log.append(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(stamp))}"
                             f".{int(stamp * 1000) % 1000:03d}Z {what}")

    def _wait(self, seconds: float) -> None:
        # A hang-up from another thread puts the line on hook: like a real
        # line, the tones (or the dialling) stop there.
        if self.options.time_scale > 0 and self._released.wait(seconds * self.options.time_scale):
            raise LineInterrupted("the line went on hook")

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self._hook = HookState.ON_HOOK
        self._opened = True
        self._event("open")

    def close(self) -> None:
        self.on_hook()
        if self._call_id is not None:
            self.end_call(self._call_id)
        if self._opened:
            self._event("close")
        self._opened = False

    # -- hook ------------------------------------------------------------------
    def off_hook(self) -> None:
        if not self._opened:
            raise LineFault(f"line {self.name!r} is not open")
        self._hook = HookState.OFF_HOOK
        self._released.clear()
        self._event("off-hook")

    def on_hook(self) -> None:
        self._released.set()
        if self._hook is HookState.OFF_HOOK:
            self._hook = HookState.ON_HOOK
            self._event("on-hook")

    # -- signalling ------------------------------------------------------------
    def place_call(
        self, dialed: str, timing: Timing, call_timing: CallTiming | None = None
    ) -> None:
        self._event(f"dial {dialed}")
        super().place_call(dialed, timing, call_timing)
        self._event("answered")

    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault(f"line {self.name!r} is on hook: tones would reach nobody")
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
            self.on_hook()
            raise LineFault(f"line {self.name!r}: simulated hardware fault")
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
            raise LineFault(f"line {self.name!r} is on hook: speech would reach nobody")
        self._event(f"speak {party.value} {language or '-'} {text!r}")
        seconds = min(len(text) / 15.0, 10.0)
        routing = self.options.routing
        self._record(route(self.engine.silence(seconds * 1000), routing.channels,
                           routing.channels_for(party)))
        self._wait(seconds)

    def ring(self, caller_id: str | None = None) -> None:
        """Ring the line from outside (tests, the console)."""
        self._event(f"ring {caller_id or '-'}")
        self._ring(caller_id)

    # -- recording -------------------------------------------------------------
    def begin_call(self, call_id: str) -> None:
        with self._lock:
            self._call_id = call_id
            self._log = []
            # Open for the whole call; closed in end_call (or close).
            out = wave.open(str(self.record_dir / f"{call_id}.wav"), "wb")  # noqa: SIM115
            out.setnchannels(self.options.routing.channels)
            out.setsampwidth(2)
            out.setframerate(self.engine.settings.rate)
            self._recording = out
        self._event(f"call {call_id} begins")

    def _record(self, frames: Samples) -> None:
        with self._lock:
            if self._recording is not None:
                self._recording.writeframes(np.ascontiguousarray(frames, "<i2").tobytes())

    def end_call(self, call_id: str) -> None:
        self._event(f"call {call_id} ends")
        with self._lock:
            if self._recording is not None:
                self._recording.close()
                self._recording = None
            if self._call_id is not None:
                (self.record_dir / f"{self._call_id}.log").write_text(
                    "\n".join(self._log) + "\n"
                )
            self._call_id = None

    def recording_path(self, call_id: str) -> Path:
        return self.record_dir / f"{call_id}.wav"
