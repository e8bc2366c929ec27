"""Wrong passwords: how fast they are checked, and what a flood of them does to other requests.

Through the real server (waitress, a simulated line), clients on loopback
addresses of their own (127.0.x.y: other machines, as far as it can tell):

- wrong passwords checked per second while 8 clients guess at once, each
  from its own addresses and within its lock-out budget (scrypt on the two
  checking threads is the bound); and 307 refusals per second while 8
  clients keep guessing from one locked address (no check at all);
- a signed-in client's ListActiveCalls (its password checked a moment ago,
  so no scrypt), alone and during each flood;
- a sign-in whose password has not been checked yet (one scrypt), alone and
  during the wrong-password flood, where it queues behind the guesses.

    python bench/bench_logins.py [--seconds S]
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
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.auth import save_user

USER, PASSWORD = "bench", "bench-password"
FRESH = 12  # users whose first sign-in is measured, each a scrypt check


def start_server(tmp: Path, lockout: str) -> tuple[subprocess.Popen[str], int]:
    (tmp / "gateway.toml").write_text(
        f"[auth]\n{lockout}\n[server]\nthreads = 16\n"
        '[[line]]\nname = "line1"\ndriver = "simulated"\nrecord_dir = "rec"\n'
        "time_scale = 0.0\ncall_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp / "gateway.toml"),
         "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/api", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(found.group(1))
    raise SystemExit("the server did not start")


def code_of(conn: http.client.HTTPConnection, user: str, password: str) -> int:
    query = urllib.parse.urlencode({"command": "ListActiveCalls", "Username": user,
                                    "Password": password})
    conn.request("GET", f"/api?{query}")
    found = re.search(r"<Code>(\d+)</Code>", conn.getresponse().read().decode())
    assert found
    return int(found.group(1))


def connect(port: int, source: str = "127.0.0.1") -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=120,
                                      source_address=(source, 0))


@contextmanager
def flood(port: int, sources: Callable[[int, int], str], want: int) -> Iterator[list[int]]:
    """8 clients sending wrong passwords until the block ends; client k's n-th
    guess comes from ``sources(k, n)``. Yields the count of answers ``want``."""
    stop = threading.Event()
    counts = [0]
    lock = threading.Lock()

    def guesser(k: int) -> None:
        n = 0
        while not stop.is_set():
            conn = connect(port, sources(k, n))
            try:
                got = code_of(conn, USER, f"wrong-{k}-{n}")
            finally:
                conn.close()
            if got == want:
                with lock:
                    counts[0] += 1
            n += 1

    threads = [threading.Thread(target=guesser, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    try:
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join(120)


def rate(counts: list[int], seconds: float) -> float:
    before, started = counts[0], time.monotonic()
    time.sleep(seconds)
    return (counts[0] - before) / (time.monotonic() - started)


def listing_times(port: int, seconds: float) -> list[float]:
    conn = connect(port)
    assert code_of(conn, USER, PASSWORD) == 200  # checked once; remembered from then on
    times = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.perf_counter()
        assert code_of(conn, USER, PASSWORD) == 200
        times.append(time.perf_counter() - started)
    conn.close()
    return times


def first_sign_ins(port: int, users: list[str]) -> list[float]:
    times = []
    for name in users:
        conn = connect(port)
        started = time.perf_counter()
        assert code_of(conn, name, f"{name}-password") == 200
        times.append(time.perf_counter() - started)
        conn.close()
    return times


def figures(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
            f"({len(ordered)} requests)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    args = parser.parse_args()
    seconds = args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        users = tmp_path / "users.toml"
        save_user(users, USER, PASSWORD)
        fresh = [f"fresh{i}" for i in range(2 * FRESH)]
        for name in fresh:
            save_user(users, name, f"{name}-password")
        # Every client gets 5 guesses per address per 300 s, the defaults: a
        # new address for each guess keeps the guesser within its budget.
        proc, port = start_server(tmp_path, "lockout_failures = 5\nlockout_seconds = 300")
        try:
            alone = listing_times(port, seconds)
            sign_in_alone = first_sign_ins(port, fresh[:FRESH])
            with flood(port, lambda k, n: f"127.0.{1 + k}.{1 + n % 250}", 305) as checked:
                checked_rate = rate(checked, seconds)
                during = listing_times(port, seconds)
                sign_in_during = first_sign_ins(port, fresh[FRESH:])
            # One address, locked after its first 5 guesses: the rest are refused unchecked.
            with flood(port, lambda k, n: "127.0.100.1", 307) as refused:
                refused_rate = rate(refused, seconds)
                during_refusals = listing_times(port, seconds)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"wrong passwords checked, 8 clients guessing at once: {checked_rate:.1f} per second")
    print(f"wrong passwords refused unchecked (307) from a locked address, 8 clients: "
          f"{refused_rate:.0f} per second")
    print("ListActiveCalls of a signed-in client:")
    print(f"  alone: {figures(alone)}")
    print(f"  during the wrong-password flood: {figures(during)}")
    print(f"  during the refused flood: {figures(during_refusals)}")
    print("a sign-in whose password is not yet checked (one scrypt):")
    print(f"  alone: {figures(sign_in_alone)}")
    print(f"  during the wrong-password flood: {figures(sign_in_during)}")


if __name__ == "__main__":
    main()
