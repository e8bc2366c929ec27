"""The alsa line's own costs, on an ALSA file PCM with a null slave.

A null slave takes audio as fast as it comes, so these are the gateway's
costs, not the card's: add the ALSA buffer (40 ms at most, see
``status()["buffer_ms"]``) for the first sample to reach a real DAC.

- command to first audio: emit() called -> first frames accepted by ALSA
  (render, routing, the first write), for 1 key and for 128 keys;
- write loop CPU: CPU time per second of audio played (48 kHz stereo);
- Speak: speak() called -> first frames accepted (espeak-ng, resampling).

    python bench/bench_alsa.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.config import build
from gateway.keys import parse_keys
from gateway.lines.alsa import AlsaLine, AlsaOptions
from gateway.lines.base import Party
from gateway.tones import ToneEngine, TonePlan, ToneSettings

SENTENCE = "Your gate code is one two three four. Thank you for calling."


class FirstWrite:
    """Wraps the line's PCM to stamp the first write that ALSA accepted."""

    def __init__(self, pcm: Any) -> None:
        self.pcm = pcm
        self.first: float | None = None

    def write(self, data: Any) -> int:
        n: int = self.pcm.write(data)
        if n > 0 and self.first is None:
            self.first = time.perf_counter()
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pcm, name)


def line(tmp: Path, rate: int, channels: int) -> AlsaLine:
    # The playback side's own costs: the capture's are bench_capture.py's.
    opts = build(AlsaOptions, {"device": "tap", "rate": rate, "capture": {"enabled": False},
                               "routing": {"channels": channels}})
    driver = AlsaLine("bench", opts, ToneEngine(ToneSettings()))
    driver.open()
    driver.off_hook()
    return driver


def first_audio(driver: AlsaLine, action: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        probe = FirstWrite(driver._pcm)
        driver._pcm = probe
        start = time.perf_counter()
        action()
        driver._pcm = probe.pcm
        assert probe.first is not None
        times.append((probe.first - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "asoundrc").write_text(
            f'pcm.tap {{ type file slave.pcm {{ type null }} file "{tmp}/out.raw" '
            'format "raw" }\n')
        os.environ["ALSA_CONFIG_PATH"] = str(tmp / "asoundrc")

        print("command to first audio accepted by ALSA (ms), median / p95 / max")
        for rate in (8000, 48000):
            driver = line(tmp, rate, 1)
            for keys in ("5", ("0123456789*#ABCD" * 8)[:128]):
                plan = TonePlan(parse_keys(keys))
                t = sorted(first_audio(driver, lambda p=plan, d=driver: d.emit(p), args.repeat))
                p95 = t[int(len(t) * 0.95) - 1]
                print(f"  {rate:>5} Hz, {len(keys):>3} keys: "
                      f"{statistics.median(t):6.2f} / {p95:6.2f} / {t[-1]:6.2f}")
            driver.close()

        driver = line(tmp, 48000, 2)
        plan = TonePlan(parse_keys(("0123456789*#ABCD" * 8)[:128]))
        audio = driver.engine.render(plan)
        cpu = time.process_time()
        for _ in range(max(1, args.repeat // 10)):
            driver._play(audio, Party.ALL)
        cpu = time.process_time() - cpu
        seconds = plan.seconds * max(1, args.repeat // 10)
        print(f"write loop, 48 kHz stereo: {cpu / seconds * 1e6:.0f} us CPU per second of audio")
        driver.close()

        if shutil.which("espeak-ng"):
            print(f"Speak ({len(SENTENCE)} characters) to first audio (ms), median / max")
            for rate in (8000, 48000):
                driver = line(tmp, rate, 1)
                t = sorted(first_audio(driver, lambda d=driver: d.speak(SENTENCE, "en"),
                                       max(3, args.repeat // 10)))
                print(f"  {rate:>5} Hz: {statistics.median(t):6.1f} / {t[-1]:6.1f}")
                driver.close()


if __name__ == "__main__":
    main()
