"""``dtmf-gateway serve``: the API under waitress, with a clean stop.

On SIGTERM or SIGINT the server stops accepting, the command in progress on
each line finishes (bounded by ``STOP_TIMEOUT_S``) and its answer goes out,
every line goes on hook and the process exits 0.

Under systemd (``Type=notify``) it says READY=1 once every line has been
opened (on hook) and the port listens, pings the watchdog from a
:class:`~gateway.health.HealthLoop`, and says STOPPING=1 when it stops.

Connections are what a LAN client can use up without a password: a request
holds a thread only once it has arrived whole, but a connection from its
first byte. So there may be ``server.connection_limit`` of them, each must
send its request within ``server.channel_timeout_s`` however slowly it
trickles, and the watchdog's probe has a loopback port of its own
(:class:`ProbeListener`), so that a flood that holds every connection is not
taken for a hang.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, TcpWSGIServer, create_server
from waitress.trigger import trigger

from gateway.app import create_app
from gateway.calls import Gateway
from gateway.config import Config
from gateway.health import PROBE_PATH, HealthLoop, listen_address, summary
from gateway.systemd import Notifier

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
#: How long a stop waits for waitress's loop thread to run one of its steps.
LOOP_WAIT_S = 5.0
#: How often a stop looks for connections that have sent their last answer.
DRAIN_POLL_S = 0.02
#: Open files kept for what is not a connection: lines, recordings,
#: notifications, the log, the loop's own pipes (an idle gateway with 8
#: lines has 7 open). server.connection_limit's maximum leaves this much
#: below select()'s 1024.
OTHER_FILES = 100
#: Connections the probe listener takes at once; a probe needs one.
PROBE_CONNECTIONS = 2
T = TypeVar("T")


def serve(
    config: Config,
    *,
    on_ready: Callable[[Gateway, Any], None] | None = None,
) -> int:
    files = open_files_for(config.server.connection_limit)
    if files:
        print(f"dtmf-gateway: error: {files}", file=sys.stderr)
        return 1
    notifier = Notifier.from_environment()
    if not faulthandler.is_enabled():
        # A watchdog kill (SIGABRT) then leaves every thread's stack in the journal.
        faulthandler.enable()
    gateway = Gateway(config)
    notifier.status("opening lines")
    # Opening puts each line on hook: after a crash mid-call, READY=1 comes
    # only once no line is still seized.
    faults = gateway.open()
    for name, fault in faults.items():
        if fault:
            log.error("line %s did not open: %s (its next command tries again)", name, fault)
    app = create_app(config, gateway)
    timeouts = channel_timeouts(config.server.channel_timeout_s)
    try:
        server = create_server(
            app,
            host=config.server.host,
            port=config.server.port,
            threads=config.server.threads,
            max_request_body_size=config.server.max_request_bytes,
            max_request_header_size=max(8192, config.server.max_request_bytes),
            ident="dtmf-gateway",
            clear_untrusted_proxy_headers=True,
            **timeouts,
        )
        probe = ProbeListener.beside(server, app, timeouts) if notifier.watchdog_s else None
    except OSError as exc:
        gateway.close(STOP_TIMEOUT_S)
        print(f"dtmf-gateway: error: cannot listen on {config.server.host}:"
              f"{config.server.port}: {exc.strerror}", file=sys.stderr)
        return 1
    limit_connections(server, config.server.connection_limit)

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    # waitress's loop runs in its own thread so that, while stopping, it can
    # still write the answers of the commands that are allowed to finish.
    http = threading.Thread(target=server.run, name="http", daemon=True)
    loop = HttpLoop(server, http)
    http.start()
    lines = ", ".join(f"{snap.name} ({snap.driver})" for snap in gateway.snapshots())
    # A host name with several addresses ("localhost": 127.0.0.1 and ::1)
    # gives a server per address, and no single effective_port.
    port = listen_address(server)[1]
    gateway.notifier.policy.serving_on(port)
    print(f"dtmf-gateway: serving http://{config.server.host}:{port}/api "
          f"on {lines}; web console at http://{config.server.host}:{port}/", flush=True)
    if on_ready is not None:
        on_ready(gateway, server)
    health = None
    if notifier.watchdog_s:
        health = HealthLoop(gateway, probe, http, notifier,
                            stuck_after_s=config.health.stuck_after_s,
                            command_timeout_s=config.server.command_timeout_s)
    notifier.ready(f"serving on port {port}; {summary(gateway)}")
    if health is not None:
        health.start()
    try:
        while not stopping.wait(0.5) and http.is_alive():
            pass
    finally:
        notifier.stopping()
        if health is not None:
            health.stop()
        loop.call(loop.close_listeners)
        # Queued commands are refused, the running one on each line finishes,
        # then every call ends and every line goes on hook.
        gateway.close(STOP_TIMEOUT_S)
        loop.stop(STOP_TIMEOUT_S)
        log.info("stopped; every line on hook")
    if not stopping.is_set():
        # Not asked to stop: a failure, so Restart=on-failure starts us again.
        log.error("the HTTP server thread ended unexpectedly")
        return 1
    return 0


def open_files_for(connections: int) -> str | None:
    """Let this process open enough files for ``connections``; why not, if it cannot.

    A listener that cannot accept for want of a descriptor stays readable,
    and waitress's loop would spin on it."""
    needed = connections + OTHER_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return (f"server.connection_limit {connections} needs {needed} open files; "
                f"this process may open {hard} (LimitNOFILE)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


def channel_timeouts(timeout_s: int) -> dict[str, int]:
    """waitress's settings for ``server.channel_timeout_s``: it looks for
    connections past their time every ``cleanup_interval``, which keeps a
    connection open at most a tenth longer than it may be."""
    return {"channel_timeout": timeout_s, "cleanup_interval": max(1, timeout_s // 10)}


def socket_map(server: Any) -> dict[int, Any]:
    """waitress's map of sockets; a MultiSocketServer (several listening
    sockets) keeps it public."""
    found: dict[int, Any] = (server._map if isinstance(server, wasyncore.dispatcher)
                             else server.map)
    return found


def limit_connections(server: Any, connections: int) -> None:
    """``connections`` open at once, counted as server.connection_limit says.

    waitress stops accepting when its map holds ``connection_limit`` objects,
    its listeners and their wake-up pipes included; the probe's connections
    count, which is a few milliseconds every half watchdog period."""
    objects = socket_map(server).values()
    own = sum(not isinstance(obj, HTTPChannel) for obj in objects)
    for listener in objects:
        if isinstance(listener, BaseWSGIServer) and not isinstance(listener, ProbeListener):
            listener.channel_class = Channel
            listener.adj.connection_limit = connections + own


class Channel(HTTPChannel):  # type: ignore[misc]
    """waitress's connection, its request timed from its first byte.

    waitress closes a connection idle for ``channel_timeout``, counted from
    the last byte it received: a client that trickles a byte now and then
    would hold its connection for ever. Here the bytes after the first of a
    request do not count as activity, so the whole request must arrive
    within the timeout. Once it has, a command may take as long as it takes:
    waitress never closes a connection whose request is being served.
    """

    last_activity: float
    request_started = 0.0

    def received(self, data: bytes) -> bool:
        # handle_read has just set last_activity to now.
        if self.request is None:
            self.request_started = self.last_activity
        else:
            self.last_activity = self.request_started
        done: bool = super().received(data)
        return done


class ProbeListener(TcpWSGIServer):  # type: ignore[misc]
    """A loopback port for the watchdog's probe alone, in waitress's own loop.

    The probe must show the loop, a server thread and the application
    working, and it could not while slow clients held every connection the
    main listener allows. This listener takes ``PROBE_CONNECTIONS`` at once
    whatever the others hold, shares the loop and the server threads (so a
    loop or threads that are stuck still fail the probe), and answers
    ``GET /healthz`` only, so it is no way around the connection limit.
    """

    channel_class = Channel
    next_channel_cleanup: float

    @classmethod
    def beside(cls, server: Any, app: Any, timeouts: dict[str, int]) -> ProbeListener:
        adj = Adjustments(host="127.0.0.1", port=0, ident="dtmf-gateway",
                          max_request_body_size=0, clear_untrusted_proxy_headers=True,
                          **timeouts)
        return cls(probe_only(app), map=socket_map(server), dispatcher=server.task_dispatcher,
                   adj=adj, sockinfo=adj.listen[0])

    def readable(self) -> bool:
        # BaseWSGIServer.readable, but counting this listener's connections only.
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting) and len(self.active_channels) < PROBE_CONNECTIONS


def probe_only(app: Any) -> Any:
    """The WSGI ``app`` for ``GET /healthz``; 404 for anything else."""

    def probe(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == PROBE_PATH and environ.get("REQUEST_METHOD") == "GET":
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", "0")])
        return [b""]

    return probe


class HttpLoop:
    """waitress's socket map, changed only from the thread that runs its loop.

    The loop builds its select() lists from the map and then calls select();
    a socket closed from another thread in between makes select() fail with
    EBADF, which ends the loop with a traceback. So every close is a trigger
    thunk, which the loop runs between two select() calls.

    Made before the loop's thread starts: it reads the map once, for the triggers.
    """

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.thread = thread
        self.map = socket_map(server)
        self.triggers = [obj for obj in self.map.values() if isinstance(obj, trigger)]
        self.dispatcher = server.task_dispatcher
        self.hung = False

    def call(self, action: Callable[[], T]) -> T:
        """``action()`` in the loop's thread, or in this one once that has ended."""
        outcome: list[T] = []
        failure: list[BaseException] = []
        ran = threading.Event()

        def thunk() -> None:
            try:
                outcome.append(action())
            except BaseException as exc:
                failure.append(exc)
            finally:
                ran.set()

        if self.thread.is_alive() and self.triggers and not self.hung:
            with contextlib.suppress(OSError):  # the loop closed its trigger: it has ended
                self.triggers[0].pull_trigger(thunk)
            deadline = time.monotonic() + LOOP_WAIT_S
            while not ran.wait(0.05) and self.thread.is_alive():
                if time.monotonic() > deadline:
                    log.error("the HTTP loop did not run the stop within %g s", LOOP_WAIT_S)
                    # Once is enough: the rest of the stop must fit systemd's TimeoutStopSec.
                    self.hung = True
                    break
        if not ran.is_set():
            # A loop that has ended cannot race us; one that hangs is no worse off.
            thunk()
        if failure:
            raise failure[0]
        return outcome[0]

    def _channels(self) -> list[HTTPChannel]:
        return [obj for obj in self.map.values() if isinstance(obj, HTTPChannel)]

    def close_listeners(self) -> None:
        for obj in list(self.map.values()):
            if isinstance(obj, BaseWSGIServer):
                # Its own close() would take the trigger with it, which the
                # stop still needs.
                wasyncore.dispatcher.close(obj)

    def close_idle(self) -> int:
        """Close the connections with nothing left to do; how many are still busy.

        Busy: a request being received, served or not yet all sent. A kept-alive
        connection is closed between requests, as HTTP allows at any time."""
        busy = 0
        for channel in self._channels():
            if channel.requests or channel.total_outbufs_len or channel.request is not None:
                busy += 1
            else:
                channel.handle_close()
        return busy

    def close_all(self) -> int:
        """Close every socket but the triggers and empty the map, which ends
        the loop; how many connections still had an answer to send."""
        unsent = 0
        for obj in list(self.map.values()):
            if isinstance(obj, HTTPChannel):
                unsent += bool(obj.requests or obj.total_outbufs_len)
                obj.handle_close()
            elif not isinstance(obj, trigger):
                wasyncore.dispatcher.close(obj)
        # A server thread still finishing a request pulls a trigger at its end:
        # they stay open, out of the map, until those threads are gone.
        self.map.clear()
        return unsent

    def stop(self, timeout: float) -> None:
        """Let every answer reach its client (each wait within ``timeout``),
        then end the loop and the server's threads."""
        deadline = time.monotonic() + timeout
        while self.call(self.close_idle) and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
        unsent = self.call(self.close_all)
        if unsent:
            log.warning("stopping: %d connection(s) closed before their answer was sent "
                        "(after %g s)", unsent, timeout)
        self.thread.join(timeout)
        self.dispatcher.shutdown(timeout=1)
        # Neither the loop nor a server thread can pull a trigger any more.
        if not self.thread.is_alive() and not self.dispatcher.threads:
            for pulled in self.triggers:
                pulled.close()
