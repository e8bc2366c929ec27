"""OzML: the XML scripts a notification's answer runs on a call.

``<Response>`` holds commands run in order. This gateway runs ``SendDTMF``
(``Party``, ``Keys``, and our ``Duration``/``Gap`` in ms), ``Delay`` (seconds
as the element's text), ``Speak`` (text, ``Party``, ``Language``),
``Hangup``, ``GoTo`` (OzML fetched from a URL, run in place) and
``UserInput`` (keys from the far end: a menu of ``Input`` blocks, or digits
forwarded to a URL as a ``DtmfEntered`` notification); a script hangs up
when it reaches its end, as Ozeki's do. Attribute names are matched without
regard to case, as Ozeki's published scripts write them both ways.

Documents are parsed with defusedxml: entity expansion, external entities
and DTDs are refused, which the API answers with code 300. The whole
document, nested blocks included, is checked before any of it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from gateway.codes import Code
from gateway.errors import OzmlError
from gateway.keys import KEYS, parse_keys
from gateway.lines.base import Party
from gateway.notify import check_url
from gateway.tones import Timing, TonePlan

MAX_DOCUMENT_BYTES = 256 * 1024
#: Commands in one document, those in nested blocks included.
MAX_COMMANDS = 256
#: How deep blocks nest (a UserInput in an Input in a UserInput ...).
MAX_DEPTH = 8
MAX_DELAY_S = 600.0
#: UserInput's bounds: seconds to wait for a key, digits to collect.
MAX_TIMEOUT_S = 600.0
MAX_DIGITS = 64
#: Play: at most this many repeats (a number), and this long in all.
MAX_PLAYS = 100
MAX_PLAY_S = 3600.0


@dataclass(frozen=True)
class SendDTMF:
    plan: TonePlan
    party: Party


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Speak:
    text: str
    party: Party
    language: str | None


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Play:
    """Play ``audio_file`` (a path in the media folder or an http(s) URL)
    ``times`` times (0: again and again), for at most ``timeout_s`` (0: no
    limit but the call's own)."""

    audio_file: str
    party: Party
    times: int = 1
    timeout_s: float = 0.0


@dataclass(frozen=True)
class GoTo:
    """Fetch OzML from ``url`` (with the notification rules) and run it here."""

    url: str


@dataclass(frozen=True)
class Input:
    """An entry of a UserInput menu: ``keys`` pressed run ``commands``."""

    keys: str
    commands: tuple[Command, ...]


@dataclass(frozen=True)
class UserInput:
    """Ozeki's UserInput: ``initial`` commands run while the far end may press
    keys (a key cuts them short: barge-in); then the keys it presses choose
    an ``Input``, or, once ``max_digits`` are in (``finish_key`` or the
    timeout end the entry sooner, with at least ``min_digits``), go to
    ``forward_url`` as a DtmfEntered notification whose OzML answer runs in
    the UserInput's place. ``timeout_s`` (0: no limit) ends the wait for
    each key; ``repeat`` then plays the initial commands again, else the
    script goes on. ``back_key`` in a nested UserInput returns to the menu
    above."""

    initial: tuple[Command, ...]
    inputs: tuple[Input, ...]
    timeout_s: float = 0.0
    repeat: bool = False
    min_digits: int = 1
    max_digits: int = 1
    forward_url: str = ""
    back_key: str = ""
    finish_key: str = ""


#: Ozeki's call-control commands an analog line has no means for, and why:
#: the API answers them 303, and a script reports them to ErrorUrl and goes on.
ANALOG_CANNOT = {
    "Hold": "an analog line has one loop and no hold signalling; the far end would hear "
            "silence, not hold",
    "Unhold": "an analog line cannot hold a call (see Hold)",
    "AttendedTransfer": "an attended transfer needs a second line in the same call and a "
                        "PBX to join them; use BlindTransfer on a PBX extension",
    "Forward": "an analog line cannot forward a call it has not answered; a ringing call "
               "is the exchange's to forward",
}


@dataclass(frozen=True)
class CannotHere:
    """A command of :data:`ANALOG_CANNOT`: reported when reached (303)."""

    command: str


Command = SendDTMF | Delay | Speak | Hangup | Play | GoTo | UserInput | CannotHere


def _bad(detail: str, parameter: str, command: str) -> OzmlError:
    return OzmlError(Code.INVALID_PARAMETER, detail, parameter, command)


def _attr(element: Element, name: str) -> str | None:
    """Attributes are matched case-insensitively, as the API's parameters are."""
    for key, value in element.attrib.items():
        if key.lower() == name.lower():
            return value
    return None


def _party(element: Element, command: str) -> Party:
    text = _attr(element, "Party")
    if text is None:
        return Party.ALL
    try:
        return Party.parse(text)
    except ValueError as exc:
        raise _bad(str(exc), "Party", command) from None


def _ms(element: Element, name: str, default: int, command: str) -> int:
    text = _attr(element, name)
    if text is None:
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise _bad(f"{text!r} is not a whole number of ms", name, command) from None


def _send_dtmf(element: Element, timing: Timing) -> SendDTMF:
    keys = _attr(element, "Keys")
    if keys is None:
        keys = (element.text or "").strip()
    try:
        symbols = parse_keys(keys)
    except ValueError as exc:
        raise _bad(str(exc), "Keys", "SendDTMF") from None
    duration = _ms(element, "Duration", timing.duration_ms, "SendDTMF")
    gap = _ms(element, "Gap", timing.gap_ms, "SendDTMF")
    try:
        plan = TonePlan(symbols, Timing(duration, gap))
    except ValueError as exc:
        raise _bad(str(exc),
                        "Duration" if "duration" in str(exc) else "Gap", "SendDTMF") from None
    return SendDTMF(plan, _party(element, "SendDTMF"))


def _delay(element: Element) -> Delay:
    text = (element.text or "").strip()
    try:
        seconds = float(text)
    except ValueError:
        raise _bad(f"{text!r} is not a number of seconds", "Delay", "Delay") from None
    if not 0 <= seconds <= MAX_DELAY_S:
        raise _bad(f"{seconds:g} s is outside 0 to {MAX_DELAY_S:g} s", "Delay", "Delay")
    return Delay(seconds)


def _url(text: str | None, parameter: str, command: str) -> str:
    url = (text or "").strip()
    try:
        return check_url(url)
    except ValueError as exc:
        raise _bad(str(exc), parameter, command) from None


def _bool(element: Element, name: str, command: str) -> bool:
    text = (_attr(element, name) or "false").strip().lower()
    if text not in ("true", "false"):
        raise _bad(f"{text!r} is not true or false", name, command)
    return text == "true"


def _number(element: Element, name: str, command: str, default: float, high: float,
            whole: bool = False) -> float:
    text = _attr(element, name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip()) if whole else float(text.strip())
    except ValueError:
        raise _bad(f"{text!r} is not a {'whole ' if whole else ''}number", name,
                   command) from None
    if not 0 <= value <= high:
        raise _bad(f"{value:g} is outside 0 to {high:g}", name, command)
    return value


def _key(element: Element, name: str, command: str) -> str:
    text = (_attr(element, name) or "").strip().upper()
    if text and (len(text) != 1 or text not in KEYS):
        raise _bad(f"{text!r} is not one DTMF key", name, command)
    return text


def play(audio_file: str | None, party: str | None, repeat: str | None,
         timeout: str | None, command: str = "Play") -> Play:
    """A Play from its parameters (the API's and OzML's alike)."""
    source = (audio_file or "").strip()
    if not source:
        raise _bad("an AudioFile is needed", "AudioFile", command)
    try:
        chosen = Party.parse(party) if party and party.strip() else Party.ALL
    except ValueError as exc:
        raise _bad(str(exc), "Party", command) from None
    text = (repeat or "false").strip().lower()
    if text in ("true", "false"):
        times = 0 if text == "true" else 1
    else:
        try:
            times = int(text)
        except ValueError:
            raise _bad(f"{text!r} is not true, false or a number of times", "Repeat",
                       command) from None
        if not 1 <= times <= MAX_PLAYS:
            raise _bad(f"{times} is outside 1 to {MAX_PLAYS} times", "Repeat", command)
    try:
        seconds = float(timeout) if timeout and timeout.strip() else 0.0
    except ValueError:
        raise _bad(f"{timeout!r} is not a number of seconds", "Timeout", command) from None
    if not 0 <= seconds <= MAX_PLAY_S:
        raise _bad(f"{seconds:g} s is outside 0 to {MAX_PLAY_S:g} s", "Timeout", command)
    if times == 0 and seconds == 0:
        seconds = MAX_PLAY_S
    return Play(source, chosen, times, seconds)


def _child(element: Element, name: str) -> Element | None:
    found = [child for child in element if child.tag.lower() == name]
    return found[0] if found else None


class _Parser:
    """One document's commands, counted across its nested blocks."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.count = 0

    def block(self, parent: Element, depth: int) -> tuple[Command, ...]:
        if depth > MAX_DEPTH:
            raise OzmlError(Code.PARSE_ERROR, f"blocks nested deeper than {MAX_DEPTH}")
        commands = []
        for element in parent:
            self.count += 1
            if self.count > MAX_COMMANDS:
                raise OzmlError(Code.PARSE_ERROR, f"more than {MAX_COMMANDS} commands")
            commands.append(self.command(element, depth))
        return tuple(commands)

    def command(self, element: Element, depth: int) -> Command:
        tag = element.tag.lower()
        if tag == "senddtmf":
            return _send_dtmf(element, self.timing)
        if tag == "delay":
            return _delay(element)
        if tag == "speak":
            language = _attr(element, "Language")
            return Speak((element.text or "").strip(), _party(element, "Speak"),
                         language.strip() if language else None)
        if tag == "hangup":
            return Hangup()
        if tag == "play":
            return play(_attr(element, "AudioFile") or element.text, _attr(element, "Party"),
                        _attr(element, "Repeat"), _attr(element, "Timeout"))
        if tag == "goto":
            return GoTo(_url(_attr(element, "Url") or element.text, "GoTo", "GoTo"))
        if tag == "userinput":
            return self.user_input(element, depth)
        named = next((name for name in ANALOG_CANNOT if name.lower() == tag), None)
        if named is not None:
            return CannotHere(named)
        raise OzmlError(Code.NOT_IMPLEMENTED, element.tag, command=element.tag)

    def user_input(self, element: Element, depth: int) -> UserInput:
        command = "UserInput"
        initial = _child(element, "initialcommands")
        inputs = _child(element, "inputs")
        for child in element:
            if child.tag.lower() not in ("initialcommands", "inputs"):
                raise _bad(f"<{child.tag}> is neither InitialCommands nor Inputs", child.tag,
                           command)
        entries = []
        for entry in inputs if inputs is not None else ():
            if entry.tag.lower() != "input":
                raise _bad(f"<{entry.tag}> in Inputs is not an Input", entry.tag, command)
            keys = (_attr(entry, "Key") or "").strip().upper()
            if not keys or any(k not in KEYS for k in keys):
                raise _bad(f"{keys!r} is not a key or keys", "Key", "Input")
            entries.append(Input(keys, self.block(entry, depth + 1)))
        forward = _attr(element, "ForwardToUrl") or _attr(element, "EnteredUrl")
        digits = int(_number(element, "Digits", command, 1, MAX_DIGITS, whole=True))
        longest = max((len(e.keys) for e in entries), default=1)
        max_digits = int(_number(element, "MaxDigits", command, max(digits, longest),
                                 MAX_DIGITS, whole=True))
        min_digits = int(_number(element, "MinDigits", command, min(digits, max_digits),
                                 MAX_DIGITS, whole=True))
        if not 1 <= min_digits <= max_digits:
            raise _bad(f"MinDigits {min_digits} and MaxDigits {max_digits} do not make a range",
                       "MinDigits", command)
        return UserInput(
            initial=self.block(initial, depth + 1) if initial is not None else (),
            inputs=tuple(entries),
            timeout_s=_number(element, "Timeout", command, 0.0, MAX_TIMEOUT_S),
            repeat=_bool(element, "Repeat", command),
            min_digits=min_digits, max_digits=max_digits,
            forward_url=_url(forward, "ForwardToUrl", command) if forward else "",
            back_key=_key(element, "BackKey", command),
            finish_key=_key(element, "FinishKey", command),
        )


def parse(document: str | bytes, timing: Timing | None = None) -> tuple[Command, ...]:
    """Parse and check a whole document before any of it runs.

    Raises :class:`OzmlError` with code 300 (not XML, or unsafe XML, or too
    big), 301 (a command this gateway does not run) or 302 (a bad attribute).
    """
    if isinstance(document, str):
        document = document.encode("utf-8")
    # Scripts that print a blank line before "<?xml" (Ozeki's own PHP examples
    # do) are what integrators run: the declaration may follow white space.
    document = document.lstrip(b" \t\r\n")
    if len(document) > MAX_DOCUMENT_BYTES:
        raise OzmlError(Code.PARSE_ERROR, f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        root = SafeET.fromstring(document, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise OzmlError(Code.PARSE_ERROR, f"unsafe XML refused ({type(exc).__name__})") from None
    except SafeET.ParseError as exc:
        raise OzmlError(Code.PARSE_ERROR, str(exc)) from None
    if root.tag.lower() != "response":
        raise OzmlError(Code.PARSE_ERROR, f"the root element is <{root.tag}>, not <Response>")
    return _Parser(timing or Timing()).block(root, 0)


#: Speech counted at this rate when a script's line time is added up: slower
#: than espeak-ng speaks at its default rate, so the sum is an upper bound.
SPEECH_CHARS_PER_S = 10.0


def line_seconds(commands: tuple[Command, ...]) -> float:
    """How long ``commands`` hold the line at most: keys and their gaps,
    delays, speech at :data:`SPEECH_CHARS_PER_S`, a Play's timeout (a file's
    length is known only when it is fetched). A UserInput counts its
    initial commands once, its wait for every key, and its longest entry (a
    menu that repeats until the caller chooses is bounded by the call's own
    maximum length instead); a GoTo's document is checked when fetched."""
    total = 0.0
    for command in commands:
        if isinstance(command, SendDTMF):
            total += command.plan.seconds
        elif isinstance(command, Delay):
            total += command.seconds
        elif isinstance(command, Speak):
            total += len(command.text) / SPEECH_CHARS_PER_S
        elif isinstance(command, Play):
            total += command.timeout_s
        elif isinstance(command, UserInput):
            total += line_seconds(command.initial)
            total += command.timeout_s * command.max_digits
            total += max((line_seconds(e.commands) for e in command.inputs), default=0.0)
    return total
