"""What a long call costs the simulated line's recorder: memory, disk, time.

One call of ``--commands`` SendDTMF commands of one key each (40 ms on,
50 ms off, the shortest Q.24 timing, so the most commands per second of
audio), through the driver and its StreamingRecorder as build_line
assembles them, with no waiting (``time_scale = 0``):

- Python memory held after the first 1,000 commands and after all of them
  (tracemalloc): what the call keeps in memory as it goes on;
- the recording on disk with the default ``max_record_s`` (the WAV stops
  there, the call goes on) and the event log beside it;
- the recorder's time per command (audio and event written, header brought
  up to date) against the same commands on a line that records nothing.

    python bench/bench_recording.py [--commands N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from gateway.keys import parse_keys
from gateway.lines import build_line
from gateway.lines.simulated import SimulatedLine, SimulatedOptions
from gateway.tones import Timing, ToneEngine, TonePlan, ToneSettings


def commands(line: SimulatedLine, count: int, plan: TonePlan) -> float:
    """CPU seconds for ``count`` emits of ``plan``."""
    started = time.process_time()
    for _ in range(count):
        line.emit(plan)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=20000)
    args = parser.parse_args()
    plan = TonePlan(parse_keys("5"), Timing(40, 50))
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        options = SimulatedOptions(record_dir=tmp, time_scale=0.0)
        built = build_line("simulated", "bench", options, ToneSettings())
        line, recorder = built.driver, built.recorder
        assert isinstance(line, SimulatedLine) and recorder is not None
        line.open()
        line.off_hook()
        recorder.begin("long")
        tracemalloc.start()
        recorded = commands(line, 1000, plan)
        after_first, _ = tracemalloc.get_traced_memory()
        recorded += commands(line, args.commands - 1000, plan)
        after_all, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        recorder.end("long")
        line.close()
        wav = Path(tmp) / "long.wav"
        log = Path(tmp) / "long.log"
        wav_mib, log_kib = wav.stat().st_size / 2**20, log.stat().st_size / 1024

        bare = SimulatedLine("bare", options, ToneEngine())
        bare.open()
        bare.off_hook()
        unrecorded = commands(bare, args.commands, plan)
        bare.close()

    n = args.commands
    audio_s = n * plan.seconds
    print(f"one call of {n:,} SendDTMF (1 key, 40/50 ms; {audio_s:,.0f} s of audio), "
          "simulated line:")
    print(f"  Python memory held, after 1,000 commands / after {n:,}: "
          f"{after_first / 1024:.0f} KiB / {after_all / 1024:.0f} KiB")
    print(f"  recording on disk, max_record_s = {options.max_record_s:g}: "
          f"WAV {wav_mib:.1f} MiB, event log {log_kib:.0f} KiB")
    print(f"  recorder's CPU time per command: "
          f"{(recorded - unrecorded) / n * 1e6:.0f} us (line alone {unrecorded / n * 1e6:.0f} us)")


if __name__ == "__main__":
    main()
