"""``dtmf-gateway serve``: the API under waitress, with a clean stop.

On SIGTERM or SIGINT the server stops accepting, the command in progress on
each line finishes (bounded by ``STOP_TIMEOUT_S``), every line goes on hook
and the process exits 0.

Under systemd (``Type=notify``) it says READY=1 once every line has been
opened (on hook) and the port listens, pings the watchdog from a
:class:`~gateway.health.HealthLoop`, and says STOPPING=1 when it stops.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server

from gateway.app import create_app
from gateway.calls import Gateway
from gateway.config import Config
from gateway.health import HealthLoop, listen_address, summary
from gateway.systemd import Notifier

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


def serve(
    config: Config,
    *,
    on_ready: Callable[[Gateway, Any], None] | None = None,
) -> int:
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
        )
    except OSError as exc:
        gateway.close(STOP_TIMEOUT_S)
        print(f"dtmf-gateway: error: cannot listen on {config.server.host}:"
              f"{config.server.port}: {exc.strerror}", file=sys.stderr)
        return 1

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
        health = HealthLoop(gateway, server, http, notifier,
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
        _stop_accepting(server)
        # Queued commands are refused, the running one on each line finishes,
        # then every call ends and every line goes on hook.
        gateway.close(STOP_TIMEOUT_S)
        _drain(server, STOP_TIMEOUT_S)
        http.join(STOP_TIMEOUT_S)
        log.info("stopped; every line on hook")
    if not stopping.is_set():
        # Not asked to stop: a failure, so Restart=on-failure starts us again.
        log.error("the HTTP server thread ended unexpectedly")
        return 1
    return 0


def _stop_accepting(server: Any) -> None:
    """Close the listening socket only: open connections keep their answers."""
    if isinstance(server, wasyncore.dispatcher):
        wasyncore.dispatcher.close(server)
    else:
        for sub in getattr(server, "map", {}).values():
            if isinstance(sub, BaseWSGIServer):
                wasyncore.dispatcher.close(sub)


def _drain(server: Any, timeout: float) -> None:
    """Wait for in-flight requests to be answered, then close every channel."""
    dispatcher = server.task_dispatcher
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (dispatcher.active_count or dispatcher.queue):
        time.sleep(0.05)
    # A moment for the loop thread to flush the last answers to their sockets.
    time.sleep(0.2)
    dispatcher.shutdown(timeout=1)
    wasyncore.close_all(getattr(server, "_map", None) or getattr(server, "map", None))
