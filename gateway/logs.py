"""Logging for ``serve``: one handler, secrets scrubbed, lines that cannot be forged,
journald-aware.

Every value a client sent that reaches a log line goes through :func:`escape`
first: one token, control characters, spaces, ``=`` and backslashes escaped,
cut to 64 characters. So a CallId cannot end the line it is on and start a
forged one, nor add a forged ``code=200`` to it.

Under that, every record, from our loggers, waitress, Flask or an uncaught
exception in any thread, goes through one handler whose :class:`Redactor`
replaces passwords, ``Authorization`` values, bare Basic/Bearer tokens and
the password part of URLs with ``[redacted]``, in the message and the
traceback alike, and escapes every control character left in a message
(a library quoting a request path, an exception quoting a URL). A record's
message is therefore one line; the further lines of a traceback are
indented, so a line that starts at the margin is always the start of a
record.

Under systemd, stdout is the journal (``JOURNAL_STREAM`` names it): lines
carry a ``<N>`` syslog priority prefix instead of a timestamp, since the
journal stamps each line itself and ``journalctl -p warning`` then works.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from types import TracebackType
from typing import IO, Any

REDACTED = "[redacted]"

# A credential's value ends at a separator of the syntax it appears in:
# & ; , in query strings and forms, quotes in reprs, whitespace in text.
_VALUE = r"[^&;,\s'\"<>}]+"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # password%3Dx%26 (a URL inside a URL), Password\x3dx (a field escaped for
    # the log line): the value ends at the next escape
    (re.compile(r"(?i)((?:password|passwd|pwd)(?:%3D|\\x3d))[^&%\\;,\s'\"<>}]+"),
     r"\1" + REDACTED),
    # Password=x, 'password': 'x', "passwd": "x"
    (re.compile(r"(?i)((?:password|passwd|pwd)['\"]?\s*[:=]\s*['\"]?)" + _VALUE),
     r"\1" + REDACTED),
    # Authorization: Basic abc=, 'HTTP_AUTHORIZATION': 'Basic abc=' (the whole value)
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n]+"), r"\1" + REDACTED),
    # A bare scheme and token, wherever it turns up
    (re.compile(r"(?i)\b(Basic|Bearer|Digest)\s+[A-Za-z0-9+/=._~-]{6,}"), r"\1 " + REDACTED),
    # http://user:secret@host
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@"), r"\1:" + REDACTED + "@"),
)

#: What every pattern above needs somewhere in the text: a message without
#: any of these (the API's one line per command is one) skips all five.
_TRIGGER = re.compile(r"(?i)passw|pwd|authorization|basic|bearer|digest|://")

#: logging level -> syslog priority (sd-daemon(3) prefixes).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


#: Longer client values are cut: a made-up CallId can be 64 kB long.
FIELD_CHARS = 64
#: What a traceback's further lines start with, so that none passes for a record.
CONTINUATION = "    "


def escape(value: str, limit: int = FIELD_CHARS) -> str:
    """``value``, as a client sent it, as one token of a log line: control
    characters, spaces, ``=`` and backslashes escaped (Python's ``\\x..``
    notation), at most ``limit`` characters of it followed by ``...``."""
    if (value.isprintable() and " " not in value and "=" not in value and "\\" not in value
            and len(value) <= limit):
        return value
    escaped = value[:limit].encode("unicode_escape").decode("ascii")
    escaped = escaped.replace(" ", "\\x20").replace("=", "\\x3d")
    return escaped + ("..." if len(value) > limit else "")


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (line breaks, other
    controls, separators) escaped: what the handler does to every message."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def _continued(text: str) -> str:
    """A traceback's lines, each made harmless and indented (its line breaks kept)."""
    return "\n".join(CONTINUATION + one_line(line) for line in text.split("\n"))


def redact(text: str) -> str:
    """``text`` with every credential the patterns know replaced."""
    if not _TRIGGER.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Redactor(logging.Filter):
    """Scrubs a record's final message and traceback before any handler formats
    it, and leaves its message one line and its traceback indented."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be shown
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = one_line(redact(message)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _continued(redact(record.exc_text))
        # The traceback is now in exc_text; formatters reuse it.
        record.exc_info = None
        if record.stack_info:
            record.stack_info = _continued(redact(record.stack_info))
        return True


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; each further line of a traceback too."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6 if record.levelno < 30 else 3)}>"
        text = super().format(record)
        return "\n".join(prefix + line for line in text.split("\n"))


def under_journal(stream: IO[str]) -> bool:
    """True when ``stream`` is the journal systemd connected (``JOURNAL_STREAM``)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


def setup(level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Route all logging (and uncaught exceptions) to ``stream`` through the Redactor."""
    stream = stream or sys.stdout
    handler = logging.StreamHandler(stream)
    if under_journal(stream):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redactor())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    _route_uncaught()
    return handler


def _route_uncaught() -> None:
    """Tracebacks Python would print raw to stderr go through logging instead."""
    uncaught = logging.getLogger("gateway.uncaught")

    def excepthook(kind: type[BaseException], value: BaseException,
                   tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        uncaught.critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_excepthook(args: Any) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        uncaught.error("uncaught exception in thread %s", name,
                       exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
