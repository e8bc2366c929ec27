"""The gateway's health: what ``/healthz`` reports, and the service watchdog.

Two questions with two answers. *Is a line usable?* A faulted line (its
modem unplugged, its sound card gone) makes ``/healthz`` answer 503, so a
monitor can page someone; restarting the process would not plug the modem
back in, and its next command tries the hardware again anyway. *Is the
process alive?* The :class:`HealthLoop` pings systemd's watchdog only while
the HTTP server answers on loopback, every line's worker thread runs and no
command has been stuck beyond ``health.stuck_after_s``; otherwise the pings
stop and systemd restarts the service, which opens every line on hook.
"""

from __future__ import annotations

import http.client
import logging
import sys
import threading
import time
import traceback
from typing import Any

from gateway import __version__
from gateway.calls import Gateway
from gateway.systemd import Notifier

log = logging.getLogger(__name__)

#: A summary that long is cut: systemctl status shows one line of it.
STATUS_CHARS = 200
#: What the watchdog's probe asks for.
PROBE_PATH = "/healthz"


def report(gateway: Gateway, started: float) -> tuple[bool, dict[str, Any]]:
    """``(healthy, body)``: healthy is False while any line has a fault."""
    snapshots = gateway.snapshots()
    lines = {snap.name: snap.report() for snap in snapshots}
    healthy = all(snap.fault is None for snap in snapshots)
    return healthy, {
        "status": "ok" if healthy else "fault",
        "version": __version__,
        "uptime_s": round(time.monotonic() - started, 1),
        "lines": lines,
    }


def summary(gateway: Gateway) -> str:
    """One line for systemd's STATUS=: each line and whether it is usable."""
    parts = []
    for snap in gateway.snapshots():
        if snap.fault:
            parts.append(f"{snap.name} FAULT ({snap.fault})")
        elif snap.call_id is not None:
            parts.append(f"{snap.name} in call")
        else:
            parts.append(f"{snap.name} ok")
    text = "lines: " + ", ".join(parts)
    return text if len(text) <= STATUS_CHARS else text[: STATUS_CHARS - 3] + "..."


def listen_address(server: Any) -> tuple[str, int]:
    """Where a loopback probe reaches the waitress ``server``."""
    effective = getattr(server, "effective_listen", None)
    if effective:  # a MultiSocketServer (a host name with several addresses)
        host, port = effective[0][:2]
    else:
        host, port = server.effective_host, server.effective_port
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return host, int(port)


def thread_stacks() -> str:
    """Every thread's stack, for the log before the watchdog restarts us."""
    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            out.append(f"thread {thread.name}:\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(out)


class HealthLoop:
    """Pings systemd's watchdog while the process really works.

    Checked every half watchdog period: the HTTP thread is alive and answers
    a request on loopback, each line's worker thread is alive, and no line has
    been in one command longer than ``stuck_after_s``. One failed check only
    skips a ping (systemd waits a whole period); a second in a row puts every
    line on hook, logs every thread's stack and asks systemd to restart us now.

    ``server`` is what the probe asks: under ``serve``, a listener of the
    watchdog's own in the same waitress loop and threads, so that slow
    clients holding every connection of the main port are not taken for a
    hang (see :class:`gateway.server.ProbeListener`).

    A probe that times out while every HTTP thread is busy is a flood, not a
    hang: requests wait at most ``command_timeout_s`` for their line, so that
    is tolerated for that long plus ``stuck_after_s``.
    """

    def __init__(
        self,
        gateway: Gateway,
        server: Any,
        http_thread: threading.Thread,
        notifier: Notifier,
        *,
        stuck_after_s: float,
        command_timeout_s: float,
    ) -> None:
        self.gateway = gateway
        self.server = server
        self.http_thread = http_thread
        self.notifier = notifier
        self.stuck_after_s = stuck_after_s
        self.saturation_limit_s = command_timeout_s + stuck_after_s
        interval = notifier.ping_interval or 30.0
        self.interval = max(0.05, interval)
        self.probe_timeout = max(0.2, min(5.0, self.interval / 2))
        self.failures = 0
        self.triggered = False
        self._saturated_since: float | None = None
        self._last_status = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.probe_timeout + 1)

    # -- checks ------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What is wrong with the process now (empty: healthy)."""
        found = []
        now = time.monotonic()
        if not self.http_thread.is_alive():
            found.append("the HTTP server thread has ended")
        for snap in self.gateway.snapshots():
            if not snap.worker_alive:
                found.append(f"line {snap.name}: its worker thread has ended")
                continue
            since = snap.busy_since
            if since is not None and now - since > self.stuck_after_s:
                found.append(f"line {snap.name}: one command has run for {now - since:.0f} s "
                             f"(stuck_after_s is {self.stuck_after_s:g})")
        if not found:
            problem = self._probe()
            if problem:
                found.append(problem)
        return found

    def _probe(self) -> str | None:
        host, port = listen_address(self.server)
        connection = http.client.HTTPConnection(host, port, timeout=self.probe_timeout)
        try:
            connection.request("GET", PROBE_PATH, headers={"User-Agent": "dtmf-gateway-watchdog"})
            # Any answer, 503 or 404 included, shows the server loop and a worker
            # thread running; the lines were checked directly above.
            connection.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            if self._saturated():
                log.warning("health: HTTP probe got no answer (%s) while every server "
                            "thread is busy; tolerated as load", exc)
                return None
            return f"the HTTP server did not answer on {host}:{port}: {exc}"
        finally:
            connection.close()
        self._saturated_since = None
        return None

    def _saturated(self) -> bool:
        dispatcher = getattr(self.server, "task_dispatcher", None)
        busy = dispatcher is not None and bool(dispatcher.queue) and (
            dispatcher.active_count >= len(dispatcher.threads))
        now = time.monotonic()
        if not busy:
            self._saturated_since = None
            return False
        if self._saturated_since is None:
            self._saturated_since = now
        return now - self._saturated_since < self.saturation_limit_s

    # -- the loop --------------------------------------------------------------------
    def tick(self) -> bool:
        """One check; pings the watchdog if healthy. True when healthy."""
        found = self.problems()
        if not found:
            if self.failures:
                log.info("health: healthy again")
            self.failures = 0
            self.notifier.watchdog()
            status = summary(self.gateway)
            if status != self._last_status:
                self.notifier.status(status)
                self._last_status = status
            return True
        self.failures += 1
        text = "; ".join(found)
        if self.failures == 1:
            log.error("health: %s (watchdog not pinged)", text)
            self.notifier.status(f"unhealthy: {text}")
            self._last_status = ""
        elif not self.triggered:
            self.triggered = True
            log.critical("health: still %s; every line on hook, asking systemd to restart "
                         "the service. Threads:\n%s", text, thread_stacks())
            self.gateway.on_hook_all()
            self.notifier.watchdog_trigger(f"restarting: {text}")
        return False

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("health: check failed")
            if self._stop.wait(self.interval):
                return
