"""The line's detectors: cost per line as multiples of real time, and how late they speak.

Cost: one line's DTMF, call-progress and energy detection (``Listener``)
over a mixed minute (dial tone, keys, ringback, busy, speech from espeak-ng
or, without it, noise bursts), as seconds of audio per CPU second, fed in
blocks as a capture thread would (the per-block overhead is part of it); at
48 kHz the resampling to 8 kHz is included. Latency, in audio time (the
detectors count samples, so CPU speed does not enter): from a key's end to
the block whose feed returned its event, fed in 10 ms blocks; from a
tone's start to its ``tone`` event and from its last burst's end to
``tone_end``.

    python bench/bench_detect.py [--seconds N]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.detect import Dtmf, Listener, Tone, ToneEnd
from gateway.detect.resample import Resampler

RATE = 8000
LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = "123A456B789C*0#D"


def tone(hz: tuple[float, ...], seconds: float, dbm0: float = -16.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    a = 32767 * 10 ** ((dbm0 - 3.14) / 20)
    return sum((a * np.sin(2 * np.pi * f * t) for f in hz), np.zeros(len(t)))


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds))


def cadence(hz: tuple[float, ...], pattern: tuple[int, ...], seconds: float) -> np.ndarray:
    parts, total, i = [], 0.0, 0
    while total < seconds:
        s = pattern[i % len(pattern)] / 1000
        parts.append(tone(hz, s) if i % 2 == 0 else quiet(s))
        total, i = total + s, i + 1
    return np.concatenate(parts)


def speech(seconds: float) -> np.ndarray:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        rng = np.random.default_rng(1)
        bursts = [rng.normal(0, 2000, int(RATE * 0.3)) if i % 2 == 0 else quiet(0.15)
                  for i in range(int(seconds / 0.45) + 1)]
        return np.concatenate(bursts)[: int(RATE * seconds)]
    text = "Thank you for calling, all of our lines are busy, please hold the line. " * 8
    wav = subprocess.run([espeak, "-v", "en", "--stdout", text], capture_output=True,
                         check=True).stdout
    with wave.open(io.BytesIO(wav)) as src:
        rate = src.getframerate()
    words = np.frombuffer(wav[44:][: (len(wav) - 44) // 2 * 2], dtype="<i2").astype(np.float64)
    r = Resampler(rate)
    words = np.concatenate([r.feed(words), r.flush()])
    return np.resize(words, int(RATE * seconds))


def mixed_minute() -> np.ndarray:
    keys = np.concatenate([np.concatenate([tone((LOW[i // 4], HIGH[i % 4]), 0.1, -10),
                                           quiet(0.1)]) for i in range(16)])
    return np.concatenate([
        quiet(0.5), tone((350.0, 440.0), 3.0), keys, quiet(0.5),
        cadence((440.0, 480.0), (2000, 4000), 12.0), speech(35.0), quiet(1.0),
        cadence((480.0, 620.0), (500, 500), 4.8)])[: RATE * 60]


def upsample(x: np.ndarray, factor: int) -> np.ndarray:
    """To 48 kHz by zero-stuffing and a windowed-sinc low-pass (the input to measure)."""
    up = np.zeros(len(x) * factor)
    up[::factor] = x * factor
    taps = np.sinc(np.arange(-96, 97) / factor) * np.hanning(193)
    return np.convolve(up, taps / taps.sum() * 1.0 * factor / factor, mode="same")


def cost(pcm: np.ndarray, rate: int, block_ms: int, rounds: int) -> float:
    step = rate * block_ms // 1000
    blocks = [pcm[i: i + step] for i in range(0, len(pcm), step)]
    best = float("inf")
    for _ in range(rounds):
        listener = Listener("us", rate)
        start = time.process_time()
        for block in blocks:
            listener.feed(block)
        listener.flush()
        best = min(best, time.process_time() - start)
    return len(pcm) / rate / best


def key_latency(count: int) -> tuple[float, float]:
    rng = np.random.default_rng(15)
    parts, ends = [quiet(0.3)], []
    at = len(parts[0])
    for _ in range(count):
        key = KEYS[rng.integers(16)]
        on, off = rng.uniform(0.04, 0.2), rng.uniform(0.06, 0.3)
        level = rng.uniform(-30, -6)
        burst = tone((LOW[KEYS.index(key) // 4], HIGH[KEYS.index(key) % 4]), on, level)
        parts += [burst, quiet(off)]
        ends.append((at + len(burst)) / RATE)
        at += len(burst) + int(RATE * off)
    pcm = np.round(np.concatenate(parts)).astype(np.int16)
    listener, step, late = Listener("us"), RATE // 100, []
    for i in range(0, len(pcm), step):
        fed = (i + step) / RATE
        for event in listener.feed(pcm[i: i + step]):
            if isinstance(event, Dtmf):
                end = min(ends, key=lambda e: abs(e - (event.t + event.duration_ms / 1000)))
                late.append(fed - end)
    assert len(late) == count, f"{len(late)} of {count} keys heard"
    ms = np.array(late) * 1000
    return float(np.median(ms)), float(np.percentile(ms, 99))


def tone_latency(hz: tuple[float, ...], pattern: tuple[int, ...], seconds: float,
                 country: str) -> tuple[float, float]:
    body = cadence(hz, pattern, seconds) if pattern else tone(hz, seconds)
    if pattern:  # end on the end of a burst
        period = int(RATE * sum(pattern) / 1000)
        body = body[: len(body) // period * period - int(RATE * pattern[-1] / 1000)]
    pcm = np.round(np.concatenate([quiet(0.5), body, quiet(8.0)])).astype(np.int16)
    listener, step = Listener(country), RATE // 100
    start = end = None
    for i in range(0, len(pcm), step):
        for event in listener.feed(pcm[i: i + step]):
            fed = (i + step) / RATE
            if isinstance(event, Tone) and start is None:
                start = fed - 0.5
            if isinstance(event, ToneEnd) and end is None:
                end = fed - (0.5 + len(body) / RATE)
    assert start is not None and end is not None
    return start * 1000, end * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="best of N runs per figure")
    parser.add_argument("--keys", type=int, default=300, help="keys for the latency figure")
    args = parser.parse_args()
    minute = mixed_minute()
    pcm8 = np.round(minute).astype(np.int16)
    pcm48 = np.round(np.clip(upsample(minute, 6), -32768, 32767)).astype(np.int16)
    print("cost per line, DTMF + call progress + energy (seconds of audio per CPU second):")
    for block in (20, 100):
        print(f"  8 kHz, {block} ms blocks: {cost(pcm8, 8000, block, args.rounds):.0f}x real time")
    print(f"  48 kHz with resampling, 100 ms blocks: {cost(pcm48, 48000, 100, args.rounds):.0f}x"
          " real time")
    median, p99 = key_latency(args.keys)
    print(f"latency from a key's end to its event, 10 ms blocks ({args.keys} keys of 40-200 ms): "
          f"median {median:.0f} ms, p99 {p99:.0f} ms")
    print("call-progress latency (audio time), tone's start to its event / last burst's end "
          "to tone_end:")
    for what, hz, pattern, country in (("us busy", (480.0, 620.0), (500, 500), "us"),
                                       ("us ringback", (440.0, 480.0), (2000, 4000), "us"),
                                       ("us dial", (350.0, 440.0), (), "us"),
                                       ("de dial", (425.0,), (), "de")):
        start, end = tone_latency(hz, pattern, 13.0 if pattern else 4.0, country)
        print(f"  {what}: {start:.0f} ms / {end:.0f} ms")


if __name__ == "__main__":
    main()
