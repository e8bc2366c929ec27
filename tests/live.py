"""The real server for load, fault and fuzz tests, two ways.

- :class:`LiveServer`: ``python -m gateway serve`` as its own process on a
  free loopback port, its output drained all the time (a full pipe would
  block the server's logging, and with it every request).
- :func:`run_served`: :func:`gateway.server.serve` in this process, so a test
  can reach the Gateway behind the same waitress server and sockets.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree

from gateway.auth import save_user
from gateway.calls import Gateway
from gateway.config import Config

USER, PASSWORD = "HTTP_User_1", "qwe123"
T = TypeVar("T")


class Answer:
    """A parsed API answer; parsing fails unless the body is well-formed XML."""

    def __init__(self, status: int, body: bytes, content_type: str = "") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.root = ElementTree.fromstring(body)
        self.code = int(self.root.findtext("Code") or 0)
        self.message = self.root.findtext("Message") or ""

    def text(self, tag: str) -> str:
        return self.root.findtext(tag) or ""

    def __repr__(self) -> str:
        return f"Answer({self.code}, {self.message!r})"


def query(port: int, params: dict[str, str] | str, *, auth: bool = True, timeout: float = 60,
          conn: http.client.HTTPConnection | None = None) -> Answer:
    """GET /api with ``params`` (a dict, or an already-encoded query string)."""
    if isinstance(params, dict):
        if auth:
            params = {"Username": USER, "Password": PASSWORD, **params}
        text = urllib.parse.urlencode(params)
    else:
        text = params + (f"&Username={USER}&Password={PASSWORD}" if auth else "")
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", f"/api?{text}")
        response = conn.getresponse()
        body = response.read()
        return Answer(response.status, body, response.getheader("Content-Type", ""))
    finally:
        if own:
            conn.close()


class SourceConnection(http.client.HTTPConnection):
    """An HTTP connection from a chosen loopback address (Linux lets a client
    bind any of 127/8): another machine, as far as the server can tell."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__("127.0.0.1", port, timeout=60, source_address=(source, 0))


def api_from(server: LiveServer, source: str, **params: str) -> Answer:
    conn = SourceConnection(server.port, source)
    try:
        conn.request("GET", "/api?" + urllib.parse.urlencode(params))
        response = conn.getresponse()
        return Answer(response.status, response.read())
    finally:
        conn.close()


def login(server: LiveServer, source: str, user: str, password: str) -> int:
    return api_from(server, source, command="ListActiveCalls", Username=user,
                    Password=password).code


class LiveServer:
    """``dtmf-gateway serve`` in its own process, with the seed's user."""

    def __init__(self, directory: Path, config: str, *, log_level: str = "info",
                 users: dict[str, tuple[str, list[str] | None]] | None = None) -> None:
        self.dir = directory
        self.config_text = config
        (directory / "gateway.toml").write_text(config)
        if not (directory / "users.toml").exists():
            save_user(directory / "users.toml", USER, PASSWORD)
            for name, (password, commands) in (users or {}).items():
                save_user(directory / "users.toml", name, password, commands)
        self.log_level = log_level
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.startup_s = 0.0
        self.start()

    def start(self) -> None:
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.dir / "gateway.toml"),
             "--port", "0", "--log-level", self.log_level],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        ready = threading.Event()
        proc = self.proc

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with self._lock:
                    self.lines.append(line)
                found = re.search(r"serving http://127\.0\.0\.1:(\d+)/api", line)
                if found and not ready.is_set():
                    self.port = int(found.group(1))
                    ready.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not ready.wait(30):
            self.kill()
            raise AssertionError("server did not start: " + self.output)
        self.startup_s = time.monotonic() - started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self.lines)

    @property
    def served_output(self) -> str:
        """The output up to the stop: what serving the requests wrote."""
        return self.output.split(" gateway.server: stopping on ", 1)[0]

    def api(self, params: dict[str, str] | str, **kwargs: Any) -> Answer:
        return query(self.port, params, **kwargs)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status (the output is all read by then)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._drain.join(10)
        return code

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is cleaned up."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._drain.join(10)


def run_served(config: Config, body: Callable[[Gateway, int], T]) -> T:
    """Run :func:`gateway.server.serve` here and ``body(gateway, port)`` once it
    listens; then stop it as SIGTERM would and return what ``body`` returned.

    ``serve`` installs its SIGTERM/SIGINT handlers on the main thread; they are
    put back afterwards.
    """
    from gateway.server import serve

    assert threading.current_thread() is threading.main_thread()
    # Any free port: the default 9509 may be taken by another test run (or a
    # gateway) on the same machine; ``body`` is told the port.
    config.server.port = 0
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    results: list[T] = []
    errors: list[BaseException] = []

    def ready(gateway: Gateway, server: Any) -> None:
        try:
            results.append(body(gateway, server.effective_port))
        except BaseException as exc:
            errors.append(exc)
        finally:
            # serve's own handler: stop accepting, finish, every line on hook.
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        code = serve(config, on_ready=ready)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if errors:
        raise errors[0]
    assert code == 0
    return results[0]
