"""Connections a LAN client cannot exhaust (issue 13), against the real server process.

These tests open slow connections for real, as an attacker would
(``tests/slow_clients.py``): half a header each, then a byte at a time.

Bounds are for a loaded 2-core machine: a request that is served takes
milliseconds, one that waits behind a full connection table never comes, so
10 s tells them apart with room to spare.
"""

from __future__ import annotations

import http.client
import json
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from waitress.server import create_server

from gateway.app import create_app
from gateway.calls import Gateway
from gateway.config import Config
from gateway.health import HealthLoop
from gateway.server import HttpLoop, ProbeListener, channel_timeouts, limit_connections
from gateway.systemd import Notifier
from tests.conftest import simulated_line, wait_until
from tests.live import LiveServer
from tests.service_process import GatewayProcess, NotifySocket, simulated_lines
from tests.slow_clients import HALF, SlowClients, connections, wait_for_connections

ANSWERED_S = 10.0


def get(base: str, path: str) -> int:
    with urllib.request.urlopen(base + path, timeout=ANSWERED_S) as answer:
        answer.read()
        status: int = answer.status
        return status


# -- the defaults ------------------------------------------------------------------


def test_a_normal_client_is_served_while_300_slow_connections_are_open(tmp_path: Path) -> None:
    """With the default settings. Found (issue 13): waitress's default
    connection_limit of 100 was reached by 120 such connections, and every
    other request, the watchdog's /healthz included, timed out."""
    server = LiveServer(tmp_path, simulated_lines("line1", time_scale=0.05))
    try:
        # Reopened when the server closes them at channel_timeout_s (30 s),
        # so that a slow run still has all 300 open.
        with SlowClients(server.port, 300, reconnect=True):
            for step in ("healthz", "login", "api", "call"):
                # Each request sets out with all 300 held by the server.
                wait_for_connections(server.pid, server.port, 300)
                started = time.monotonic()
                if step == "healthz":
                    assert get(server.base, "/healthz") == 200
                elif step == "login":
                    assert get(server.base, "/login") == 200
                elif step == "api":
                    assert server.api({"command": "ListActiveCalls"},
                                      timeout=ANSWERED_S).code == 200
                else:
                    call = server.api({"command": "Call", "Dialed": "1"}, timeout=ANSWERED_S)
                    assert call.code == 200, call
                    keys = server.api({"command": "SendDTMF", "CallId": call.text("CallId"),
                                       "Keys": "1", "Party": "all"}, timeout=ANSWERED_S)
                    assert keys.code == 200, keys
                assert time.monotonic() - started < ANSWERED_S
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.output


# -- channel_timeout_s ---------------------------------------------------------------


def test_a_request_must_arrive_within_channel_timeout_however_slowly_it_trickles(
    tmp_path: Path,
) -> None:
    """waitress's own timeout counts from the last byte, so a byte every
    0.2 s held a connection for ever; here from the first. A command that
    runs longer than the timeout still gets its answer."""
    server = LiveServer(tmp_path, "[server]\nchannel_timeout_s = 2\n"
                        + simulated_lines("line1", time_scale=1.0))
    try:
        call_id = server.api({"command": "Call", "Dialed": "1"}).text("CallId")
        answers: list[int] = []
        # 4 keys at 500/500 ms: 4 s on the line, twice the timeout.
        sender = threading.Thread(target=lambda: answers.append(server.api(
            {"command": "SendDTMF", "CallId": call_id, "Keys": "1234", "Duration": "500",
             "Gap": "500", "Party": "all"}, timeout=60).code))
        sender.start()
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        opened = time.monotonic()
        with SlowClients(server.port, 5, every_s=0.2) as slow:
            wait_until(lambda: len(slow.closed) == 5, timeout=30)
            # Nothing sent at all: closed as idle, after as long.
            assert idle.recv(1) == b""
            idle_s = time.monotonic() - opened
        idle.close()
        sender.join(60)
        # Never before the timeout; at most a cleanup interval (1 s) and the
        # loop's wake-up (1 s) after it, plus a loaded machine's lateness.
        assert all(2.0 <= s < 2.0 + ANSWERED_S for s in slow.closed), slow.closed
        assert 2.0 <= idle_s < 2.0 + ANSWERED_S, idle_s
        assert answers == [200]
    finally:
        assert server.stop() == 0


def test_the_settings_are_checked() -> None:
    from gateway.config import from_mapping
    from gateway.errors import ConfigError

    assert from_mapping({"server": {"connection_limit": 900}}).server.connection_limit == 900
    with pytest.raises(ConfigError, match=r"server.connection_limit: 901 is above the maximum 900"):
        from_mapping({"server": {"connection_limit": 901}})
    with pytest.raises(ConfigError, match=r"server.channel_timeout_s: 2.5 is not an integer"):
        from_mapping({"server": {"channel_timeout_s": 2.5}})
    with pytest.raises(ConfigError, match=r"server.channel_timeout_s: 0 is below the minimum 1"):
        from_mapping({"server": {"channel_timeout_s": 0}})


# -- open files ----------------------------------------------------------------------

SERVE = ("import resource, sys\n"
         "resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
         "from gateway.cli import main\n"
         "sys.exit(main(['serve', '--config', {config!r}, '--port', '0']))\n")


def test_too_few_open_files_for_the_connection_limit_is_a_clear_error(tmp_path: Path) -> None:
    """A listener out of descriptors cannot accept and stays readable: the
    loop would spin on it at full CPU while every client waited."""
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nconnection_limit = 500\n")
    done = subprocess.run([sys.executable, "-c", SERVE.format(soft=200, hard=200,
                                                               config=str(config))],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, (
        "dtmf-gateway: error: server.connection_limit 500 needs 600 open files; "
        "this process may open 200 (LimitNOFILE)\n"))


def test_the_open_files_limit_is_raised_to_what_the_connection_limit_needs(
    tmp_path: Path,
) -> None:
    gw = GatewayProcess(tmp_path, "[server]\nconnection_limit = 500\n",
                        prelude="import resource\n"
                                "resource.setrlimit(resource.RLIMIT_NOFILE, (200, 4000))")
    try:
        assert resource.prlimit(gw.proc.pid, resource.RLIMIT_NOFILE) == (600, 4000)
    finally:
        assert gw.stop() == 0


# -- the watchdog --------------------------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


#: 6 s: pinged every 3 s, each probe given 1.5 s; a loaded machine answers
#: /healthz in milliseconds, so a probe that times out is a real failure.
WATCHDOG = {"WATCHDOG_USEC": "6000000"}


def test_slow_connections_up_to_the_limit_do_not_stop_the_watchdog(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """Found (issue 13): the watchdog's probe needed a connection like anyone
    else, so a flood that held them all would have had a healthy service
    restarted. The probe has a port of its own."""
    gw = GatewayProcess(tmp_path, "[server]\nconnection_limit = 20\nchannel_timeout_s = 600\n"
                        + simulated_lines("line1"),
                        env={"NOTIFY_SOCKET": notify_socket.env_value, **WATCHDOG})
    try:
        notify_socket.wait_for("READY", "1")
        port = int(gw.base.rsplit(":", 1)[1])
        with SlowClients(port, 30) as slow:
            gw.wait_for_output("total open connections reached the connection limit")
            wait_for_connections(gw.proc.pid, port, 20)
            # The main port is full: a normal request is not even accepted.
            with socket.create_connection(("127.0.0.1", port), timeout=30) as waiting:
                waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
                notify_socket.pending()  # pings from here on, with the table full
                for _ in range(3):
                    notify_socket.wait_for("WATCHDOG", "1", timeout=15)
                assert connections(gw.proc.pid, port) == 20  # no more accepted meanwhile
                assert slow.closed == []
            # The waiting client is answered once the slow ones let go.
            with socket.create_connection(("127.0.0.1", port), timeout=30) as waiting:
                waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
                slow.close()
                assert waiting.recv(12) == b"HTTP/1.1 200"
        assert not any(m.get("WATCHDOG") == "trigger" for m in notify_socket.messages)
        assert "health:" not in gw.output, gw.output
    finally:
        assert gw.stop() == 0


#: Freezes waitress's loop thread when a request carries this header: a
#: really stuck HTTP server, which the probe's own port must not hide.
FREEZE = """
import threading
import waitress.channel
_received = waitress.channel.HTTPChannel.received
def _freezing(self, data):
    if b"X-Freeze-Loop" in data:
        threading.Event().wait()
    return _received(self, data)
waitress.channel.HTTPChannel.received = _freezing
"""


def test_a_stuck_http_loop_still_stops_the_watchdog(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    gw = GatewayProcess(tmp_path, simulated_lines("line1"), prelude=FREEZE,
                        env={"NOTIFY_SOCKET": notify_socket.env_value, **WATCHDOG})
    try:
        notify_socket.wait_for("READY", "1")
        notify_socket.wait_for("WATCHDOG", "1", timeout=15)
        port = int(gw.base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as freezer:
            freezer.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Freeze-Loop: 1\r\n\r\n")
            # Two failed checks, 3 s apart, then the restart is asked for.
            trigger = notify_socket.wait_for("WATCHDOG", "trigger", timeout=30)
        assert trigger["STATUS"].startswith("restarting: the HTTP server did not answer on "
                                            "127.0.0.1:")
        assert f"127.0.0.1:{port}" not in trigger["STATUS"]  # the probe's own port
    finally:
        gw.kill()


# -- the probe's listener, in process ----------------------------------------------------


@pytest.fixture
def served(make_config: Callable[..., Config]) -> Iterator[SimpleNamespace]:
    """A gateway behind waitress as ``serve`` builds it, with a probe listener."""
    config = make_config([simulated_line("line1")])
    gateway = Gateway(config)
    gateway.open()
    app = create_app(config, gateway)
    timeouts = channel_timeouts(600)
    server = create_server(app, host="127.0.0.1", port=0, threads=4, **timeouts)
    probe = ProbeListener.beside(server, app, timeouts)
    limit_connections(server, 10)
    http = threading.Thread(target=server.run, daemon=True)
    loop = HttpLoop(server, http)
    http.start()
    yield SimpleNamespace(gateway=gateway, server=server, probe=probe, http=http)
    loop.stop(5)
    gateway.close(5)


def probe_get(probe: ProbeListener, path: str, method: str = "GET") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", probe.effective_port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_probe_listener_answers_get_healthz_only(served: SimpleNamespace) -> None:
    status, body = probe_get(served.probe, "/healthz")
    assert status == 200 and json.loads(body)["lines"]["line1"]["open"] is True
    # No way around the connection limit to the API or the console.
    assert probe_get(served.probe, "/api?command=ListActiveCalls")[0] == 404
    assert probe_get(served.probe, "/login")[0] == 404
    assert probe_get(served.probe, "/healthz", method="POST")[0] == 404


def loop_turns(server: object, turns: int = 3) -> None:
    """Until waitress's loop has gone round ``turns`` times, each time with
    every socket that was ready."""
    for _ in range(turns):
        ran = threading.Event()
        server.trigger.pull_trigger(ran.set)  # type: ignore[attr-defined]
        assert ran.wait(10)


def test_the_probe_takes_two_connections_at_most(served: SimpleNamespace) -> None:
    held = [socket.create_connection(("127.0.0.1", served.probe.effective_port), timeout=10)
            for _ in range(3)]

    def accepted() -> set[int]:
        return {channel.addr[1] for channel in list(served.probe.active_channels.values())}

    try:
        for sock in held:
            sock.sendall(HALF)
        wait_until(lambda: len(accepted()) == 2)
        loop_turns(served.server)  # its chances to accept the third
        assert len(accepted()) == 2
        first, second, third = (sock.getsockname()[1] for sock in held)
        assert accepted() == {first, second}
        held[0].close()
        wait_until(lambda: accepted() == {second, third})
    finally:
        for sock in held:
            sock.close()


def test_a_health_loop_on_the_probe_sees_a_flood_of_connections_as_healthy_and_a_stuck_loop_not(
    served: SimpleNamespace,
) -> None:
    loop = HealthLoop(served.gateway, served.probe, served.http, Notifier(None, 2.0),
                      stuck_after_s=60, command_timeout_s=60)
    with SlowClients(served.server.effective_port, 15):
        wait_until(lambda: len(served.server.active_channels) == 10)
        assert served.server.in_connection_overflow
        assert loop.problems() == []
    release = threading.Event()
    served.server.trigger.pull_trigger(lambda: release.wait(30))
    try:
        loop.probe_timeout = 0.5
        (problem,) = loop.problems()
        assert problem.startswith(
            f"the HTTP server did not answer on 127.0.0.1:{served.probe.effective_port}")
    finally:
        release.set()
