"""Outbound notifications: form-urlencoded POSTs to the integrator's URLs.

Only http and https are followed (urllib would also open file: and ftp:
URLs, which a notification URL must never reach). Every request has a
timeout; the answer body is returned for OzML.
"""

from __future__ import annotations

import base64
import logging
import urllib.error
import urllib.parse
import urllib.request

from gateway import __version__
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 256 * 1024


class NotifyError(GatewayError, OSError):
    """The notification could not be delivered, or its answer was unusable."""


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL, else ``ValueError``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without ``user:password@`` (so errors never show the password),
    and the Basic authentication header for them."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    bare = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return bare, {"Authorization": f"Basic {token}"}


def post(url: str, fields: dict[str, str], timeout: float) -> str:
    """POST ``fields`` to ``url``; the answer body as text. Raises NotifyError.

    ``http://user:password@host/...`` is sent as HTTP Basic authentication
    (urllib would otherwise take the credentials for part of the host name).
    """
    check_url(url)
    url, auth = _split_credentials(url)
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(
        url,
        data=data,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": f"dtmf-gateway/{__version__}",
            **auth,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body: bytes = answer.read(MAX_ANSWER_BYTES + 1)
            charset = answer.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"{fields.get('NotificationName')} to {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"{fields.get('NotificationName')} to {url}: {reason}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise NotifyError(f"answer from {url} is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        return body.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise NotifyError(f"answer from {url} is not {charset} text") from None
