"""Issue 13, notification URLs, against the real server process: a client
allowed to ``Call`` tries to turn ``Url``/``ErrorUrl``/``FinishedUrl`` against
the gateway's own machine, its own API, and the secrets in URLs.

The integrator (Receiver, and the services of test_notify) listens on
127.0.0.2, the one address the servers' policy opens; the "internal
service" listens on every address of this machine and counts connections,
so any probe that got through shows, whatever it was answered.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.live import USER, Answer, LiveServer
from tests.support import Receiver
from tests.test_notify import Service, redirect_to

INTEGRATOR = "127.0.0.2"

CONFIG = """
[server]
notify_allow = [{allow}]
notify_timeout_s = 5.0
[auth]
lockout_failures = 2
lockout_seconds = 300.0
""" + "".join(f"""
[[line]]
name = "{name}"
driver = "simulated"
time_scale = 0.0
record_dir = "rec"
call_timing = {{ dial_tone_ms = 0, answer_wait_ms = 0 }}
""" for name in ("a", "b"))


def _server(factory: pytest.TempPathFactory, allow: str) -> Iterator[LiveServer]:
    server = LiveServer(factory.mktemp("notify"), CONFIG.replace("{allow}", allow))
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.output


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Only the integrator's address opened."""
    yield from _server(tmp_path_factory, f'"{INTEGRATOR}/32"')


@pytest.fixture(scope="module")
def open_loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """All of loopback opened, as an integrator on the gateway's own machine needs."""
    yield from _server(tmp_path_factory, '"127.0.0.0/8"')


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver(INTEGRATOR)
    r.answers.update({"/error": "", "/finished": ""})
    yield r
    r.close()


@pytest.fixture(scope="module")
def internal() -> Iterator[Service]:
    """An internal service on every address of this machine, answering what
    an admin page would."""
    body = b"<InternalAdmin><Secret>s3</Secret></InternalAdmin>"
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: "
             + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        service = Service("::", reply)
    except OSError:  # no IPv6 here
        service = Service("0.0.0.0", reply)
    yield service
    service.close()


@pytest.fixture
def services() -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(reply: bytes) -> Service:
        made.append(Service(INTEGRATOR, reply))
        return made[-1]

    yield make
    for service in made:
        service.close()


def notification(receiver: Receiver, name: str, call_id: str, timeout: float = 30.0
                 ) -> dict[str, str]:
    """The ``name`` notification of call ``call_id`` (waits for it)."""
    deadline = time.monotonic() + timeout
    with receiver.event:
        while True:
            for _, form in receiver.received:
                if form.get("NotificationName") == name and form.get("CallId") == call_id:
                    return form
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name} for {call_id} within {timeout} s")
            receiver.event.wait(left)


def wait_for_output(server: LiveServer, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.output:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the output:\n{server.output[-3000:]}")
        time.sleep(0.05)


def call(server: LiveServer, **urls: str) -> Answer:
    return server.api({"command": "Call", "Dialed": "1", **urls})


def no_calls(server: LiveServer) -> bool:
    return server.api({"command": "ListActiveCalls"}).root.findall("ActiveCalls/Call") == []


def failed_call(server: LiveServer, receiver: Receiver, url: str) -> str:
    """Call with ``url``; the Error message its failure sent to ErrorUrl."""
    answer = call(server, Url=url, ErrorUrl=f"{receiver.url}/error",
                  FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200, answer
    call_id = answer.text("CallId")
    error = notification(receiver, "Error", call_id)
    notification(receiver, "CallFinished", call_id)
    assert error["Code"] == "402", error
    return error["Message"]


def own_addresses() -> list[str]:
    """This machine's addresses other than loopback and link-local, as
    ``ip`` lists them."""
    if shutil.which("ip") is None:
        return []
    listed = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, check=True,
                                       text=True).stdout)
    found = []
    for link in listed:
        for info in link.get("addr_info", []):
            address = ipaddress.ip_address(info["local"])
            if not (address.is_loopback or address.is_link_local):
                found.append(f"[{address}]" if address.version == 6 else str(address))
    return found


# -- addresses the policy closes ---------------------------------------------------

CLOSED_LITERALS = [
    ("127.0.0.1", "a loopback address"),
    ("127.0.0.53", "a loopback address"),
    ("[::1]", "a loopback address"),
    ("[::ffff:127.0.0.1]", "a loopback address"),
    ("0.0.0.0", "an unspecified address"),
    ("[::]", "an unspecified address"),
    ("169.254.169.254", "a link-local address"),
    ("[fe80::1]", "a link-local address"),
    ("224.0.0.1", "a multicast address"),
    ("[ff02::1]", "a multicast address"),
]


@pytest.mark.parametrize("parameter", ["Url", "ErrorUrl", "FinishedUrl"])
def test_a_closed_address_is_refused_at_the_call(
    gateway: LiveServer, internal: Service, parameter: str
) -> None:
    before = internal.connections
    own = [(address, "an address of this gateway") for address in own_addresses()]
    for host, what in CLOSED_LITERALS + own:
        answer = call(gateway, **{parameter: f"http://{host}:{internal.port}/probe"})
        assert (answer.code, answer.message) == (
            302, f"Missing or invalid parameter '{parameter}' for command 'Call': "
                 f"refused by the notification policy ({what})"), host
    assert no_calls(gateway)
    assert internal.connections == before


# Names, and the forms of 127.0.0.1 that inet_aton reads but an address
# parser does not: all checked at the address they resolve to.
LOOPBACK_NAMES = ["localhost", "127.1", "0x7f000001", "2130706433", "0177.0.0.1"]


@pytest.mark.parametrize("host", LOOPBACK_NAMES)
def test_a_name_is_checked_at_the_address_it_resolves_to(
    gateway: LiveServer, receiver: Receiver, internal: Service, host: str
) -> None:
    before = internal.connections
    message = failed_call(gateway, receiver, f"http://{host}:{internal.port}/probe?q=1")
    assert message.endswith(f": CallConnected to http://{host}:{internal.port}/probe: "
                            "refused by the notification policy (a loopback address)"), message
    assert internal.connections == before


def test_error_and_finished_urls_are_checked_when_they_are_sent(
    gateway: LiveServer, internal: Service
) -> None:
    before = internal.connections
    probe = f"http://localhost:{internal.port}/probe"
    answer = call(gateway, Url=probe, ErrorUrl=probe, FinishedUrl=probe)
    assert answer.code == 200
    for name in ("CallConnected", "Error", "CallFinished"):
        wait_for_output(gateway, f"{name} to {probe}: refused by the notification policy")
    assert internal.connections == before


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{internal}/internal-path",
    "http://localhost:{internal}/internal-path",
    "http://[::1]:{internal}/internal-path",
    "http://169.254.169.254/internal-path",
    "http://127.0.0.1:{gateway}/api?command=ListActiveCalls",
])
def test_a_redirect_hop_is_checked_like_the_first(
    gateway: LiveServer, receiver: Receiver, internal: Service,
    services: Callable[..., Service], target: str,
) -> None:
    location = target.format(internal=internal.port, gateway=gateway.port)
    redirector = services(redirect_to(location))
    before = internal.connections
    message = failed_call(gateway, receiver, f"{redirector.url}/hook")
    what = "the gateway's own API" if "/api" in location else (
        "a link-local address" if "169.254" in location else "a loopback address")
    assert message.endswith(f": CallConnected to {redirector.url}/hook: refused by the "
                            f"notification policy at a redirect ({what})"), message
    assert "internal-path" not in message
    assert len(redirector.heads) == 1 and internal.connections == before


# -- what came back stays where it came from ----------------------------------------


def test_error_url_hears_the_class_of_failure_not_what_came_back(
    gateway: LiveServer, receiver: Receiver, services: Callable[..., Service]
) -> None:
    banner = services(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    crashed = services(b"HTTP/1.1 500 Internal\r\nContent-Length: 31\r\n\r\n"
                       b"Traceback: /srv/internal/app.py")
    odd = services(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=internal-name\r\n"
                   b"Content-Length: 11\r\n\r\n<Response/>")
    with socket.socket() as unused:
        unused.bind((INTEGRATOR, 0))
        closed = f"http://{INTEGRATOR}:{unused.getsockname()[1]}"
    expected = {
        f"{banner.url}/x": "no valid HTTP answer",
        f"{crashed.url}/x": "HTTP 500",
        f"{odd.url}/x": "the answer is not text: its charset is unknown",
        f"{closed}/x": "could not connect",
    }
    for url, what in expected.items():
        message = failed_call(gateway, receiver, url)
        assert message.endswith(f": CallConnected to {url}: {what}"), message
        for leak in ("OpenSSH", "Debian", "Traceback", "/srv", "internal-name", "refused",
                     "Errno"):
            assert leak not in message, message


@pytest.mark.parametrize("server", ["gateway", "open_loopback"])
def test_urls_at_the_gateways_own_api_cannot_lock_it_out(
    request: pytest.FixtureRequest, receiver: Receiver, server: str
) -> None:
    """Two such Calls used to lock 127.0.0.1 out (``lockout_failures = 2``):
    each POST to ``/api`` was a failed login from the gateway's own address.
    Closed even where all of loopback is opened."""
    live: LiveServer = request.getfixturevalue(server)
    guess = f"/api?command=ListActiveCalls&Username={USER}&Password=wrong-guess"
    for _ in range(3):
        answer = call(live, Url=f"http://127.0.0.1:{live.port}{guess}")
        assert (answer.code, answer.message) == (
            302, "Missing or invalid parameter 'Url' for command 'Call': refused by the "
                 "notification policy (the gateway's own API)")
        message = failed_call(live, receiver, f"http://localhost:{live.port}{guess}")
        assert message.endswith(f": CallConnected to http://localhost:{live.port}/api: "
                                "refused by the notification policy (the gateway's own API)")
    assert live.api({"command": "ListActiveCalls"}).code == 200
    assert " code=305 " not in live.output and "locked out" not in live.output


# -- secrets in URLs and forged log lines ---------------------------------------------


def test_a_url_is_logged_as_scheme_host_port_and_path_only(
    gateway: LiveServer, receiver: Receiver
) -> None:
    base = receiver.url
    secrets = ["Userinfo-Secret-1", "Key-Secret-2", "Token-Secret-3", "Sig-Secret-4",
               "Token-Secret-5", "Key-Secret-6"]
    # Not OzML: the call layer reports where it came from.
    receiver.answers[f"/garbage?api_key={secrets[5]}"] = "<html>oops</html>"
    first = call(gateway,
                 Url=base.replace("://", f"://hook:{secrets[0]}@")
                 + f"/missing?api_key={secrets[1]}&token={secrets[2]}",
                 ErrorUrl=f"{base}/error-gone?sig={secrets[3]}",
                 FinishedUrl=f"{base}/finished-gone?token={secrets[4]}#frag")
    second = call(gateway, Url=f"{base}/garbage?api_key={secrets[5]}",
                  ErrorUrl=f"{base}/error", FinishedUrl=f"{base}/finished")
    assert (first.code, second.code) == (200, 200)
    for line in (f"CallConnected to {base}/missing: HTTP 404",
                 f"Error to {base}/error-gone: HTTP 404",
                 f"CallFinished to {base}/finished-gone: HTTP 404",
                 f"bad OzML from {base}/garbage"):
        wait_for_output(gateway, line)
    sent = [notification(receiver, name, answer.text("CallId"))
            for answer in (first, second) for name in ("Error", "CallFinished")]
    leaks = [(s, text) for s in secrets
             for text in [*gateway.output.splitlines(), *map(str, sent)] if s in text]
    assert leaks == []


def test_forged_log_lines_and_whitespace_in_a_url_are_refused(
    gateway: LiveServer, receiver: Receiver
) -> None:
    forged = ("2026-01-01 12:00:00,000 INFO gateway.api.commands: api user=admin "
              "addr=10.0.0.1 command=HangUp line=a call=forged code=200 ms=1")
    bad = {
        f"{receiver.url}/x\r\n{forged}": "\r",
        f"{receiver.url}/x\n{forged}": "\n",
        f"{receiver.url}/a b": " ",
        f"{receiver.url}/a\tb": "\t",
        f"{receiver.url}/a\u00a0b": "\u00a0",
        f"{receiver.url}/a\u2028{forged}": "\u2028",
        f"{receiver.url}/a\x1b[2J": "\x1b",
    }
    for url, char in bad.items():
        answer = call(gateway, Url=url)
        position = url.index(char) + 1
        assert (answer.code, answer.message.split(": ", 1)) == (302, [
            "Missing or invalid parameter 'Url' for command 'Call'",
            f"character U+{ord(char):04X} at position {position}: a URL is printable ASCII "
            "without spaces (percent-encode the rest)"]), repr(url)
    assert no_calls(gateway)
    assert "call=forged" not in gateway.output
    assert not [path for path, _ in receiver.received if path.startswith(("/x", "/a"))]
