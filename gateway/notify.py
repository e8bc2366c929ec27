"""Outbound notifications: form-urlencoded POSTs to the integrator's URLs.

Only http and https are followed (urllib would also open file: and ftp:
URLs, which a notification URL must never reach). Every request has a
timeout; the answer body is returned for OzML.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gateway import __version__
from gateway.errors import NotifyError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 256 * 1024


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL, else ``ValueError``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises for a port that is not one
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    return url


class _Deadline:
    """Cuts a whole exchange off after ``seconds``.

    urllib's timeout bounds each read only: a server that sends a byte now
    and then, of its headers or its body, would hold the line's worker (or a
    notifier thread) for as long as it likes. At the deadline every socket
    of the exchange is shut down, which ends any read in progress.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def connection(self, base: type[http.client.HTTPConnection]) -> Any:
        """``base`` with every socket it opens (redirects too) watched."""
        deadline = self

        class Watched(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                create = self._create_connection  # type: ignore[has-type]

                def create_watched(*a: Any, **k: Any) -> socket.socket:
                    sock: socket.socket = create(*a, **k)
                    deadline.watch(sock)
                    return sock

                self._create_connection = create_watched

        return Watched

    def opener(self) -> urllib.request.OpenerDirector:
        http_class = self.connection(http.client.HTTPConnection)
        https_class = self.connection(http.client.HTTPSConnection)
        context = ssl.create_default_context()

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(http_class, req)

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(https_class, req, context=context)

        return urllib.request.build_opener(HTTPHandler, HTTPSHandler, _HttpOnlyRedirects)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows a redirect to ftp: too; here it is the 3xx it was."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


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
    name = fields.get("NotificationName")
    with _Deadline(timeout) as deadline:
        try:
            with deadline.opener().open(request, timeout=timeout) as answer:
                body: bytes = answer.read(MAX_ANSWER_BYTES + 1)
                charset = answer.headers.get_content_charset() or "utf-8"
        except urllib.error.HTTPError as exc:
            raise NotifyError(f"{name} to {url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            if deadline.expired:
                raise NotifyError(f"{name} to {url}: timed out after {timeout:g} s") from None
            reason = getattr(exc, "reason", exc)
            raise NotifyError(f"{name} to {url}: {reason}") from None
        if deadline.expired:
            raise NotifyError(f"{name} to {url}: timed out after {timeout:g} s")
    if len(body) > MAX_ANSWER_BYTES:
        raise NotifyError(f"answer from {url} is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        return body.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise NotifyError(f"answer from {url} is not {charset} text") from None
