"""The simulated line's far end: what it costs, and how late the gateway hears its answer.

Cost: the exchange's audio for a whole call (dial tone, ringback, an
answer with speech, keys, the hang-up and reorder), read in the simulated
line's 50 ms blocks, as seconds of audio per CPU second; then with the
line's ears (the detectors) fed each block, as the simulated line's
capture does. The second figure bounds how fast a line at
``time_scale = 0`` runs, and so the wall-clock bounds of its waits
(``MIN_SPEED`` in gateway/lines/simulated.py assumes 20x).

Answer detection: Calls placed through the gateway (no HTTP) on a simulated
line at ``time_scale = 0``, from the far party's pick-up to the call being
connected (when CallConnected goes out), in line time: the detectors count
samples and the line's clock stands still while the gateway works, so
this is what a real line of the same far end would show, to within one
50 ms block.

Keys: on a real-time line (``time_scale = 1``), from the end of each of the
far party's keys to its ``DtmfEntered`` POST arriving at a receiver on
loopback, in wall-clock time. A key's end is dated by the wall clock when
the block that holds it was delivered, less the rest of that block: the
far end delivers each block when its end is due, as a sound card does.

    python bench/bench_exchange.py [--calls N] [--keys N]
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.calls import Gateway
from gateway.config import from_mapping
from gateway.detect import Listener
from gateway.lines.exchange import Exchange, ExchangeOptions, FarParty, KeyPress, Kind
from gateway.lines.simulated import BLOCK_S, SimulatedLine

RATE = 8000
CALL = FarParty(rings=2, press=[KeyPress(3.0, "123#")], hang_up_s=20.0)


def a_call(exchange: Exchange) -> None:
    exchange.off_hook()
    exchange.dialled("100", 1.0, 1.6)


def cost(seconds: float, hear: bool, rounds: int = 3) -> float:
    block = round(BLOCK_S * RATE)
    best = float("inf")
    for _ in range(rounds):
        exchange = Exchange(ExchangeOptions(default=CALL), "us", RATE)
        exchange.prepare()
        listener = Listener("us", RATE)
        a_call(exchange)
        start = time.process_time()
        for _ in range(round(seconds / BLOCK_S)):
            audio = exchange.read(block)
            if hear:
                listener.feed(audio)
        best = min(best, time.process_time() - start)
    return seconds / best


def answer_latency(country: str, answer: str, calls: int) -> list[float]:
    """Line seconds from each call's pick-up to its connect."""
    late = []
    with tempfile.TemporaryDirectory() as directory:
        line = {"name": "line1", "driver": "simulated", "time_scale": 0.0, "country": country,
                "record_dir": directory,
                "exchange": {"default": {"rings": 1, "answer": answer}}}
        gateway = Gateway(from_mapping({"line": [line]}, base_dir=Path(directory)))
        gateway.open()
        driver = gateway.lines["line1"].driver
        assert isinstance(driver, SimulatedLine) and driver.exchange is not None
        try:
            for _ in range(calls):
                call = gateway.place_call("100")
                connected = driver.exchange.now
                (picked_up,) = [e.t for e in driver.exchange.timeline if e.kind is Kind.ANSWER]
                late.append(connected - picked_up)
                gateway.hang_up(call.call_id)
        finally:
            gateway.close(5)
    return late


def key_latency(keys: int) -> list[float]:
    """Wall seconds from each far-end key's end to its DtmfEntered POST's arrival."""
    arrived: list[float] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived.append(time.monotonic())
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pressed = "".join("0123456789*#"[i % 12] for i in range(keys))
    # Answered by a polarity reversal: connected at once, the keys 2 s later.
    party = {"rings": 0, "answer": "silence", "reversal": True,
             "press": [{"at_s": 2.0, "keys": pressed, "duration_ms": 100, "gap_ms": 400}]}
    with tempfile.TemporaryDirectory() as directory:
        line = {"name": "line1", "driver": "simulated", "time_scale": 1.0,
                "record_dir": directory, "exchange": {"default": party}}
        gateway = Gateway(from_mapping({"line": [line], "server": {
            "notify_allow": ["127.0.0.1/32"]}}, base_dir=Path(directory)))
        gateway.open()
        driver = gateway.lines["line1"].driver
        assert isinstance(driver, SimulatedLine) and driver.exchange is not None
        exchange = driver.exchange
        delivered: list[tuple[float, float]] = []  # (line time at a block's end, wall)
        read = exchange.read

        def timed_read(n: int) -> np.ndarray:
            audio = read(n)
            delivered.append((exchange.now, time.monotonic()))
            return audio

        exchange.read = timed_read  # type: ignore[method-assign]
        try:
            call = gateway.place_call("1", dtmf_url=f"http://127.0.0.1:{server.server_port}/")
            deadline = time.monotonic() + 2.0 + keys * 0.5 + 10.0
            while len(arrived) < keys and time.monotonic() < deadline:
                time.sleep(0.05)
            ends = [e.t + e.ms / 1000 for e in exchange.timeline if e.kind is Kind.KEY]
            gateway.hang_up(call.call_id)
        finally:
            gateway.close(5)
            server.shutdown()
    assert len(arrived) == keys == len(ends), f"{len(arrived)} of {keys} keys posted"
    late = []
    for end, posted in zip(ends, arrived, strict=True):
        block_end, wall = next((t, w) for t, w in delivered if t >= end)
        late.append(posted - (wall - (block_end - end)))
    return late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per answer figure")
    parser.add_argument("--keys", type=int, default=40, help="far-end keys for the key figure")
    args = parser.parse_args()
    print("the far end, one line, 50 ms blocks (seconds of audio per CPU second):")
    print(f"  its audio alone: {cost(60.0, hear=False):.0f}x real time")
    print(f"  its audio, heard by the line's detectors: {cost(60.0, hear=True):.0f}x real time")
    print("far party's pick-up to the call connected (line time, "
          f"{args.calls} calls each), median / max:")
    for country in ("us", "de", "uk"):
        for answer in ("speech", "silence"):
            late = answer_latency(country, answer, args.calls)
            print(f"  {country}, answers with {answer}: {statistics.median(late) * 1000:.0f} ms"
                  f" / {max(late) * 1000:.0f} ms")
    ms = np.array(key_latency(args.keys)) * 1000
    print(f"far-end key's end to its DtmfEntered POST, simulated line in real time "
          f"({args.keys} keys): median {np.median(ms):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms")


if __name__ == "__main__":
    main()
