"""The notification transport: the URL check, the address policy, one name
lookup per hop, redirects, proxies, TLS and the failure messages.

The servers here are raw sockets on addresses of 127.0.0.0/8 (Linux answers
on all of them): one the policy opens stands for an integrator on the LAN,
127.0.0.1 for the gateway's own machine. Expected values are typed in; the
machine's own addresses are judged against ``ip -j addr``, not against the
gateway's reading of /proc.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import notify
from gateway.config import ConfigError, from_mapping
from gateway.errors import NotifyError
from gateway.notify import Policy, check_url, redacted_url

FIELDS = {"NotificationName": "CallConnected", "CallId": "abc123"}
INTEGRATOR = "127.0.0.2"  # the one address the tests' policies open
OPEN = Policy(["127.0.0.2/32"])

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Service:
    """A TCP service on ``host`` that records the head of every request and
    answers each with ``reply`` (bytes, or a function of the head)."""

    def __init__(self, host: str = "127.0.0.1",
                 reply: bytes | Callable[[bytes], bytes] = NO_CONTENT, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if host == "::":  # dual stack: v4 (as ::ffff:a.b.c.d) and v6 alike
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind((host, port))
        self.sock.listen(32)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        self.reply = reply
        self.heads: list[bytes] = []
        self.connections = 0
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._changed:
                self.connections += 1
                self._changed.notify_all()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                head = read_request(conn)
                with self._changed:
                    self.heads.append(head)
                    self._changed.notify_all()
                conn.sendall(self.reply(head) if callable(self.reply) else self.reply)
            except OSError:
                pass

    def header(self, index: int, name: str) -> str:
        for line in self.heads[index].decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return ""

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.heads) >= count, timeout):
                raise AssertionError(f"{len(self.heads)} requests, not {count}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    """A whole request, its body too (closing on an unread body would reset
    the connection before the client reads the answer)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n"


def redirect_to(location: str) -> bytes:
    return (f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n").encode()


@pytest.fixture
def services() -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(host: str = INTEGRATOR, reply: bytes | Callable[[bytes], bytes] = NO_CONTENT,
             port: int = 0) -> Service:
        made.append(Service(host, reply, port))
        return made[-1]

    yield make
    for service in made:
        service.close()


def post_error(url: str, policy: Policy = OPEN, timeout: float = 10.0) -> str:
    with pytest.raises(NotifyError) as caught:
        notify.post(url, FIELDS, timeout, policy)
    return str(caught.value)


# -- the URL check --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        # The case: CR LF and a copy of a log line after it.
        ("http://10.0.0.5/x\r\n2026-01-01 12:00:00,000 INFO gateway.api.commands: forged",
         "character U+000D at position 18"),
        ("http://10.0.0.5/x\n", "character U+000A at position 18"),
        ("http://10.0.0.5/a b", "character U+0020 at position 18"),
        (" http://10.0.0.5/", "character U+0020 at position 1"),
        ("http://10.0.0.5/\t", "character U+0009 at position 17"),
        ("http://10.0.0.5/a\x00", "character U+0000 at position 18"),
        ("http://10.0.0.5/\x7f", "character U+007F at position 17"),
        ("http://10.0.0.5/\u00a0", "character U+00A0 at position 17"),
        ("http://10.0.0.5/\u2028x", "character U+2028 at position 17"),
        ("http://b\u00fccher.example/", "character U+00FC at position 9"),
        ("ftp://10.0.0.5/", "not an http:// or https:// URL"),
        ("file:///etc/passwd", "not an http:// or https:// URL"),
        ("http:///x", "not an http:// or https:// URL"),
        ("http://:80/x", "the URL has no host"),
        ("http://10.0.0.5:99999/", "Port out of range"),
    ],
)
def test_the_url_check_refuses(url: str, refused: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_url(url)
    assert refused in str(caught.value)
    # The message never repeats the URL (it may carry a secret, or a forged line).
    assert "10.0.0.5" not in str(caught.value) and "forged" not in str(caught.value)


@pytest.mark.parametrize("url", [
    "http://10.0.0.5/x", "https://hooks.example.com:8443/a/b?token=x%20y#frag",
    "http://user:p%40ss@10.0.0.5/", "http://[fd00::5]:8080/", "http://LOCALHOST/",
])
def test_the_url_check_takes_ordinary_urls(url: str) -> None:
    assert check_url(url) == url


def test_the_url_check_applies_the_policy_to_an_address_and_leaves_a_name() -> None:
    with pytest.raises(ValueError, match=r"refused by the notification policy \(a loopback"):
        check_url("http://127.0.0.1:22/", Policy())
    with pytest.raises(ValueError, match=r"\(a link-local address\)"):
        check_url("http://[fe80::1]/", Policy())
    # A name is checked when it is resolved, at each post.
    assert check_url("http://localhost:22/", Policy()) == "http://localhost:22/"
    assert check_url("http://127.0.0.1:22/", Policy(["127.0.0.1/32"]))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://hook:secret@10.0.0.5:8080/notify?api_key=k&token=t#f",
         "http://10.0.0.5:8080/notify"),
        ("https://hooks.example.com/a/b?sig=s", "https://hooks.example.com:443/a/b"),
        ("http://[fd00::5]/x;params?q", "http://[fd00::5]:80/x;params"),
        ("http://10.0.0.5", "http://10.0.0.5:80/"),
        ("http://10.0.0.5/x\r\nforged", "http://10.0.0.5:80/xforged"),
        ("http://10.0.0.5:99999/", "(not a URL)"),
        ("not a url", "(not a URL)"),
    ],
)
def test_a_url_is_shown_as_scheme_host_port_and_path(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


# -- the policy -----------------------------------------------------------------------

OWN = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("192.0.2.2/32"),
       ipaddress.ip_network("fd00::2/128")]


@pytest.mark.parametrize(
    ("address", "port", "allow", "expected"),
    [
        ("127.0.0.1", 80, (), "a loopback address"),
        ("127.255.255.254", 80, (), "a loopback address"),
        ("::1", 80, (), "a loopback address"),
        ("::ffff:127.0.0.1", 80, (), "a loopback address"),
        ("169.254.169.254", 80, (), "a link-local address"),
        ("fe80::1%eth0", 80, (), "a link-local address"),
        ("0.0.0.0", 80, (), "an unspecified address"),
        ("0.1.2.3", 80, (), "an unspecified address"),
        ("::", 80, (), "an unspecified address"),
        ("224.0.0.1", 80, (), "a multicast address"),
        ("ff02::1", 80, (), "a multicast address"),
        ("192.0.2.2", 80, (), "an address of this gateway"),
        ("fd00::2", 80, (), "an address of this gateway"),
        # The LAN stays open: integrators live there.
        ("192.0.2.7", 80, (), None),
        ("10.1.2.3", 80, (), None),
        ("fd00::3", 80, (), None),
        ("198.51.100.7", 443, (), None),
        # An allow-list opens what it names, and only that.
        ("127.0.0.1", 8080, ("127.0.0.1/32",), None),
        ("::ffff:127.0.0.1", 8080, ("127.0.0.1/32",), None),
        ("127.0.0.2", 8080, ("127.0.0.1/32",), "a loopback address"),
        ("::1", 8080, ("127.0.0.1/32",), "a loopback address"),
        ("192.0.2.2", 8080, ("192.0.2.0/24",), None),
        # The gateway's own API stays closed whatever is allowed.
        ("127.0.0.1", 9509, ("127.0.0.0/8",), "the gateway's own API"),
        ("127.0.0.9", 9509, ("0.0.0.0/0",), "the gateway's own API"),
        ("::ffff:127.0.0.1", 9509, ("0.0.0.0/0", "::/0"), "the gateway's own API"),
        ("192.0.2.2", 9509, ("192.0.2.0/24",), "the gateway's own API"),
        ("0.0.0.0", 9509, ("0.0.0.0/0",), "the gateway's own API"),
        ("::", 9509, ("::/0",), "the gateway's own API"),
        # Another machine's 9509 is not ours.
        ("192.0.2.7", 9509, (), None),
    ],
)
def test_the_policy(address: str, port: int, allow: tuple[str, ...], expected: str | None
                    ) -> None:
    policy = Policy(allow, listen_host="0.0.0.0", api_port=9509, own_networks=lambda: OWN)
    assert policy.refusal(address, port) == expected


def test_the_port_the_server_got_is_the_own_api_too() -> None:
    policy = Policy(["127.0.0.0/8"], listen_host="127.0.0.1", api_port=0,
                    own_networks=lambda: [])
    assert policy.refusal("127.0.0.1", 41234) is None
    policy.serving_on(41234)
    assert policy.refusal("127.0.0.1", 41234) == "the gateway's own API"
    # The listen address counts as the gateway's own without /proc.
    listening = Policy(listen_host="10.9.8.7", api_port=9509, own_networks=lambda: [])
    assert listening.refusal("10.9.8.7", 22) == "an address of this gateway"
    assert listening.refusal("10.9.8.7", 9509) == "the gateway's own API"


def test_the_policy_takes_addresses_not_names() -> None:
    with pytest.raises(ValueError):
        Policy().refusal("localhost", 80)


FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.168.1.0/24 2 0 2
        |-- 192.168.1.0
           /24 link UNICAST
        |-- 192.168.1.50
           /32 host LOCAL
        |-- 192.168.1.51
           /32 host LOCAL
        |-- 192.168.1.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.8.0.1
        /32 host LOCAL
"""

IF_INET6 = """\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
"""


def test_own_addresses_are_read_from_the_kernels_tables() -> None:
    assert notify.fib_trie_locals(FIB_TRIE) == [
        ipaddress.ip_network(n) for n in
        ("127.0.0.0/8", "127.0.0.1/32", "192.168.1.50/32", "192.168.1.51/32", "10.8.0.1/32")]
    assert notify.if_inet6_addresses(IF_INET6) == [
        ipaddress.ip_network(n) for n in ("fe80::fc:ff:fe00:1/128", "fd00::2/128", "::1/128")]


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2's ip is not installed")
def test_every_address_ip_reports_is_one_of_the_gateways_own() -> None:
    listed = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, check=True,
                                       text=True).stdout)
    addresses = [ipaddress.ip_address(info["local"]) for link in listed
                 for info in link.get("addr_info", [])]
    assert addresses, "ip lists no address"
    own = notify.local_networks()
    assert [a for a in addresses if not any(a in net for net in own)] == []
    policy = Policy()
    for address in addresses:
        assert policy.refusal(str(address), 8080) is not None, address


# -- one lookup, every address checked, the checked one connected ------------------


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Test names for the resolver: each maps to a function of the lookup's
    number (from 1) giving its addresses, or raising. Lookups are counted."""
    table: dict[str, Any] = {"lookups": {}}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in table:
            return real(host, port, *args, **kwargs)
        table["lookups"][host] = n = table["lookups"].get(host, 0) + 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host](n)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def test_a_rebinding_name_is_looked_up_once_and_reaches_the_checked_address(
    names: dict[str, Any], services: Callable[..., Service]
) -> None:
    # The victim listens on loopback at the integrator's port: a second
    # lookup would reach it on the very port the check passed.
    for _ in range(5):
        integrator = services(INTEGRATOR)
        try:
            victim = services("127.0.0.1", port=integrator.port)
            break
        except OSError:  # that port is taken on 127.0.0.1: another pair
            continue
    else:
        raise AssertionError("no port free on both addresses")
    # The first answer passes the check; any later one points at loopback.
    names["rebind.test"] = lambda n: [INTEGRATOR] if n == 1 else ["127.0.0.1"]
    assert notify.post(f"http://rebind.test:{integrator.port}/hook", FIELDS, 10.0, OPEN) == ""
    assert names["lookups"]["rebind.test"] == 1
    assert len(integrator.heads) == 1 and victim.connections == 0
    assert integrator.header(0, "Host") == f"rebind.test:{integrator.port}"


def test_every_address_of_a_name_is_checked(names: dict[str, Any],
                                            services: Callable[..., Service]) -> None:
    integrator = services(INTEGRATOR)
    names["mixed.test"] = lambda n: [INTEGRATOR, "127.0.0.1"]
    message = post_error(f"http://mixed.test:{integrator.port}/")
    assert message == (f"CallConnected to http://mixed.test:{integrator.port}/: refused by the "
                       "notification policy (a loopback address)")
    assert integrator.connections == 0


def test_a_name_lookup_that_hangs_ends_at_the_deadline(names: dict[str, Any]) -> None:
    release = threading.Event()

    def hang(n: int) -> list[str]:
        release.wait(60)
        return [INTEGRATOR]

    names["slow.test"] = hang
    outcome: list[str] = []

    def run() -> None:
        outcome.append(post_error("http://slow.test/", timeout=0.5))

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        # Without the deadline on the lookup this waits until release (60 s).
        worker.join(30)
        assert not worker.is_alive(), "the post waited for the lookup"
    finally:
        release.set()
    assert outcome == ["CallConnected to http://slow.test:80/: timed out after 0.5 s"]
    # 0.5 s of deadline; 10 s allows for a loaded machine and is still far
    # below the 60 s an unbounded wait would take.
    assert time.monotonic() - started < 10


# -- redirects, proxies, TLS ------------------------------------------------------


def test_basic_credentials_stay_with_their_origin(services: Callable[..., Service]) -> None:
    policy = Policy(["127.0.0.0/8"], own_networks=lambda: [])
    elsewhere = services("127.0.0.3")
    same = services(INTEGRATOR)
    hops = services(INTEGRATOR, lambda head: redirect_to(
        f"http://{INTEGRATOR}:{same.port}/landed" if b"/same " in head
        else f"{elsewhere.url}/landed"))
    notify.post(f"http://hook:s3cret@{INTEGRATOR}:{hops.port}/same", FIELDS, 10.0, policy)
    notify.post(f"http://hook:s3cret@{INTEGRATOR}:{hops.port}/other", FIELDS, 10.0, policy)
    expected = "Basic aG9vazpzM2NyZXQ="  # base64 of hook:s3cret
    assert [hops.header(0, "Authorization"), hops.header(1, "Authorization")] == [expected] * 2
    # The port differs: another origin, though the same host. Neither keeps it.
    assert same.header(0, "Authorization") == ""
    assert elsewhere.header(0, "Authorization") == ""


def test_a_proxy_in_the_environment_is_not_used(
    monkeypatch: pytest.MonkeyPatch, services: Callable[..., Service]
) -> None:
    proxy = services("127.0.0.3")
    integrator = services(INTEGRATOR)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    notify.post(f"{integrator.url}/hook", FIELDS, 10.0, OPEN)
    assert (len(integrator.heads), proxy.connections) == (1, 0)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_https_verifies_the_name_and_sends_it_as_sni(
    tmp_path: Path, names: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A CA and a certificate for hook.test alone: the address is not in it.
    ca, key = tmp_path / "ca.pem", tmp_path / "key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp_path / "ca.key",
             "-out", ca, "-days", "2", "-subj", "/CN=test CA")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
             tmp_path / "cert.csr", "-subj", "/CN=hook.test")
    (tmp_path / "ext").write_text("subjectAltName=DNS:hook.test\n")
    _openssl("x509", "-req", "-in", tmp_path / "cert.csr", "-CA", ca, "-CAkey",
             tmp_path / "ca.key", "-CAcreateserial", "-out", tmp_path / "cert.pem", "-days", "2",
             "-extfile", tmp_path / "ext")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", key)
    sni: list[str | None] = []

    def heard(sock: Any, name: str | None, context: Any) -> None:
        sni.append(name)

    server_context.sni_callback = heard
    listener = socket.create_server((INTEGRATOR, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    read_request(tls)
                    tls.sendall(NO_CONTENT)
            except (OSError, ssl.SSLError):
                pass  # the client refused the certificate

    threading.Thread(target=serve, daemon=True).start()
    names["hook.test"] = lambda n: [INTEGRATOR]
    try:
        # The system's trust store does not know this CA: verification is on.
        assert post_error(f"https://hook.test:{port}/x").endswith(
            "TLS failed (handshake or certificate)")
        trusting = ssl.create_default_context(cafile=str(ca))
        monkeypatch.setattr(notify, "_tls_context", lambda: trusting)
        assert notify.post(f"https://hook.test:{port}/x", FIELDS, 10.0, OPEN) == ""
    finally:
        listener.close()
    assert sni == ["hook.test", "hook.test"]


# -- failures say their class, never what came back ---------------------------------


def test_failure_messages_say_the_class_only(
    names: dict[str, Any], services: Callable[..., Service]
) -> None:
    banner = services(reply=b"SSH-2.0-OpenSSH_9.2p1 InternalBanner\r\n")
    error500 = services(reply=b"HTTP/1.1 500 Oops\r\nContent-Length: 25\r\n\r\n"
                              b"Traceback: InternalSecret")
    to_ftp = services(reply=redirect_to("ftp://127.0.0.2/InternalPath"))
    with socket.socket() as unused:
        unused.bind((INTEGRATOR, 0))
        closed_port = unused.getsockname()[1]

    def nowhere(n: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    names["nowhere.test"] = nowhere
    secret = "?api_key=InternalKey"
    cases = {
        f"{banner.url}/x{secret}": f"{banner.url}/x: no valid HTTP answer",
        f"{error500.url}/x{secret}": f"{error500.url}/x: HTTP 500",
        f"{to_ftp.url}/x{secret}": f"{to_ftp.url}/x: HTTP 302, a redirect not followed",
        f"http://u:InternalPw@{INTEGRATOR}:{closed_port}/x{secret}":
            f"http://{INTEGRATOR}:{closed_port}/x: could not connect",
        f"http://nowhere.test/x{secret}": "http://nowhere.test:80/x: could not resolve the host "
                                          "name",
    }
    for url, expected in cases.items():
        message = post_error(url)
        assert message == f"CallConnected to {expected}", url
        assert "Internal" not in message


# -- configuration ----------------------------------------------------------------


def test_the_settings_are_checked_at_load() -> None:
    assert from_mapping({"server": {"notify_allow": ["127.0.0.1/32", "fd00::/8"]}}
                        ).server.notify_allow == ["127.0.0.1/32", "fd00::/8"]
    with pytest.raises(ConfigError, match=r"^server\.notify_allow: 'lan' is not a CIDR"):
        from_mapping({"server": {"notify_allow": ["lan"]}})
    with pytest.raises(ConfigError, match=r"^server\.incoming_url: character U\+000D at pos"):
        from_mapping({"server": {"incoming_url": "http://10.0.0.5/in\r\nx"}})
    with pytest.raises(ConfigError, match=r"^server\.incoming_url: not an http"):
        from_mapping({"server": {"incoming_url": "file:///etc/passwd"}})
