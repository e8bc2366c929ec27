"""Running OzML on a call: each command in order, until the script ends,
hangs up, or the call is over.

The runner knows OzML; what a command does to the call goes through a
:class:`CallControl`, which the call layer provides (tones and speech on the
line's worker, waits that a hang-up cuts short, the far end's keys, OzML
fetched from URLs, errors reported to the call's ``ErrorUrl``). Each command
is a step that says how the script goes on, so commands that hold blocks of
their own (a UserInput's menu, a fetched document) run those blocks through
the same :func:`run_block`.

Where Ozeki's documentation is silent, the README says what was decided: a
key that matches no entry of a menu (and no ``ForwardToUrl`` takes) plays
the menu again; a back key in a menu that is not nested ends the menu and
the script goes on; a document fetched by ``GoTo`` or answering a
``DtmfEntered`` runs in place of its command, then the script goes on.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import ozml
from gateway.errors import Inappropriate, MediaError, NotSupported
from gateway.lines.base import Party
from gateway.tones import TonePlan

log = logging.getLogger(__name__)

#: Documents fetched inside documents fetched (GoTo in GoTo ...): deeper is a
#: loop of URLs, and the call is hung up.
MAX_FETCH_DEPTH = 16


class Flow(enum.Enum):
    """How the script goes on after a step."""

    NEXT = "next"
    HANG_UP = "hang up"
    #: A nested menu's back key: the menu above plays again.
    BACK = "back"


@dataclass(frozen=True)
class Context:
    """Where a step runs: inside how many menus, and how many fetched documents."""

    menus: int = 0
    fetches: int = 0


class CallControl(Protocol):
    """What a script may do to its call."""

    @property
    def ended(self) -> bool:
        """The call is over (hung up, failed, or the far end left)."""

    def emit(self, plan: TonePlan, party: Party) -> None: ...

    def speak(self, text: str, language: str | None, party: Party) -> None:
        """Say ``text``; NotSupported (as Speak's) on a line that cannot speak."""

    def play(self, command: ozml.Play) -> None:
        """Play its audio file; MediaError when it cannot be had."""

    def transfer(self, target: str) -> None:
        """Hand the call to ``target``; the call is over after it."""

    def record(self, command: ozml.Record) -> None:
        """Record what the line hears until the recording ends."""

    def wait(self, seconds: float) -> None:
        """Spend ``seconds`` on the call; returns early when the call ends
        (and, inside :meth:`barge_in`, when the far end presses a key)."""

    def progress(self) -> None:
        """The script moved on (the health check's "not stuck")."""

    def report(self, exc: Exception) -> None:
        """Tell the call's ErrorUrl what went wrong; the script goes on."""

    def barge_in(self) -> AbstractContextManager[None]:
        """While inside, a far-end key cuts short what plays."""

    @property
    def key_waiting(self) -> bool:
        """A far-end key has come and is not taken yet."""

    def take_key(self, timeout: float | None) -> str | None:
        """The far end's next key within ``timeout`` s (None: no limit);
        None on a timeout or when the call ended."""

    def flush_keys(self) -> None:
        """Forget keys pressed before now."""

    def fetch(self, url: str, notification: str,
              extra: dict[str, str]) -> tuple[ozml.Command, ...] | None:
        """POST ``notification`` (the call's fields and ``extra``) to ``url``
        and parse the OzML it answers; None when that failed (reported, and
        the call ends)."""


def _send_dtmf(control: CallControl, command: ozml.SendDTMF, ctx: Context) -> Flow:
    try:
        control.emit(command.plan, command.party)
    except NotSupported as exc:  # a hook flash on a line without a relay
        control.report(exc)
    return Flow.NEXT


def _delay(control: CallControl, command: ozml.Delay, ctx: Context) -> Flow:
    control.wait(command.seconds)
    return Flow.NEXT


def _speak(control: CallControl, command: ozml.Speak, ctx: Context) -> Flow:
    try:
        control.speak(command.text, command.language, command.party)
    except NotSupported as exc:
        # Reported, and the script goes on: a menu without its prompt still works.
        control.report(exc)
    return Flow.NEXT


def _play(control: CallControl, command: ozml.Play, ctx: Context) -> Flow:
    try:
        control.play(command)
    except (NotSupported, MediaError) as exc:
        # Reported, and the script goes on, as for a Speak the line cannot say.
        if isinstance(exc, NotSupported):
            exc.command = "Play"
        control.report(exc)
    return Flow.NEXT


def _blind_transfer(control: CallControl, command: ozml.BlindTransfer, ctx: Context) -> Flow:
    try:
        control.transfer(command.target)
    except NotSupported as exc:
        control.report(exc)
        return Flow.NEXT  # the call is still up: the script goes on
    return Flow.HANG_UP


def _record(control: CallControl, command: ozml.Record, ctx: Context) -> Flow:
    try:
        control.record(command)
    except Inappropriate as exc:  # a line that hears nothing to record
        control.report(exc)
    return Flow.NEXT


def _hangup(control: CallControl, command: ozml.Hangup, ctx: Context) -> Flow:
    return Flow.HANG_UP


def _cannot(control: CallControl, command: ozml.CannotHere, ctx: Context) -> Flow:
    control.report(Inappropriate(command.command, ozml.ANALOG_CANNOT[command.command]))
    return Flow.NEXT


def _fetched(control: CallControl, url: str, notification: str, extra: dict[str, str],
             ctx: Context) -> Flow:
    if ctx.fetches >= MAX_FETCH_DEPTH:
        log.warning("OzML fetched %d documents deep: hanging up", ctx.fetches)
        return Flow.HANG_UP
    commands = control.fetch(url, notification, extra)
    if commands is None:
        return Flow.HANG_UP
    flow = run_block(control, commands, Context(ctx.menus, ctx.fetches + 1))
    return Flow.NEXT if flow is Flow.BACK and not ctx.menus else flow


def _goto(control: CallControl, command: ozml.GoTo, ctx: Context) -> Flow:
    return _fetched(control, command.url, "GoTo", {}, ctx)


def _user_input(control: CallControl, command: ozml.UserInput, ctx: Context) -> Flow:
    inner = Context(ctx.menus + 1, ctx.fetches)
    while True:
        control.flush_keys()
        if command.initial:
            with control.barge_in():
                flow = run_block(control, command.initial, ctx, until_key=True)
            if flow is Flow.HANG_UP:
                return flow
        entered, how = _collect(control, command)
        if how == "ended":
            return Flow.HANG_UP
        if how == "back":
            return Flow.BACK if ctx.menus else Flow.NEXT
        if entered:
            chosen = next((e for e in command.inputs if e.keys == entered), None)
            if chosen is not None:
                flow = run_block(control, chosen.commands, inner)
                if flow is Flow.BACK:
                    continue
                return flow
            if command.forward_url and len(entered) >= command.min_digits:
                return _fetched(control, command.forward_url, "DtmfEntered",
                                {"DtmfDigits": entered}, ctx)
            log.info("UserInput: %r matches no entry; the menu again", entered)
            continue
        if not command.repeat:
            return Flow.NEXT


def _collect(control: CallControl, command: ozml.UserInput) -> tuple[str, str]:
    """Keys until the entry is complete: ``(keys, how)``, how being "done",
    "timeout" (nothing pressed), "back" or "ended"."""
    entered = ""
    while len(entered) < command.max_digits:
        key = control.take_key(command.timeout_s or None)
        if key is None:
            if control.ended:
                return entered, "ended"
            return entered, "done" if entered else "timeout"
        if command.back_key and key == command.back_key and not entered:
            return "", "back"
        if command.finish_key and key == command.finish_key:
            return entered, "done"
        entered += key
        longer = any(e.keys.startswith(entered) and e.keys != entered for e in command.inputs)
        if any(e.keys == entered for e in command.inputs) and not longer:
            return entered, "done"
        if command.inputs and not command.forward_url and not longer:
            return entered, "done"  # no entry can match any more: a wrong key, at once
    return entered, "done"


Step = Callable[[CallControl, Any, Context], Flow]
STEPS: dict[type, Step] = {
    ozml.SendDTMF: _send_dtmf,
    ozml.Delay: _delay,
    ozml.Speak: _speak,
    ozml.Hangup: _hangup,
    ozml.Play: _play,
    ozml.BlindTransfer: _blind_transfer,
    ozml.Record: _record,
    ozml.GoTo: _goto,
    ozml.UserInput: _user_input,
    ozml.CannotHere: _cannot,
}


def run_block(control: CallControl, commands: Sequence[ozml.Command],
              ctx: Context = Context(), *, until_key: bool = False) -> Flow:
    """Run ``commands`` in order; HANG_UP as soon as one hangs up or the call
    ends, BACK when a nested menu's back key was pressed. ``until_key``: a
    far-end key stops the block (a menu's prompt, cut short by the caller)."""
    for command in commands:
        if control.ended:
            return Flow.HANG_UP
        if until_key and control.key_waiting:
            return Flow.NEXT
        control.progress()
        flow = STEPS[type(command)](control, command, ctx)
        if flow is not Flow.NEXT:
            return flow
    return Flow.NEXT
