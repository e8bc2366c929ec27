"""Synthesis speed: seconds of audio per CPU second, the tone engine against sox.

Both render the same 128-digit string (default timing, 100 ms on / 100 ms
off): the engine in this process, sox as `sox -n ... synth` with one effect
chain per digit. CPU time is user+system of this process or of the sox child.

    python bench/bench_synthesis.py [--repeat N]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from gateway.keys import parse_keys
from gateway.tones import FREQUENCIES, ToneEngine, TonePlan, ToneSettings

KEYS = ("0123456789*#ABCD" * 8)[:128]


def engine_speed(rate: int, repeat: int) -> float:
    plan = TonePlan(parse_keys(KEYS))
    # A fresh engine each round: the burst cache would otherwise make every
    # round after the first a pure concatenation.
    start = time.process_time()
    for _ in range(repeat):
        ToneEngine(ToneSettings(rate=rate)).render(plan)
    cpu = time.process_time() - start
    return plan.seconds * repeat / cpu


def sox_speed(rate: int, repeat: int) -> float | None:
    if shutil.which("sox") is None:
        return None
    chains: list[str] = []
    for key in KEYS:
        low, high = FREQUENCIES[key]
        chains += ["synth", "0.1", "sine", str(low), "sine", str(high), "remix", "-",
                   "pad", "0", "0.1", ":"]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "s.wav")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(repeat):
            subprocess.run(["sox", "-V1", "-D", "-n", "-r", str(rate), "-b", "16", "-c", "1", out,
                            *chains[:-1]], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return 128 * 0.2 * repeat / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{'rate':>6} {'engine x realtime':>18} {'sox x realtime':>15} {'engine/sox':>11}")
    for rate in (8000, 48000):
        ours = engine_speed(rate, args.repeat)
        theirs = sox_speed(rate, max(1, args.repeat // 4))
        ratio = f"{ours / theirs:10.1f}x" if theirs else "  (no sox)"
        sox_col = f"{theirs:15.0f}" if theirs else f"{'-':>15}"
        print(f"{rate:>6} {ours:18.0f} {sox_col} {ratio}")


if __name__ == "__main__":
    main()
