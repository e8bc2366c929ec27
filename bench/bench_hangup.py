"""HangUp latency through the real server (waitress) on real-time simulated lines.

- While a long SendDTMF plays (5 keys at 2000/5000 ms): HangUp's answer time,
  median and p99 over many calls.
- While 100 HangUps for the same call arrive at once: each one's answer time.

    python bench/bench_hangup.py [--calls N]
"""

from __future__ import annotations

import argparse
import http.client
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import AUTH, percentile, start_server

LONG = "command=SendDTMF&Party=all&Keys=12345&Duration=2000&Gap=5000"


def api(port: int, query: str, timeout: float = 60) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", f"/api?{query}&{AUTH}")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def busy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return '"busy": true' in conn.getresponse().read().decode()
    finally:
        conn.close()


def call_with_long_keys(port: int) -> tuple[str, threading.Thread]:
    call_id = re.search(r"<CallId>(\w+)</CallId>", api(port, "command=Call&Dialed=1"))
    assert call_id is not None
    sender = threading.Thread(target=api, args=(port, f"{LONG}&CallId={call_id.group(1)}"))
    sender.start()
    deadline = time.monotonic() + 30
    while not busy(port):
        if time.monotonic() > deadline:
            raise SystemExit("the keys never started")
        time.sleep(0.01)
    return call_id.group(1), sender


def hang_up_time(port: int, call_id: str) -> float:
    t0 = time.perf_counter()
    answer = api(port, f"command=HangUp&CallId={call_id}")
    took = time.perf_counter() - t0
    if "<Code>200</Code>" not in answer and "<Code>601</Code>" not in answer:
        raise SystemExit(f"unexpected HangUp answer: {answer}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="calls hung up mid-SendDTMF")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, _ = start_server(Path(tmp), 1)
        try:
            single = []
            for _ in range(args.calls):
                call_id, sender = call_with_long_keys(port)
                single.append(hang_up_time(port, call_id))
                sender.join(30)
            print(f"HangUp while a 35 s SendDTMF plays ({args.calls} calls): median "
                  f"{statistics.median(single) * 1000:.1f} ms, "
                  f"p99 {percentile(single, 99) * 1000:.1f} ms")
            call_id, sender = call_with_long_keys(port)
            with ThreadPoolExecutor(100) as pool:
                flood = list(pool.map(lambda _: hang_up_time(port, call_id), range(100)))
            sender.join(30)
            print(f"100 HangUps at once for one call during it: median "
                  f"{statistics.median(flood) * 1000:.1f} ms, "
                  f"p99 {percentile(flood, 99) * 1000:.1f} ms, max {max(flood) * 1000:.1f} ms")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
