"""Outbound notifications: form-urlencoded POSTs to the integrator's URLs.

A client allowed to ``Call`` chooses these URLs, so they must not become its
way into the gateway's own machine or past the LAN's defences:

- only absolute http(s) URLs of printable ASCII are taken (urllib would also
  open ``file:`` and ``ftp:``, and quietly drops CR LF, which would then
  forge a log line);
- the host name is resolved once, every address it gives is checked against
  the :class:`Policy`, and the connection goes to the address that was
  checked: a second lookup would let a rebinding name pass the check and
  then reach loopback. https still verifies the certificate and sends SNI
  for the name;
- every redirect hop is checked the same way, and Basic credentials are not
  carried to another origin;
- no proxy from the environment: the proxy would be checked, not the target;
- one deadline bounds the whole exchange, the name lookup included;
- errors say what class of failure it was, never what the other end
  answered, and show the URL as :func:`redacted_url` does.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import logging
import socket
import ssl
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.errors import NotifyError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 256 * 1024

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AddrInfo = tuple[Any, ...]

_DEFAULT_PORTS = {"http": 80, "https": 443}


# -- the URL itself -----------------------------------------------------------------


def check_url(url: str, policy: Policy | None = None) -> str:
    """``url`` if it is an absolute http(s) URL of printable ASCII, else
    ``ValueError``. With ``policy``, a host written as an address is checked
    against it at once; a name is checked each time it is resolved."""
    for position, char in enumerate(url, start=1):
        if not "!" <= char <= "~":
            raise ValueError(f"character U+{ord(char):04X} at position {position}: a URL is "
                             "printable ASCII without spaces (percent-encode the rest)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError("not an http:// or https:// URL")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if policy is not None:
        try:
            why = policy.refusal(parts.hostname, port)
        except ValueError:  # a name, not an address
            why = None
        if why is not None:
            raise ValueError(f"refused by the notification policy ({why})")
    return url


def redacted_url(url: str) -> str:
    """``url`` as it may be logged or reported: scheme, host, port and path.
    Credentials, query and fragment are left out: integrators put passwords,
    keys and tokens there."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        host = port = None
    if not host or not port:
        return "(not a URL)"
    if ":" in host:
        host = f"[{host}]"
    # An unchecked URL may still hold a control character: never one in a log line.
    path = urllib.parse.quote(parts.path or "/", safe=string.punctuation)
    return f"{parts.scheme}://{urllib.parse.quote(host, safe='[]:.-_~%')}:{port}{path}"


# -- where a notification may go ------------------------------------------------------

#: "This network" (RFC 1122): never a remote host; Linux takes 0.0.0.0 for itself.
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")

#: Closed unless ``server.notify_allow`` opens them.
CLOSED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what) for net, what in (
        ("127.0.0.0/8", "a loopback address"),
        ("::1/128", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("fe80::/10", "a link-local address"),
        (str(THIS_NETWORK), "an unspecified address"),
        ("::/128", "an unspecified address"),
        ("224.0.0.0/4", "a multicast address"),
        ("ff00::/8", "a multicast address"),
    )
)

FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")


def fib_trie_locals(text: str) -> list[Network]:
    """The networks ``/proc/net/fib_trie`` marks ``host LOCAL``: the kernel's
    own IPv4 addresses (``127.0.0.0/8`` is one such entry)."""
    found: list[Network] = []
    leaf = ""
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["|--"] and len(fields) == 2:
            leaf = fields[1]
        elif len(fields) >= 3 and fields[0].startswith("/") and fields[1:3] == ["host", "LOCAL"]:
            with contextlib.suppress(ValueError):
                found.append(ipaddress.ip_network(f"{leaf}{fields[0]}", strict=False))
    return found


def if_inet6_addresses(text: str) -> list[Network]:
    """The addresses in ``/proc/net/if_inet6`` (32 hex digits each), as /128s."""
    found: list[Network] = []
    for line in text.splitlines():
        fields = line.split()
        with contextlib.suppress(ValueError, IndexError):
            found.append(ipaddress.IPv6Network(int(fields[0], 16)))
    return found


def local_networks() -> list[Network]:
    """This machine's own addresses as the kernel has them now (an address
    comes and goes with DHCP, so they are read at each check). Empty where
    there is no ``/proc/net``."""
    found: list[Network] = []
    for path, parse in ((FIB_TRIE, fib_trie_locals), (IF_INET6, if_inet6_addresses)):
        with contextlib.suppress(OSError):
            found += parse(path.read_text())
    return found


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    return address


class Policy:
    """Which addresses a notification may reach.

    The LAN stays open: integrators live there. Loopback, link-local,
    unspecified and multicast addresses (:data:`CLOSED`) and this machine's
    own addresses are closed unless ``allow`` (networks, CIDR) opens them.
    The gateway's own API, its port on a loopback or own address, is closed
    even then: a URL pointing back at ``/api`` would have the gateway try
    passwords against itself and lock its own address out.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        listen_host: str = "",
        api_port: int = 0,
        own_networks: Callable[[], list[Network]] = local_networks,
    ) -> None:
        self.allow = tuple(ipaddress.ip_network(net, strict=False) for net in allow)
        self._own_networks = own_networks
        self._listen: Address | None = None
        with contextlib.suppress(ValueError):  # a host name: its addresses are own ones
            self._listen = _address(listen_host)
        self._api_ports = {api_port} if api_port else set()

    def serving_on(self, port: int) -> None:
        """The API listens on ``port`` too (the one ``--port 0`` got)."""
        self._api_ports.add(port)

    def refusal(self, host: str, port: int) -> str | None:
        """What ``host`` (an address) is, when the policy closes it to
        ``port``; None when it is open. ``ValueError`` for a name."""
        address = _address(host.partition("%")[0])
        own = address == self._listen or any(address in net for net in self._own_networks())
        this_host = address.is_loopback or address.is_unspecified or address in THIS_NETWORK
        if port in self._api_ports and (own or this_host):
            return "the gateway's own API"
        if any(address in net for net in self.allow):
            return None
        for net, what in CLOSED:
            if address in net:
                return what
        return "an address of this gateway" if own else None


class _Refused(OSError):
    """The policy closes an address; ``why`` says what it is."""

    def __init__(self, why: str) -> None:
        super().__init__(f"refused by the notification policy ({why})")
        self.why = why


_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def _tls_context() -> ssl.SSLContext:
    """The one context every https notification shares (contexts are
    thread-safe): making one loads the system's CA store, some 20-50 ms of
    CPU, which per POST was most of a key's DtmfEntered latency. Made at the
    first https URL, never for http; a CA store updated later counts from
    the next restart."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = ssl.create_default_context()
        return _tls


# -- one exchange: its deadline, its connections, its redirects -----------------------


class _Exchange:
    """One POST and its redirects, cut off after ``seconds``.

    urllib's timeout bounds each read only: a server that sends a byte now
    and then, of its headers or its body, would hold the line's worker (or a
    notifier thread) for as long as it likes. At the deadline every socket
    of the exchange is shut down, which ends any read in progress; a name
    lookup is waited for only until then.
    """

    def __init__(self, seconds: float, policy: Policy) -> None:
        self.seconds = seconds
        self.policy = policy
        self.expired = False
        self.hops = 0
        self.connected = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._ends = time.monotonic() + seconds
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Exchange:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def _left(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    def _watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        try:
            ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            pass
        else:
            return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                      flags=socket.AI_NUMERICHOST)
        # getaddrinfo cannot be interrupted: it runs on a thread of its own
        # and is waited for only until the deadline.
        answer: list[list[AddrInfo] | OSError] = []
        finished = threading.Event()

        def lookup() -> None:
            try:
                answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as exc:
                answer.append(exc)
            finished.set()

        threading.Thread(target=lookup, name="resolve", daemon=True).start()
        finished.wait(self._left())
        if not answer:
            raise TimeoutError("name lookup")
        if isinstance(answer[0], OSError):
            raise answer[0]
        return answer[0]

    def connect(self, address: tuple[str, int], timeout: Any = None,
                source_address: Any = None) -> socket.socket:
        """http.client's ``_create_connection``: resolve once, check every
        address, connect to a checked one."""
        host, port = address
        self.connected = False
        infos = self._resolve(host, port)
        for info in infos:
            why = self.policy.refusal(info[4][0], port)
            if why is not None:
                raise _Refused(why)
        error: OSError = OSError("no address to connect to")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            self._watch(sock)
            try:
                # A connect in progress ignores shutdown: the deadline bounds it here
                # (never 0, which would make the socket non-blocking).
                sock.settimeout(max(self._left(), 0.01))
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.settimeout(timeout if isinstance(timeout, float | int) else None)
            self.connected = True
            return sock
        raise error

    def opener(self) -> urllib.request.OpenerDirector:
        http_class = self._connection(http.client.HTTPConnection)
        https_class = self._connection(http.client.HTTPSConnection)

        class HTTPHandler(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(http_class, req)

        class HTTPSHandler(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
                return self.do_open(https_class, req, context=_tls_context())

        # Built by hand, not with build_opener: no proxies, no file: or ftp:.
        opener = urllib.request.OpenerDirector()
        for handler in (HTTPHandler(), HTTPSHandler(), _CheckedRedirects(self),
                        urllib.request.HTTPDefaultErrorHandler(),
                        urllib.request.HTTPErrorProcessor(), urllib.request.UnknownHandler()):
            opener.add_handler(handler)
        return opener

    def _connection(self, base: type[http.client.HTTPConnection]) -> Any:
        exchange = self

        class Checked(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._create_connection = exchange.connect

        return Checked

    def failure(self, exc: BaseException) -> str:
        """What class of failure ``exc`` is, for the error message."""
        if self.expired:
            return f"timed out after {self.seconds:g} s"
        if isinstance(exc, urllib.error.HTTPError):
            if 300 <= exc.code < 400:
                return f"HTTP {exc.code}, a redirect not followed"
            return f"HTTP {exc.code}"
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, _Refused):
            at = " at a redirect" if self.hops else ""
            return f"refused by the notification policy{at} ({reason.why})"
        if isinstance(reason, socket.gaierror):
            return "could not resolve the host name"
        if isinstance(reason, TimeoutError):
            return f"timed out after {self.seconds:g} s"
        if isinstance(reason, ssl.SSLError):
            return "TLS failed (handshake or certificate)"
        if not self.connected:
            return "could not connect"
        return "no valid HTTP answer"


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a checked http(s) URL without credentials
    (urllib would follow one to ``ftp:`` too); otherwise it is the 3xx it
    was. The hop's addresses are checked when it connects. Basic
    authentication stays with the origin it was given for."""

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            check_url(newurl)
        except ValueError:
            return None
        if urllib.parse.urlsplit(newurl).username is not None:
            return None
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            if _origin(new.full_url) != _origin(req.full_url):
                new.remove_header("Authorization")
            self._exchange.hops += 1
        return new


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme]


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without ``user:password@``, and the Basic authentication header
    for them."""
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


def _exchange(request: urllib.request.Request, what: str, shown: str, timeout: float,
              policy: Policy | None, max_bytes: int) -> tuple[bytes, str | None]:
    """Send ``request`` where ``policy`` lets it go, within ``timeout`` for
    the whole exchange; the body (at most ``max_bytes``) and its charset."""
    with _Exchange(timeout, policy or Policy()) as exchange:
        try:
            with exchange.opener().open(request, timeout=timeout) as answer:
                body: bytes = answer.read(max_bytes + 1)
                charset = answer.headers.get_content_charset()
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise NotifyError(f"{what} to {shown}: {exchange.failure(exc)}") from None
        if exchange.expired:
            raise NotifyError(f"{what} to {shown}: timed out after {timeout:g} s")
    if len(body) > max_bytes:
        raise NotifyError(f"{what} to {shown}: the answer is larger than {max_bytes} bytes")
    return body, charset


def _request(url: str, what: str, data: bytes | None,
             headers: dict[str, str]) -> tuple[urllib.request.Request, str]:
    try:
        check_url(url)
    except ValueError as exc:
        raise NotifyError(f"{what} to {redacted_url(url)}: {exc}") from None
    shown = redacted_url(url)
    url, auth = _split_credentials(url)
    return urllib.request.Request(url, data=data, headers={
        "User-Agent": f"dtmf-gateway/{__version__}", **headers, **auth}), shown


def post(url: str, fields: dict[str, str], timeout: float, policy: Policy | None = None) -> str:
    """POST ``fields`` to ``url`` where ``policy`` (by default: :class:`Policy`
    with nothing opened) lets it go; the answer body as text. Raises
    NotifyError.

    ``http://user:password@host/...`` is sent as HTTP Basic authentication
    (urllib would otherwise take the credentials for part of the host name).
    """
    name = fields.get("NotificationName", "notification")
    request, shown = _request(url, name, urllib.parse.urlencode(fields).encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    body, charset = _exchange(request, name, shown, timeout, policy, MAX_ANSWER_BYTES)
    try:
        return body.decode(charset or "utf-8")
    except LookupError:
        raise NotifyError(f"{name} to {shown}: the answer is not text: its charset is "
                          "unknown") from None
    except UnicodeDecodeError:
        raise NotifyError(f"{name} to {shown}: the answer is not text: invalid bytes for "
                          "its charset") from None


def get(url: str, timeout: float, max_bytes: int, policy: Policy | None = None,
        what: str = "GET") -> bytes:
    """GET ``url`` (an audio file to play) under the same rules as a
    notification: the policy on every hop, one deadline for the whole
    exchange, at most ``max_bytes``. Raises NotifyError."""
    request, shown = _request(url, what, None, {})
    return _exchange(request, what, shown, timeout, policy, max_bytes)[0]
