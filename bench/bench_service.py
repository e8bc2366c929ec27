"""Service figures: readiness, health pages, the watchdog's check, log scrubbing, stop.

- Spawn to READY=1 on a notify socket, 8 simulated lines (each opened first).
- GET /healthz and GET /metrics through waitress, keep-alive: median and p99,
  and the size of the metrics page.
- One watchdog check (threads, stuck lines, a loopback request), in process.
- The log filter's cost per record (the API writes one per command).
- SIGTERM to exit with idle lines.

    python bench/bench_service.py [--requests N]
"""

from __future__ import annotations

import argparse
import http.client
import io
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from waitress.server import create_server

from gateway import logs
from gateway.app import create_app
from gateway.calls import Gateway
from gateway.config import from_mapping
from gateway.health import HealthLoop
from gateway.systemd import Notifier

LINES = 8


def lines_config(n: int) -> str:
    return "".join(f'[[line]]\nname = "line{i}"\ndriver = "simulated"\nrecord_dir = "rec"\n\n'
                   for i in range(n))


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


def timed_gets(port: int, path: str, n: int) -> tuple[list[float], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times, size = [], 0
    for _ in range(n):
        started = time.perf_counter()
        connection.request("GET", path)
        body = connection.getresponse().read()
        times.append(time.perf_counter() - started)
        size = len(body)
    connection.close()
    return times, size


def process_figures(tmp: Path, requests: int) -> None:
    (tmp / "gateway.toml").write_text(lines_config(LINES))
    name = f"bench-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp / "gateway.toml"),
         "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    while b"READY=1" not in sock.recv(4096):
        pass
    ready = time.monotonic() - started
    assert proc.stdout is not None
    port = 0
    for line in proc.stdout:
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/api", line)
        if found:
            port = int(found.group(1))
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    print(f"spawn to READY=1, {LINES} lines: {ready:.2f} s")
    healthz, _ = timed_gets(port, "/healthz", requests)
    print(f"GET /healthz, {LINES} lines: {percentiles(healthz)}")
    metrics, size = timed_gets(port, "/metrics", requests)
    print(f"GET /metrics, {LINES} lines: {percentiles(metrics)}, {size / 1024:.1f} KiB")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    print(f"SIGTERM to exit (status {code}), idle lines: {time.monotonic() - started:.2f} s")
    sock.close()


def watchdog_check(tmp: Path, requests: int) -> None:
    data = {"line": [{"name": f"line{i}", "driver": "simulated", "record_dir": "rec"}
                     for i in range(LINES)]}
    config = from_mapping(data, base_dir=tmp)
    gateway = Gateway(config)
    gateway.open()
    server = create_server(create_app(config, gateway), host="127.0.0.1", port=0, threads=8)
    http_thread = threading.Thread(target=server.run, daemon=True)
    http_thread.start()
    loop = HealthLoop(gateway, server, http_thread, Notifier(None, 30.0),
                      stuck_after_s=1800, command_timeout_s=300)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        assert loop.tick()
        times.append(time.perf_counter() - started)
    print(f"one watchdog check (with its loopback request), {LINES} lines: {percentiles(times)}")
    server.close()
    gateway.close(5)


def log_filter(records: int) -> None:
    line = ("api user=HTTP_User_1 addr=192.0.2.7 command=SendDTMF line=line1 call=SdwQD "
            "code=200 ms=%.0f")
    for label, filtered in (("without", False), ("with", True)):
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        if filtered:
            handler.addFilter(logs.Redactor())
        log = logging.getLogger(f"bench.{label}")
        log.propagate = False
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        started = time.perf_counter()
        for i in range(records):
            log.info(line, i)
        per = (time.perf_counter() - started) / records
        print(f"one API log line {label} the redacting filter: {per * 1e6:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process_figures(Path(tmp), args.requests)
        watchdog_check(Path(tmp), args.requests)
    log_filter(20000)


if __name__ == "__main__":
    main()
