"""OzML: the XML scripts a notification's answer runs on a call.

``<Response>`` holds commands run in order. This gateway runs ``SendDTMF``
(``Party``, ``Keys``, and our ``Duration``/``Gap`` in ms), ``Delay`` (seconds
as the element's text), ``Speak`` (text, ``Party``, ``Language``) and
``Hangup``; a script hangs up when it reaches its end, as Ozeki's do.

Documents are parsed with defusedxml: entity expansion, external entities
and DTDs are refused, which the API answers with code 300.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from gateway.codes import Code
from gateway.errors import OzmlError
from gateway.keys import parse_keys
from gateway.lines.base import Party
from gateway.tones import Timing, TonePlan

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_COMMANDS = 256
MAX_DELAY_S = 600.0


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


Command = SendDTMF | Delay | Speak | Hangup


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


def parse(document: str | bytes, timing: Timing | None = None) -> tuple[Command, ...]:
    """Parse and check a whole document before any of it runs.

    Raises :class:`OzmlError` with code 300 (not XML, or unsafe XML), 301 (a
    command this gateway does not run) or 302 (a bad attribute).
    """
    timing = timing or Timing()
    if isinstance(document, str):
        document = document.encode("utf-8")
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
    if len(root) > MAX_COMMANDS:
        raise OzmlError(Code.PARSE_ERROR, f"more than {MAX_COMMANDS} commands")
    commands: list[Command] = []
    for element in root:
        tag = element.tag.lower()
        if tag == "senddtmf":
            commands.append(_send_dtmf(element, timing))
        elif tag == "delay":
            commands.append(_delay(element))
        elif tag == "speak":
            language = _attr(element, "Language")
            commands.append(Speak((element.text or "").strip(), _party(element, "Speak"),
                                  language.strip() if language else None))
        elif tag == "hangup":
            commands.append(Hangup())
        else:
            raise OzmlError(Code.NOT_IMPLEMENTED, element.tag, command=element.tag)
    return tuple(commands)


#: Speech counted at this rate when a script's line time is added up: slower
#: than espeak-ng speaks at its default rate, so the sum is an upper bound.
SPEECH_CHARS_PER_S = 10.0


def line_seconds(commands: tuple[Command, ...]) -> float:
    """How long ``commands`` hold the line at most: keys and their gaps,
    delays, and speech at :data:`SPEECH_CHARS_PER_S`."""
    total = 0.0
    for command in commands:
        if isinstance(command, SendDTMF):
            total += command.plan.seconds
        elif isinstance(command, Delay):
            total += command.seconds
        elif isinstance(command, Speak):
            total += len(command.text) / SPEECH_CHARS_PER_S
    return total
