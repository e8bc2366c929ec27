"""Ozeki's answer: an XML ``<Response>`` with ``Code`` and ``Message``.

The shape is the seed's, byte for byte: the XML declaration, ``<Response>``
with the xsi/xsd namespace declarations, then ``Code``, ``Message``, the
optional ``NotificationName`` and any command-specific elements.
"""

from __future__ import annotations

import re

from gateway.codes import MESSAGES, Code

# Characters XML 1.0 cannot carry even escaped; a client's CallId may hold them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


HEAD = (
    '<?xml version="1.0"?>\n'
    '<Response xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
)


def escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as entities, as ``xml.sax.saxutils.escape`` has
    them (whose import brings ``urllib.request`` and the SAX package along)."""
    return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")


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
