"""The gateway's exceptions: one root, a few sub-roots, leaves that are also builtins.

In the style of gpiozero's ``exc.py``: callers catch ``GatewayError`` for
anything of ours, or the builtin (``ValueError``, ``OSError``) where that is
the natural question. :func:`describe` is the one place an exception becomes
an API code and message, for the HTTP answer, an ``Error`` notification and
a script's report alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codes import Code, message


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


# -- input -----------------------------------------------------------------------


class KeyStringError(GatewayError, ValueError):
    """A DTMF key string that cannot be sent. ``position`` is 1-based, or 0."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.position = position


class ToneSettingsError(GatewayError, ValueError):
    """Tone timing, level or rate outside what the engine (or Q.24) allows."""


class DetectError(GatewayError, ValueError):
    """Audio the detectors cannot take: an unknown country, a bad rate, an unreadable WAV file."""


class ConfigError(GatewayError, ValueError):
    """A configuration file or value that cannot be used; the message names the key."""


class ApiError(GatewayError):
    """A request refused with ``code``; ``text`` is the whole Message (None: the
    code's own). Raised by the API's parameter checks and access control."""

    def __init__(self, code: Code, text: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def invalid(parameter: str, command: str, detail: str = "") -> ApiError:
    """Code 302 naming ``parameter`` of ``command``."""
    return ApiError(Code.INVALID_PARAMETER,
                    message(Code.INVALID_PARAMETER, parameter, command, detail=detail))


class MediaError(GatewayError, ValueError):
    """An audio file that cannot be played (code 302 for its ``AudioFile``):
    missing, outside the media folder, not fetched, or not audio."""


class OzmlError(GatewayError, ValueError):
    """An OzML document that cannot run; ``code`` is the API code that answers it
    (300 not XML or unsafe, 301 a command not run here, 302 a bad attribute)."""

    def __init__(self, code: Code, detail: str, parameter: str = "", command: str = "") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.parameter = parameter
        self.command = command


# -- calls -----------------------------------------------------------------------


class CallNotFound(GatewayError, LookupError):
    """No active call has this id (API code 601)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"no active call with id {call_id!r}")
        self.call_id = call_id


class CallEnded(CallNotFound):
    """The call ended (hung up, timed out, its far end left) while a command
    of it was waiting or running; ``reason`` says how it ended."""

    def __init__(self, call_id: str, reason: str) -> None:
        super().__init__(call_id)
        self.reason = reason


class AmbiguousCall(GatewayError, ValueError):
    """``CallId`` was left out and there is not exactly one active call (302)."""

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(detail)
        self.command = command


class Inappropriate(GatewayError):
    """The command cannot be used on this call now (API code 303)."""

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(detail)
        self.command = command


class NotifyError(GatewayError, OSError):
    """A notification could not be delivered, or its answer was unusable."""


# -- lines -----------------------------------------------------------------------


class LineError(GatewayError):
    """Sub-root for anything that goes wrong on a phone line.

    ``line`` is the line's name, set by the call layer where it knows it (a
    driver need not repeat its own name in the message).
    """

    line: str | None = None


class LineFault(LineError, OSError):
    """The line's hardware (sound card, chip, modem, relay) failed.

    The API answers these with its own code ``LINE_FAULT`` (see README), puts
    the line on hook and tries the hardware again on the next command.
    """


class LineInterrupted(LineError):
    """The line was put on hook (a hang-up, the gateway stopping) while a
    command was using it: the command stopped part-way. Not a fault of the
    hardware."""


class LineBusy(LineError):
    """The line cannot take this request now (queue full, stopping)."""


class NotSupported(LineError):
    """The driver cannot do this (e.g. speak on a tone-only transceiver).

    ``command`` is the API command that asked, where the caller knows it.
    """

    command: str = ""


class CallFailed(LineError):
    """An outbound call did not connect (busy, no dial tone, no answer, no free line).

    ``state`` is the result state the API reports in code 402, e.g. ``Busy``,
    ``NoDialTone``, ``NoAnswer``, ``NoFreeLine``.
    """

    def __init__(self, dialed: str, state: str, detail: str = "", *, cause: str = "") -> None:
        super().__init__(detail or cause or f"call to {dialed!r} failed: {state}")
        self.dialed = dialed
        self.state = state
        #: Said to the client after Ozeki's pattern (``detail`` is for the log).
        self.cause = cause


# -- the one mapping ---------------------------------------------------------------


@dataclass(frozen=True)
class Described:
    """What an exception comes to in the API's terms."""

    code: Code
    text: str
    line: str = "-"
    call: str = "-"


def describe(exc: BaseException) -> Described:
    """The API code and message for ``exc``; 800 with a bare message for a bug
    (whose details belong in the log, never to a client)."""
    if isinstance(exc, ApiError):
        return Described(exc.code, exc.text if exc.text is not None else message(exc.code))
    if isinstance(exc, CallEnded):
        return Described(Code.CALL_NOT_FOUND, message(
            Code.CALL_NOT_FOUND, exc.call_id, detail=f"the call ended ({exc.reason}) before "
            "its command was done"), call=exc.call_id)
    if isinstance(exc, CallNotFound):
        return Described(Code.CALL_NOT_FOUND, message(Code.CALL_NOT_FOUND, exc.call_id),
                         call=exc.call_id)
    if isinstance(exc, AmbiguousCall):
        return Described(Code.INVALID_PARAMETER, message(
            Code.INVALID_PARAMETER, "CallId", exc.command, detail=str(exc)))
    if isinstance(exc, Inappropriate | NotSupported):
        line = getattr(exc, "line", None) or "-"
        return Described(Code.INAPPROPRIATE, message(
            Code.INAPPROPRIATE, exc.command or "-", detail=str(exc)), line=line)
    if isinstance(exc, OzmlError):
        if exc.code == Code.NOT_IMPLEMENTED:
            return Described(exc.code, message(exc.code, exc.detail))
        if exc.code == Code.INVALID_PARAMETER:
            return Described(exc.code, message(exc.code, exc.parameter, exc.command,
                                               detail=exc.detail))
        return Described(Code.PARSE_ERROR, message(Code.PARSE_ERROR, exc.detail))
    if isinstance(exc, MediaError):
        return Described(Code.INVALID_PARAMETER, message(
            Code.INVALID_PARAMETER, "AudioFile", "Play", detail=str(exc)))
    if isinstance(exc, CallFailed):
        # A driver's detail is for the log; a cause is what the client may know.
        return Described(Code.CALL_CONNECT_FAILED, message(
            Code.CALL_CONNECT_FAILED, exc.dialed, exc.state, detail=exc.cause),
            line=exc.line or "-")
    if isinstance(exc, LineFault):
        line = exc.line or "-"
        return Described(Code.LINE_FAULT, message(Code.LINE_FAULT, line, exc), line=line)
    if isinstance(exc, LineBusy):
        line = exc.line or "-"
        return Described(Code.LINE_BUSY, message(Code.LINE_BUSY, line, exc), line=line)
    return Described(Code.INTERNAL_ERROR, message(Code.INTERNAL_ERROR))
