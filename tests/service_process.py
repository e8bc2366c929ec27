"""The real ``dtmf-gateway serve`` process, and a service manager's notify socket."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from gateway.auth import save_user

USER, PASSWORD = "HTTP_User_1", "qwe123"

SIMULATED = """
[[line]]
name = "{name}"
driver = "simulated"
record_dir = "rec"
time_scale = {time_scale}
call_timing = {{ dial_tone_ms = 100, answer_wait_ms = 100 }}
"""


def simulated_lines(*names: str, time_scale: float = 1.0) -> str:
    return "".join(SIMULATED.format(name=n, time_scale=time_scale) for n in names)


class NotifySocket:
    """What systemd listens on for a Type=notify service: a Unix datagram socket.

    ``abstract`` binds in Linux's abstract namespace (``NOTIFY_SOCKET=@name``),
    as systemd itself does; otherwise a path in a fresh temporary directory.
    """

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"dtmf-gateway-test-{os.getpid()}-{secrets.token_hex(4)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
            self.address = "\0" + name
        else:
            # Short: a Unix socket path has room for 107 bytes.
            self._dir = tempfile.mkdtemp(prefix="sdnotify-")
            path = os.path.join(self._dir, "notify")
            self.sock.bind(path)
            self.env_value = self.address = path
        self.messages: list[dict[str, str]] = []

    def _parse(self, data: bytes) -> dict[str, str]:
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.messages.append(fields)
        return fields

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            return self._parse(self.sock.recv(4096))
        except TimeoutError:
            return None

    def pending(self) -> list[dict[str, str]]:
        """Every message sent so far, without waiting: a Unix datagram is in
        the receiver's queue by the time its sendto() returns."""
        got = []
        self.sock.setblocking(False)
        try:
            while True:
                got.append(self._parse(self.sock.recv(4096)))
        except BlockingIOError:
            return got
        finally:
            self.sock.setblocking(True)

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30) -> dict[str, str]:
        """The next message carrying ``key`` (with ``value``); earlier ones are kept too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(deadline - time.monotonic())
            if message is not None and key in message and value in (None, message[key]):
                return message
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; got {self.messages}")

    def collect(self, seconds: float) -> list[dict[str, str]]:
        """Every message in the next ``seconds``."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


class GatewayProcess:
    """``python -m gateway serve`` on a free loopback port, its output read as it comes."""

    def __init__(
        self,
        directory: Path,
        config: str,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        prelude: str = "",
    ) -> None:
        self.dir = directory
        self.config_path = directory / "gateway.toml"
        self.config_path.write_text(config)
        if not (directory / "users.toml").exists():
            save_user(directory / "users.toml", USER, PASSWORD)
        serve = ["serve", "--config", str(self.config_path), "--port", "0", *args]
        if prelude:
            # Test-only tweaks of module constants, then the ordinary CLI.
            command = [sys.executable, "-c",
                       f"{prelude}\nimport sys\nfrom gateway.cli import main\n"
                       f"sys.exit(main({serve!r}))"]
        else:
            command = [sys.executable, "-m", "gateway", *serve]
        child_env = {k: v for k, v in os.environ.items()
                     if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                  "JOURNAL_STREAM")}
        child_env.update(env or {})
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=child_env)
        self.lines: list[str] = []
        self._serving = threading.Event()
        self.base = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._serving.wait(30):
            self.kill()
            raise AssertionError("server did not start:\n" + self.output)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(r"serving (http://127\.0\.0\.1:\d+)/api", line)
            if found:
                self.base = found.group(1)
                self._serving.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the output:\n{self.output}")
            time.sleep(0.05)

    def wait_until_busy(self, line: str, timeout: float = 30) -> None:
        """Until ``/healthz`` shows ``line`` running a command: the request the
        test sent has reached the line and is under way."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.request("/healthz")
            if status in (200, 503) and json.loads(body)["lines"][line]["busy"]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"line {line} never busy within {timeout} s:\n{self.output}")
            time.sleep(0.01)

    def request(
        self,
        path: str,
        *,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, str]:
        """(HTTP status, body); error statuses are answers too."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def api(self, **params: str) -> str:
        params = {"Username": USER, "Password": PASSWORD, **params}
        status, body = self.request("/api?" + urllib.parse.urlencode(params))
        assert status == 200, body
        return body

    def call(self, dialed: str = "1") -> str:
        found = re.search(r"<CallId>(\w+)</CallId>", self.api(command="Call", Dialed=dialed))
        assert found, "no CallId"
        return found.group(1)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
