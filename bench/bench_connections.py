"""A normal client's request time with slow connections open (waitress, default settings).

- The server process with its defaults (server.connection_limit 500,
  channel_timeout_s 30) and one simulated line.
- ``--slow`` connections (300) each send half a request, then a byte every
  second, spread over the second (so that each byte costs the server's loop
  a pass of its own, the worst case); one the server closes at
  channel_timeout_s is opened again, as an attacker keeping the table full
  would (tests/slow_clients.py).
- A normal client asks GET /healthz and an authenticated ListActiveCalls
  (its password already checked once, as the server caches), each on a new
  connection (a client arriving during the flood), ``--requests`` times each,
  with none and with the slow connections open: median, p99, max.
- The server's memory per slow connection (RSS before and after they are
  accepted) and its CPU while they trickle.

    python bench/bench_connections.py [--slow N] [--requests N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_api import AUTH, rss_kib, start_server  # beside this script

from tests.slow_clients import SlowClients, wait_for_connections

LIST = f"/api?command=ListActiveCalls&{AUTH}"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(port: int, path: str, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        connection.close()
        assert response.status == 200, response.status
        times.append(time.perf_counter() - started)
    return times


def figures(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{statistics.median(ordered) * 1000:.2f} / {p99 * 1000:.2f} / "
            f"{ordered[-1] * 1000:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long the server's CPU is measured while they trickle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, _ = start_server(Path(tmp), 1)
        try:
            asks: list[tuple[str, Callable[[], list[float]]]] = [
                ("GET /healthz", lambda: timed(port, "/healthz", args.requests)),
                ("ListActiveCalls, authenticated",
                 lambda: timed(port, LIST, args.requests)),
            ]
            timed(port, LIST, 1)  # the password's first check (scrypt) is not the figure
            alone = {what: ask() for what, ask in asks}
            before = rss_kib(proc.pid)
            with SlowClients(port, args.slow, every_s=1.0, reconnect=True):
                wait_for_connections(proc.pid, port, args.slow)
                per_connection = (rss_kib(proc.pid) - before) / args.slow
                flooded = {what: ask() for what, ask in asks}
                used = cpu_s(proc.pid)
                time.sleep(args.seconds)  # a span to measure over, not a wait for an event
                cpu = (cpu_s(proc.pid) - used) / args.seconds
        finally:
            proc.terminate()
            proc.wait(30)
    print("a normal client's request on a new connection (ms), median / p99 / max:")
    for what, _ in asks:
        print(f"  {what}, no slow connections: {figures(alone[what])}")
        print(f"  {what}, {args.slow} slow connections open: {figures(flooded[what])}")
    print(f"server memory per slow connection: {per_connection:.1f} KiB")
    print(f"server CPU while {args.slow} slow connections each trickle a byte a second: "
          f"{cpu * 100:.1f} % of a core")


if __name__ == "__main__":
    main()
