"""The gateway's exceptions: one root, a few sub-roots, leaves that are also builtins.

In the style of gpiozero's ``exc.py``: callers catch ``GatewayError`` for
anything of ours, or the builtin (``ValueError``, ``OSError``) where that is
the natural question.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class KeyStringError(GatewayError, ValueError):
    """A DTMF key string that cannot be sent. ``position`` is 1-based, or 0."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.position = position


class ToneSettingsError(GatewayError, ValueError):
    """Tone timing, level or rate outside what the engine (or Q.24) allows."""


class ConfigError(GatewayError, ValueError):
    """A configuration file or value that cannot be used; the message names the key."""


class LineError(GatewayError):
    """Sub-root for anything that goes wrong on a phone line."""


class LineFault(LineError, OSError):
    """The line's hardware (sound card, chip, modem, relay) failed.

    The API answers these with its own code ``LINE_FAULT`` (see README), puts
    the line on hook and tries the hardware again on the next command.
    """


class LineBusy(LineError):
    """The line cannot take this request now (queue full, no free line)."""


class NotSupported(LineError):
    """The driver cannot do this (e.g. speak on a tone-only transceiver)."""


class CallFailed(LineError):
    """An outbound call did not connect (busy, no dial tone, no answer, no free line).

    ``state`` is the result state the API reports in code 402, e.g. ``Busy``,
    ``NoDialTone``, ``NoAnswer``, ``NoFreeLine``.
    """

    def __init__(self, dialed: str, state: str, detail: str = "") -> None:
        super().__init__(detail or f"call to {dialed!r} failed: {state}")
        self.dialed = dialed
        self.state = state


class CallNotFound(GatewayError, LookupError):
    """No active call has this id (API code 601)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"no active call with id {call_id!r}")
        self.call_id = call_id
