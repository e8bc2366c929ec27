"""API figures through the real server (waitress) on simulated lines.

- SendDTMF overhead: response time minus the ideal tone time of the keys
  (what the line spends on tones and gaps), median and p99, for one client on
  one line and for 8 clients on 8 lines at once.
- ListActiveCalls requests per second, authenticated, from 8 keep-alive clients.
- The server's RSS after start, and its start-up time (spawn to listening).

    python bench/bench_api.py [--requests N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gateway.auth import save_user

USER, PASSWORD = "bench", "bench-password"
AUTH = f"Username={USER}&Password={PASSWORD}"


def start_server(tmp: Path, lines: int) -> tuple[subprocess.Popen[str], int, float]:
    config = "".join(
        f'[[line]]\nname = "line{i}"\ndriver = "simulated"\nrecord_dir = "rec"\n'
        "call_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }\n\n"
        for i in range(lines)
    )
    (tmp / "gateway.toml").write_text(config)
    save_user(tmp / "users.toml", USER, PASSWORD)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp / "gateway.toml"),
         "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/api", line)
        if found:
            startup = time.monotonic() - started
            # Keep reading output so the pipe never fills.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(found.group(1)), startup
    raise SystemExit("the server did not start")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def get(conn: http.client.HTTPConnection, query: str) -> str:
    conn.request("GET", f"/api?{query}&{AUTH}")
    body = conn.getresponse().read().decode()
    if "<Code>200</Code>" not in body:
        raise SystemExit(f"unexpected answer to {query}: {body}")
    return body


def overhead(port: int, clients: int, requests: int) -> list[float]:
    """Each client places a call on its own line, then sends `requests` single
    keys at the minimum timing (40 ms on, 50 ms off: 90 ms of line time)."""
    ideal = 0.090
    samples: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        call_id = re.search(r"<CallId>(\w+)</CallId>",
                            get(conn, "command=Call&Dialed=1")).group(1)  # type: ignore[union-attr]
        mine = []
        barrier.wait()
        for _ in range(requests):
            t0 = time.perf_counter()
            get(conn, f"command=SendDTMF&CallId={call_id}&Party=all&Keys=5&Duration=40&Gap=50")
            mine.append(time.perf_counter() - t0 - ideal)
        get(conn, f"command=HangUp&CallId={call_id}")
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def list_rate(port: int, clients: int, seconds: float) -> float:
    count = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        nonlocal count
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = 0
        while time.monotonic() < stop:
            get(conn, "command=ListActiveCalls")
            n += 1
        with lock:
            count += n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / seconds


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="SendDTMF per client")
    parser.add_argument("--seconds", type=float, default=5.0, help="ListActiveCalls run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, startup = start_server(Path(tmp), 8)
        try:
            time.sleep(0.5)
            print(f"start-up (spawn to listening, 8 simulated lines): {startup * 1000:.0f} ms")
            print(f"RSS after start: {rss_kib(proc.pid) / 1024:.1f} MiB")
            for clients in (1, 8):
                s = overhead(port, clients, args.requests)
                print(f"SendDTMF overhead, {clients} client(s) on {clients} line(s): "
                      f"median {statistics.median(s) * 1000:.1f} ms, "
                      f"p99 {percentile(s, 99) * 1000:.1f} ms ({len(s)} requests)")
            rate = list_rate(port, 8, args.seconds)
            print(f"ListActiveCalls with authentication, 8 keep-alive clients: {rate:.0f} req/s")
            print(f"RSS after the run: {rss_kib(proc.pid) / 1024:.1f} MiB")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
