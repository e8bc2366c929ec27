"""The line driver interface: what the call layer may ask of a phone line.

A driver owns one line's hardware (or its simulation). It knows nothing of
Flask, config files or calls; it is given options (a dataclass), a
:class:`~gateway.tones.ToneEngine` where it needs audio, and a ring callback.

Threading: the call layer drives each line from one worker thread, so a
driver's methods are never called concurrently for the same line, except
:meth:`LineDriver.close` and :meth:`LineDriver.on_hook`, which may come from a
signal handler or the shutdown path and must be safe at any moment.

Fail-safe rule for every driver: the line is on hook after :meth:`open`,
after :meth:`close`, and after any :class:`~gateway.errors.LineFault` a method
raises. The call layer also calls :meth:`on_hook` after a fault, so a driver
whose hardware died still gets the chance to drop its relay.
"""

from __future__ import annotations

import enum
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import NotSupported
from gateway.keys import parse_keys
from gateway.lines.hearing import Ears, Hears, ProgressRules
from gateway.tones import Samples, Timing, TonePlan


class Party(enum.Enum):
    """Who in the call receives the keys (Ozeki's ``Party``)."""

    CALLER = "caller"
    CALLEE = "callee"
    ALL = "all"

    @classmethod
    def parse(cls, text: str) -> Party:
        """Case-insensitive; raises ``ValueError`` naming the accepted values."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValueError(f"{text!r} is not one of caller, callee, all") from None


class HookState(enum.Enum):
    ON_HOOK = "on-hook"
    OFF_HOOK = "off-hook"


RingHandler = Callable[[str | None], None]
"""Called by a driver for every ring burst it hears (not once per call): the
call layer groups the rings of one cadence into one incoming call, and ends
that call when the rings stop. The argument is the caller id when the
hardware reports one."""


@dataclass
class Routing:
    """Which output channels reach which party.

    An analog line has one audio path, so by default all three parties hear
    every output. A line with two outputs (e.g. a stereo HAT feeding two line
    interfaces) can give the caller and the callee their own channel.
    """

    channels: int = field(default=1, metadata={"min": 1, "max": 8})
    caller_channels: list[int] = field(default_factory=lambda: [0])
    callee_channels: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        for name in ("caller_channels", "callee_channels"):
            chosen = getattr(self, name)
            if not chosen:
                raise ValueError(f"{name}: at least one channel is needed")
            for channel in chosen:
                if not 0 <= channel < self.channels:
                    raise ValueError(
                        f"{name}: channel {channel} does not exist on a "
                        f"{self.channels}-channel output (0 to {self.channels - 1})"
                    )

    def channels_for(self, party: Party) -> frozenset[int]:
        if party is Party.CALLER:
            return frozenset(self.caller_channels)
        if party is Party.CALLEE:
            return frozenset(self.callee_channels)
        return frozenset(self.caller_channels) | frozenset(self.callee_channels)


@dataclass
class CallTiming:
    """``call_timing``: how calls are timed on a line.

    A line that cannot hear gets no sign that the far end answered, so the
    gateway waits ``dial_tone_ms`` after going off hook and ``answer_wait_ms``
    after dialling, as a person would. A line that hears waits for dial tone
    (at most ``dial_tone_wait_ms``) and then for the far end's answer, busy,
    congestion or special information tone (at most ``no_answer_ms``). Either
    ends an unanswered incoming call ``ring_timeout_ms`` after the last ring.
    """

    dial_tone_ms: int = field(default=1000, metadata={"min": 0, "max": 10000})
    answer_wait_ms: int = field(default=2000, metadata={"min": 0, "max": 120000})
    #: On a line that hears: dial tone must come within this after seizing
    #: (else 402 ``NoDialTone``) ...
    dial_tone_wait_ms: int = field(default=3000, metadata={"min": 500, "max": 30000})
    #: ... unless the line gives none (a PBX extension that is always ready).
    expect_dial_tone: bool = True
    #: On a line that hears: ringing this long is 402 ``NoAnswer`` (a Call's
    #: ``RingTime`` says otherwise for that call).
    no_answer_ms: int = field(default=60000, metadata={"min": 1000, "max": 600000})
    #: An incoming call nobody answers is over when the line has not rung for
    #: this long: longer than the longest silence of any national cadence
    #: (4 s in North America, 2 s in the UK).
    ring_timeout_ms: int = field(default=6000, metadata={"min": 500, "max": 30000})


class LineDriver(ABC):
    """One phone line. Subclasses override the abstract methods; the rest have
    defaults that are right for a plain analog loop."""

    #: Registry name used in ``[[line]] driver = ...``.
    driver_name = "abstract"

    #: Seconds of wall clock per second on the line (a simulation may run faster).
    wall_factor = 1.0

    def __init__(self, name: str) -> None:
        self.name = name
        #: Outbound call timing; drivers set it from their options.
        self.call_timing = CallTiming()
        self.ring_handler: RingHandler | None = None
        #: The line's hearing, on drivers that hear (see gateway.lines.hearing):
        #: the call layer sets ``ears.handler`` to be told what was heard.
        self.ears: Ears | None = None
        self._hook = HookState.ON_HOOK
        self._hook_lock = threading.Lock()
        self.fault: str | None = None

    # -- lifecycle -------------------------------------------------------
    @abstractmethod
    def open(self) -> None:
        """Acquire the hardware and leave the line on hook. Raises LineFault."""

    @abstractmethod
    def close(self) -> None:
        """Put the line on hook and release the hardware. Safe to call twice."""

    def __enter__(self) -> LineDriver:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hook ---------------------------------------------------------------
    @property
    def hook(self) -> HookState:
        return self._hook

    @abstractmethod
    def off_hook(self) -> None:
        """Seize the line (close the loop)."""

    @abstractmethod
    def on_hook(self) -> None:
        """Release the line. Must not raise for a line that is already on hook,
        and must be attempted even when the hardware is faulty."""

    # -- signalling -------------------------------------------------------------
    @abstractmethod
    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        """Put the plan's tones on the line; return when the last gap has passed."""

    @property
    def audio_rate(self) -> int | None:
        """The sample rate :meth:`play_audio` takes; None on a line that
        plays no audio (a tone-only chip, a modem)."""
        return None

    def play_audio(self, samples: Samples, party: Party = Party.ALL) -> None:
        """Play mono ``samples`` (at :attr:`audio_rate`) into the call; return
        when they have played. Lines without audio raise NotSupported."""
        raise NotSupported(f"a {self.driver_name} line plays no audio")

    def cut_output(self) -> None:
        """Stop the tones or speech playing now, from any thread (the far end
        pressed a key over a menu's prompt): the command returns as if it
        were done. A driver that cannot stop mid-way lets it finish."""

    def speak(self, text: str, language: str | None = None, party: Party = Party.ALL) -> None:
        """Say ``text`` on the line. Tone-only hardware raises NotSupported."""
        raise NotSupported(f"a {self.driver_name} line cannot speak")

    @property
    def hears(self) -> Hears:
        """What this line can hear."""
        return self.ears.hears if self.ears is not None else Hears.NOTHING

    def place_call(
        self, dialed: str, timing: Timing, call_timing: CallTiming | None = None,
        *, no_answer_s: float | None = None,
    ) -> None:
        """Off hook, wait for dial tone, dial ``dialed`` in DTMF, wait for an answer.

        On a line that hears call-progress tones the waits follow what it
        hears, and a call that does not connect raises CallFailed with its
        result state (``NoDialTone``, ``Busy``, ``Congestion``,
        ``SpecialInformationTone``, ``NoAnswer``); ``no_answer_s`` overrides
        ``call_timing.no_answer_ms``. Elsewhere they are ``call_timing``'s
        fixed waits. ``call_timing`` defaults to the driver's own
        :attr:`call_timing`. Drivers with their own dialler (a modem) override this.
        """
        call_timing = call_timing or self.call_timing
        plan = TonePlan(parse_keys(dialed), timing)
        ears = self.ears
        if ears is None or not ears.hears & Hears.TONES:
            self.off_hook()
            self._wait(call_timing.dial_tone_ms / 1000)
            self.emit(plan)
            self._wait(call_timing.answer_wait_ms / 1000)
            if ears is not None:
                ears.talking()  # a line that hears only its loop still hears it drop
            return
        rules = ProgressRules(
            dial_tone_s=call_timing.dial_tone_wait_ms / 1000,
            expect_dial_tone=call_timing.expect_dial_tone,
            no_answer_s=no_answer_s or call_timing.no_answer_ms / 1000,
        )
        self.off_hook()
        progress = ears.track(dialed, rules)
        progress.wait_dial_tone(self._wall(rules.dial_tone_s))
        self.emit(plan)
        progress.dialled()
        progress.wait_answer(self._wall(rules.no_answer_s + rules.confirm_s))
        ears.talking()

    def _wall(self, line_s: float) -> float:
        """A wall-clock bound for ``line_s`` of line time: the line's hearing
        decides first unless it stopped delivering (then a fault)."""
        return line_s * self.wall_factor + 5.0

    def _wait(self, seconds: float) -> None:
        """Time spent on the line (simulations may scale it)."""
        time.sleep(seconds)

    def answer(self) -> None:
        """Take an incoming (ringing) call."""
        self.off_hook()
        if self.ears is not None:
            self.ears.talking()

    # -- health -----------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """What ``/healthz`` shows for this line."""
        return {"driver": self.driver_name, "hook": self.hook.value, "fault": self.fault}

    def _ring(self, caller_id: str | None = None) -> None:
        handler = self.ring_handler
        if handler is not None:
            handler(caller_id)
