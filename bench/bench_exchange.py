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

    python bench/bench_exchange.py [--calls N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per answer figure")
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


if __name__ == "__main__":
    main()
