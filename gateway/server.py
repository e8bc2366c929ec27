"""``dtmf-gateway serve``: the API under waitress, with a clean stop.

On SIGTERM or SIGINT the server stops accepting, the command in progress on
each line finishes (bounded by ``STOP_TIMEOUT_S``), every line goes on hook
and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from waitress.server import create_server

from gateway.api import create_app
from gateway.calls import Gateway
from gateway.config import Config

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class _Stop(Exception):
    """Raised in the main thread by the signal handler to leave waitress's loop."""


def serve(
    config: Config,
    *,
    on_ready: Callable[[Gateway, Any], None] | None = None,
) -> int:
    gateway = Gateway(config)
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

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    lines = ", ".join(f"{n} ({ln.driver.driver_name})" for n, ln in gateway.lines.items())
    print(f"dtmf-gateway: serving http://{config.server.host}:{server.effective_port}/api "
          f"on {lines}", flush=True)
    if on_ready is not None:
        on_ready(gateway, server)
    try:
        server.run()
    except _Stop as why:
        log.info("stopping on %s", why)
    finally:
        # First stop accepting, then let each line finish its command and go on hook.
        server.close()
        gateway.close(STOP_TIMEOUT_S)
        log.info("stopped; every line on hook")
    return 0
