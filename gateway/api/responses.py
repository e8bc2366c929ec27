"""Ozeki's answer: an XML ``<Response>`` with ``Code`` and ``Message``.

The shape is the seed's, byte for byte: the XML declaration, ``<Response>``
with the xsi/xsd namespace declarations, then ``Code``, ``Message``, the
optional ``NotificationName`` and any command-specific elements.
"""

from __future__ import annotations

import enum
import re
from xml.sax.saxutils import escape

# Characters XML 1.0 cannot carry even escaped; a client's CallId may hold them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class Code(enum.IntEnum):
    """Ozeki's status codes, and ours in the 800s for what Ozeki never had."""

    OK = 200
    PARSE_ERROR = 300
    NOT_IMPLEMENTED = 301
    INVALID_PARAMETER = 302
    INAPPROPRIATE = 303
    AUTH_REQUIRED = 304
    AUTH_FAILED = 305
    FORBIDDEN_USER = 306
    FORBIDDEN_ADDRESS = 307
    CALL_CONNECT_FAILED = 402
    CALL_NOT_FOUND = 601
    INTERNAL_ERROR = 800
    LINE_FAULT = 801
    LINE_BUSY = 802


MESSAGES = {
    Code.OK: "Command successfully executed",
    # Ozeki's own spelling of "occurred", kept: clients may match it.
    Code.PARSE_ERROR: "Error occured during parsing message: '{0}'",
    Code.NOT_IMPLEMENTED: "Not implemented command: '{0}'",
    Code.INVALID_PARAMETER: "Missing or invalid parameter '{0}' for command '{1}'",
    Code.INAPPROPRIATE: "Command '{0}' cannot be used here",
    Code.AUTH_REQUIRED: "Authentication required",
    Code.AUTH_FAILED: "Authentication failed, bad username or password",
    Code.FORBIDDEN_USER: "User is not allowed to use API in ACL",
    Code.FORBIDDEN_ADDRESS: "Use API from this address is forbidden",
    Code.CALL_CONNECT_FAILED: "Call connect to '{0}' failed with result state '{1}'",
    Code.CALL_NOT_FOUND: "Call not found with ID '{0}'",
    Code.INTERNAL_ERROR: "Internal error, see the gateway's log",
    Code.LINE_FAULT: "Line '{0}' fault: {1}",
    Code.LINE_BUSY: "Line '{0}' is busy: {1}",
}

HEAD = (
    '<?xml version="1.0"?>\n'
    '<Response xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
)


def message(code: Code, *args: object, detail: str = "") -> str:
    """Ozeki's message pattern for ``code``; ``detail`` follows after ': '."""
    text = MESSAGES[code].format(*args)
    return f"{text}: {detail}" if detail else text


def element(name: str, value: object) -> str:
    text = escape(_NOT_XML.sub("\ufffd", str(value)))
    return f"<{name}>{text}</{name}>"


def render(
    code: Code,
    text: str | None = None,
    *,
    notification: str | None = None,
    extra: str = "",
) -> str:
    """The whole XML body. ``extra`` is already-escaped XML (e.g. ActiveCalls)."""
    parts = [HEAD, f"  {element('Code', int(code))}\n",
             f"  {element('Message', text if text is not None else MESSAGES[code])}\n"]
    if notification:
        parts.append(f"  {element('NotificationName', notification)}\n")
    if extra:
        parts.append(extra)
    parts.append("</Response>\n")
    return "".join(parts)
