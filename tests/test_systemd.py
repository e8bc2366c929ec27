"""The service-manager protocol: readiness, watchdog, stop, against a real notify socket."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import os
import re
import signal
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from waitress.server import create_server

from gateway.app import create_app
from gateway.calls import Gateway
from gateway.config import Config
from gateway.health import HealthLoop
from gateway.lines.base import HookState
from gateway.server import HttpLoop
from gateway.systemd import Notifier, socket_address, watchdog_seconds
from tests.conftest import wait_until
from tests.service_process import GatewayProcess, NotifySocket, simulated_lines
from tests.support import MULTIMON, decode_wav


@pytest.fixture(params=["path", "abstract"])
def any_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    """Both kinds of NOTIFY_SOCKET: a path, and an @abstract name as systemd uses."""
    sock = NotifySocket(abstract=request.param == "abstract")
    yield sock
    sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


# -- the protocol ---------------------------------------------------------------


@pytest.mark.parametrize(("value", "address"), [
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@/org/freedesktop/systemd1/notify/1234", "\0/org/freedesktop/systemd1/notify/1234"),
    ("@", None),
    ("run/notify", None),
    ("vsock:2:1234", None),
])
def test_socket_address(value: str, address: str | None) -> None:
    assert socket_address(value) == address


def test_watchdog_is_ours_only_for_our_pid() -> None:
    pid = os.getpid()
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(pid)}) == 30.0
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(pid + 1)}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_seconds({}) is None


def test_environment_is_read_once_and_removed() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid()),
           "PATH": "/bin"}
    notifier = Notifier.from_environment(env)
    assert (notifier.address, notifier.watchdog_s, notifier.ping_interval) == ("\0x", 4.0, 2.0)
    # Child processes (espeak-ng) must not inherit a line to the service manager.
    assert env == {"PATH": "/bin"}
    # Without a socket there is nobody to ping.
    assert Notifier.from_environment({"WATCHDOG_USEC": "4000000"}).watchdog_s is None


def test_datagrams_on_the_wire(any_socket: NotifySocket) -> None:
    notify_socket = any_socket
    notifier = Notifier(notify_socket.address, 2.0)
    assert notifier.ready("serving; lines: line1 ok")
    assert notifier.watchdog()
    assert notifier.status("two\nlines")
    assert notifier.stopping()
    assert notifier.watchdog_trigger("restarting: stuck")
    raw = [notify_socket.receive(1) for _ in range(5)]
    assert raw == [
        {"READY": "1", "STATUS": "serving; lines: line1 ok"},
        {"WATCHDOG": "1"},
        # A newline in a status must not forge a second assignment.
        {"STATUS": "two lines"},
        {"STOPPING": "1", "STATUS": "stopping: finishing the commands in progress"},
        {"WATCHDOG": "trigger", "STATUS": "restarting: stuck"},
    ]
    notifier.close()


def test_a_missing_manager_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING, "gateway.systemd"):
        assert notifier.watchdog() is False
        assert notifier.ready("x") is False
    assert len(caplog.records) == 1 and "cannot notify" in caplog.text
    assert Notifier(None).ready("x") is False  # outside systemd: nothing, quietly


# -- the health loop, in process ------------------------------------------------------


@pytest.fixture
def served(make_config: Callable[..., Config]) -> Iterator[SimpleNamespace]:
    """A gateway behind a real waitress server on a loopback port."""
    from tests.conftest import simulated_line

    config = make_config([simulated_line("line1"), simulated_line("line2")])
    gateway = Gateway(config)
    gateway.open()
    app = create_app(config, gateway)
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    http = threading.Thread(target=server.run, daemon=True)
    loop = HttpLoop(server, http)
    http.start()
    yield SimpleNamespace(gateway=gateway, server=server, http=http)
    loop.stop(5)
    gateway.close(5)


def loop_for(served: SimpleNamespace, sock: NotifySocket, **kwargs: Any) -> HealthLoop:
    options = {"stuck_after_s": 60.0, "command_timeout_s": 60.0, **kwargs}
    return HealthLoop(served.gateway, kwargs.pop("server", served.server),
                      kwargs.pop("http", served.http), Notifier(sock.address, 2.0),
                      stuck_after_s=options["stuck_after_s"],
                      command_timeout_s=options["command_timeout_s"])


def test_healthy_process_pings_and_tells_its_lines(
    served: SimpleNamespace, notify_socket: NotifySocket
) -> None:
    loop = loop_for(served, notify_socket)
    assert loop.tick()
    assert notify_socket.pending() == [
        {"WATCHDOG": "1"}, {"STATUS": "lines: line1 ok, line2 ok"}]
    assert loop.tick()
    # The status goes out again only when it changes.
    assert notify_socket.pending() == [{"WATCHDOG": "1"}]


def test_a_faulted_line_is_not_a_reason_to_restart(
    served: SimpleNamespace, notify_socket: NotifySocket
) -> None:
    served.gateway.lines["line2"].driver.fault = "port /dev/ttyACM0 is gone"
    loop = loop_for(served, notify_socket)
    assert loop.tick()
    assert notify_socket.pending() == [
        {"WATCHDOG": "1"}, {"STATUS": "lines: line1 ok, line2 FAULT (port /dev/ttyACM0 is gone)"}]


def test_a_stuck_line_stops_the_pings_then_goes_on_hook_and_asks_for_a_restart(
    served: SimpleNamespace, notify_socket: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    gateway: Gateway = served.gateway
    call = gateway.place_call("1")
    line = gateway.lines[call.line]
    assert line.driver.hook is HookState.OFF_HOOK
    # A driver call that never returns: the worker is busy for good.
    release = threading.Event()
    line.worker.submit(lambda: release.wait(30))
    loop = loop_for(served, notify_socket, stuck_after_s=0.2)
    wait_until(lambda: (since := line.worker.busy_since) is not None
               and time.monotonic() - since > 0.2)
    try:
        with caplog.at_level(logging.ERROR, "gateway.health"):
            assert not loop.tick()
            first = notify_socket.pending()
            assert first == [{"STATUS": first[0]["STATUS"]}]
            assert re.match(r"unhealthy: line line1: one command has run for \d+ s "
                            r"\(stuck_after_s is 0.2\)", first[0]["STATUS"])
            # One missed ping is within systemd's patience: the call goes on.
            assert line.driver.hook is HookState.OFF_HOOK
            assert not loop.tick()
        assert line.driver.hook is HookState.ON_HOOK
        trigger = notify_socket.pending()
        assert trigger == [{"WATCHDOG": "trigger", "STATUS": trigger[0]["STATUS"]}]
        assert trigger[0]["STATUS"].startswith("restarting: line line1: one command")
        # The journal gets the stuck thread's stack, for the bug report.
        assert "thread line-line1:" in caplog.text and "release.wait" in caplog.text
        assert not loop.tick()
        assert notify_socket.pending() == []  # asked once; no pings after
    finally:
        release.set()


def test_dead_threads_are_problems(served: SimpleNamespace, notify_socket: NotifySocket) -> None:
    served.gateway.lines["line2"].worker.stop(5)
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    loop = loop_for(served, notify_socket, http=ended)
    assert loop.problems() == ["the HTTP server thread has ended",
                               "line line2: its worker thread has ended"]


class Silent:
    """A listening socket nobody accepts on: connections complete, answers never come."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.effective_host, self.effective_port = self.sock.getsockname()
        self.task_dispatcher = SimpleNamespace(queue=[], active_count=0, threads={1, 2})


def test_an_http_server_that_does_not_answer_is_a_problem_unless_flooded(
    served: SimpleNamespace, notify_socket: NotifySocket
) -> None:
    silent = Silent()
    loop = loop_for(served, notify_socket, server=silent)
    loop.probe_timeout = 0.3
    assert len(loop.problems()) == 1
    assert loop.problems()[0].startswith(
        f"the HTTP server did not answer on 127.0.0.1:{silent.effective_port}")
    # Every thread busy and requests waiting: a flood, tolerated for a while...
    silent.task_dispatcher = SimpleNamespace(queue=[object()], active_count=2, threads={1, 2})
    assert loop.problems() == []
    # ...but not longer than a request can wait for its line and then run.
    loop.saturation_limit_s = 0.0
    assert len(loop.problems()) == 1
    silent.sock.close()


# -- the real process under a fake service manager ------------------------------------------


def in_background(request: Callable[[], object]) -> None:
    """A request whose answer the test does not wait for (the server may die first)."""

    def run() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            request()

    threading.Thread(target=run, daemon=True).start()


def test_ready_once_every_line_is_open_then_watchdog_then_stopping(
    tmp_path: Path, any_socket: NotifySocket
) -> None:
    notify_socket = any_socket
    gw = GatewayProcess(tmp_path, simulated_lines("line1", "line2", time_scale=0.05),
                        env={"NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "600000"})
    try:
        ready = notify_socket.wait_for("READY", "1")
        assert notify_socket.messages[0] == {"STATUS": "opening lines"}
        port = gw.base.rsplit(":", 1)[1]
        assert ready["STATUS"] == f"serving on port {port}; lines: line1 ok, line2 ok"
        status, body = gw.request("/healthz")
        assert status == 200
        lines = json.loads(body)["lines"]
        assert {n: (v["open"], v["hook"], v["fault"]) for n, v in lines.items()} == {
            "line1": (True, "on-hook", None), "line2": (True, "on-hook", None)}
        # Pinged at half the 0.6 s watchdog, 0.3 s apart. A loaded machine
        # delays single pings, not the median of five intervals; a ping once a
        # whole period (0.6 s) or less often would let systemd kill us.
        notify_socket.pending()  # timed from here: earlier ones were queued, not timed
        arrived = []
        for _ in range(6):
            notify_socket.wait_for("WATCHDOG", "1", timeout=10)
            arrived.append(time.monotonic())
        intervals = [b - a for a, b in itertools.pairwise(arrived)]
        assert 0.15 < statistics.median(intervals) < 0.5, intervals
    finally:
        assert gw.stop() == 0
    notify_socket.wait_for("STOPPING", "1", timeout=5)
    assert "stopped; every line on hook" in gw.output


def test_a_watchdog_meant_for_another_process_is_not_pinged(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    gw = GatewayProcess(tmp_path, simulated_lines("line1", time_scale=0.05), env={
        "NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"})
    try:
        notify_socket.wait_for("READY", "1")
        # Nothing to wait for, so a time: a wrongly started health loop would
        # ping at once and then every 0.2 s, five times in this second.
        assert not any("WATCHDOG" in m for m in notify_socket.collect(1.0))
    finally:
        assert gw.stop() == 0


def test_sigterm_mid_sequence_finishes_it_puts_the_line_on_hook_and_exits_0(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    gw = GatewayProcess(tmp_path, simulated_lines("line1", time_scale=1.0),
                        env={"NOTIFY_SOCKET": notify_socket.env_value, "WATCHDOG_USEC": "2000000"})
    notify_socket.wait_for("READY", "1")
    call_id = gw.call()
    answers: list[str] = []
    sender = threading.Thread(target=lambda: answers.append(gw.api(
        command="SendDTMF", CallId=call_id, Party="all", Keys="147258")))
    sender.start()
    gw.wait_until_busy("line1")  # the 1.2 s sequence is under way
    assert gw.stop() == 0
    sender.join(30)
    notify_socket.wait_for("STOPPING", "1", timeout=5)
    assert answers and "<Code>200</Code>" in answers[0]
    events = (tmp_path / "rec" / f"{call_id}.log").read_text().splitlines()
    # The whole sequence went out, then the line went on hook.
    assert [e.split(" ", 1)[1] for e in events[-3:]] == [
        "emit all 6 symbols 6 digits 100/100 ms", "on-hook", f"call {call_id} ends"]
    if MULTIMON:
        assert decode_wav(tmp_path / "rec" / f"{call_id}.wav") == "147258"


def test_sigterm_during_a_command_longer_than_the_stop_bound_still_ends_on_hook(
    tmp_path: Path,
) -> None:
    # The bound is 10 s in service; 1 s here, so the test waits for 2 s, not 20.
    gw = GatewayProcess(tmp_path, simulated_lines("line1", time_scale=1.0),
                        prelude="import gateway.server\ngateway.server.STOP_TIMEOUT_S = 1.0")
    call_id = gw.call()
    in_background(lambda: gw.request(
        f"/api?command=SendDTMF&CallId={call_id}&Party=all&Keys={'1' * 60}"
        "&Username=HTTP_User_1&Password=qwe123", timeout=60))
    gw.wait_until_busy("line1")  # 12 s of tones under way
    started = time.monotonic()
    assert gw.stop(timeout=15) == 0
    assert time.monotonic() - started < 8
    assert f"call {call_id} on line1 ended: gateway stopped" in gw.output
    events = (tmp_path / "rec" / f"{call_id}.log").read_text()
    assert "on-hook" in events


def test_killed_mid_call_the_next_start_has_every_line_on_hook(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    lines = simulated_lines("line1", "line2", time_scale=1.0)
    first = GatewayProcess(tmp_path, lines)
    call_id = first.call()
    in_background(lambda: first.request(
        f"/api?command=SendDTMF&CallId={call_id}&Party=all&Keys=123456789"
        "&Username=HTTP_User_1&Password=qwe123"))
    first.wait_until_busy("line1")  # off hook and sending when killed
    assert first.kill() == -signal.SIGKILL
    second = GatewayProcess(tmp_path, lines, env={"NOTIFY_SOCKET": notify_socket.env_value})
    try:
        notify_socket.wait_for("READY", "1")
        status, body = second.request("/healthz")
        assert status == 200
        report = json.loads(body)["lines"]
        assert {n: (v["hook"], v["in_call"], v["open"]) for n, v in report.items()} == {
            "line1": ("on-hook", False, True), "line2": ("on-hook", False, True)}
        assert "<ActiveCalls>\n  </ActiveCalls>" in second.api(command="ListActiveCalls")
    finally:
        assert second.stop() == 0



def test_serve_exits_1_when_its_http_server_dies_and_handles_several_sockets(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host name with two addresses gives waitress a server per socket; and an
    HTTP loop that ends by itself is a failure, so Restart=on-failure applies."""
    from waitress import wasyncore
    from waitress.trigger import trigger

    import gateway.server

    def two_sockets(app: Any, **kwargs: Any) -> Any:
        kwargs.pop("host"), kwargs.pop("port")
        return create_server(app, listen="127.0.0.1:0 127.0.0.2:0", **kwargs)

    monkeypatch.setattr(gateway.server, "create_server", two_sockets)
    seen: list[Any] = []

    def on_ready(gw: Gateway, server: Any) -> None:
        seen.append(server)
        # The HTTP loop ends under the gateway (closed from its own thread, so
        # that it ends without a traceback of its own).
        pull = next(obj for obj in server.map.values() if isinstance(obj, trigger))
        pull.pull_trigger(lambda: wasyncore.close_all(server.map))

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        result = gateway.server.serve(make_config(), on_ready=on_ready)
    finally:  # serve() took SIGTERM and SIGINT from pytest
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert result == 1
    assert len(seen[0].effective_listen) == 2
