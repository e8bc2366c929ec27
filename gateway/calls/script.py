"""Running OzML on a call: each command in order, until the script ends,
hangs up, or the call is over.

The runner knows OzML; what a command does to the call goes through a
:class:`CallControl`, which the call layer provides (tones and speech on the
line's worker, waits that a hang-up cuts short, errors reported to the call's
``ErrorUrl``). Each command is a step that says how the script goes on, so
commands that hold blocks of their own (a menu of inputs, a fetched
document) run those blocks through the same :func:`run_block`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway import ozml
from gateway.errors import NotSupported
from gateway.lines.base import Party
from gateway.tones import TonePlan


class Flow(enum.Enum):
    """How the script goes on after a step."""

    NEXT = "next"
    HANG_UP = "hang up"


class CallControl(Protocol):
    """What a script may do to its call."""

    @property
    def ended(self) -> bool:
        """The call is over (hung up, failed, or the far end left)."""

    def emit(self, plan: TonePlan, party: Party) -> None: ...

    def speak(self, text: str, language: str | None, party: Party) -> None: ...

    def wait(self, seconds: float) -> None:
        """Spend ``seconds`` on the call; returns early when the call ends."""

    def progress(self) -> None:
        """The script moved on (the health check's "not stuck")."""

    def report(self, exc: Exception) -> None:
        """Tell the call's ErrorUrl what went wrong; the script goes on."""


def _send_dtmf(control: CallControl, command: ozml.SendDTMF) -> Flow:
    control.emit(command.plan, command.party)
    return Flow.NEXT


def _delay(control: CallControl, command: ozml.Delay) -> Flow:
    control.wait(command.seconds)
    return Flow.NEXT


def _speak(control: CallControl, command: ozml.Speak) -> Flow:
    try:
        control.speak(command.text, command.language, command.party)
    except NotSupported as exc:
        # Reported, and the script goes on: a menu without its prompt still works.
        exc.command = "Speak"
        control.report(exc)
    return Flow.NEXT


def _hangup(control: CallControl, command: ozml.Hangup) -> Flow:
    return Flow.HANG_UP


Step = Callable[[CallControl, Any], Flow]
STEPS: dict[type, Step] = {
    ozml.SendDTMF: _send_dtmf,
    ozml.Delay: _delay,
    ozml.Speak: _speak,
    ozml.Hangup: _hangup,
}


def run_block(control: CallControl, commands: Sequence[ozml.Command]) -> Flow:
    """Run ``commands`` in order; HANG_UP as soon as one hangs up or the call ends."""
    for command in commands:
        if control.ended:
            return Flow.HANG_UP
        control.progress()
        if STEPS[type(command)](control, command) is Flow.HANG_UP:
            return Flow.HANG_UP
    return Flow.NEXT
