"""The alsa line's hearing: answer detection through the API, and the capture thread's cost.

- answer detection: the far end's pick-up to the CallConnected notification
  arriving at the integrator's URL, median and p99, on alsa lines whose
  capture is paced in real time: a FIFO behind the ALSA file plugin's
  infile, written 20 ms at a time as a card's ADC delivers (tests/alsa_line.py:
  the far end's tones by sox, its speech by espeak-ng, the gateway's own
  audio echoed back). Each call rings once or twice (US ringback, 2 s on,
  4 s off); the far end picks up at a random moment 0.3-3.7 s into the
  silence after the last ring, and says hello. The set-up takes an answer
  once it has stood 2 s (confirm_s) after the ringback stopped, so a late
  pick-up is confirmed sooner after it than an early one. The pick-up's
  wall time is known to the line's 20 ms tick.
- capture thread CPU per second of audio: an ALSA capture PCM read as fast
  as it delivers (a file PCM, not paced) into the line's ears (resampling,
  DTMF, call progress, energy), on the far end's tones and speech; and the
  ALSA read alone.

    python bench/bench_capture.py [--calls N] [--lines N] [--seconds S]
"""

from __future__ import annotations

import argparse
import http.server
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_api import percentile  # beside this script

from gateway.app import create_app
from gateway.auth import save_user
from gateway.config import build, from_mapping
from gateway.lines.alsa_capture import AlsaCapture, CaptureOptions
from gateway.lines.gpio import pin_factory
from gateway.lines.hearing import CaptureLoop, Ears, Hears
from tests.alsa_line import FarEnd, PhoneLine

USER, PASSWORD = "bench", "bench-password"
RATE = 8000
DIAL, RINGBACK, RING_CADENCE = (350.0, 440.0), (440.0, 480.0), (2000, 4000)


def scenario(rng: random.Random, hello: FarEnd) -> tuple[FarEnd, float]:
    """The far end of one call, and the moment (line seconds) it picks up."""
    rings = rng.choice((1, 2))
    far = FarEnd(RATE).tone(DIAL, 1.2).silence(1.0).tone(RINGBACK, 6.0 * rings - 4.0,
                                                          RING_CADENCE)
    far.silence(rng.uniform(0.3, 3.7))
    pick_up = far.seconds
    return far.then(hello).silence(10.0), pick_up


class Receiver:
    """The integrator's URL: CallConnected arrival times by line; its answer hangs up."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = time.monotonic()
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                with receiver.cond:
                    receiver.arrivals[form.get("CallId", "")] = now
                    receiver.cond.notify_all()
                body = b"<Response><Hangup></Hangup></Response>"
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/connected"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def answer_latency(tmp: Path, calls: int, lines: int) -> list[float]:
    asoundrc = ""
    for i in range(lines):
        asoundrc += (
            f'pcm.hat{i}_out {{ type file slave.pcm {{ type null }} '
            f'file "{tmp}/played{i}.fifo" format "raw" }}\n'
            f'pcm.hat{i}_in {{ type file slave.pcm {{ type null }} '
            f'infile "{tmp}/far{i}.fifo" file "/dev/null" format "raw" }}\n'
            f'pcm.hat{i} {{ type asym playback.pcm "hat{i}_out" capture.pcm "hat{i}_in" }}\n')
    (tmp / "asoundrc").write_text(asoundrc)
    os.environ["ALSA_CONFIG_PATH"] = str(tmp / "asoundrc")
    relays = [5 + i for i in range(lines)]
    mock = pin_factory("mock")
    phone_lines = []
    for i, relay in enumerate(relays):
        pin = mock.pin(relay)
        phone_lines.append(PhoneLine(tmp / f"played{i}.fifo", tmp / f"far{i}.fifo", RATE,
                                     np.zeros(0, dtype=np.int16),
                                     off_hook=lambda p=pin: bool(p.state)))
    save_user(tmp / "users.toml", USER, PASSWORD)
    config = from_mapping({
        "server": {"notify_allow": ["127.0.0.1/32"]},
        "line": [{"name": f"hat{i}", "driver": "alsa", "device": f"hat{i}", "rate": RATE,
                  "gpio": {"pin_factory": "mock", "hook_relay_pin": relay, "hook_settle_ms": 0}}
                 for i, relay in enumerate(relays)]}, base_dir=tmp)
    app = create_app(config)
    gateway = app.extensions["dtmf_gateway"]
    receiver = Receiver()
    rng = random.Random(15)
    hello = FarEnd(RATE).speech("Hello, this is the test line.")
    latencies: list[float] = []
    try:
        for _ in range(calls):
            pick_ups = {}
            for i, line in enumerate(phone_lines):
                far, pick_ups[f"hat{i}"] = scenario(rng, hello)
                line.next_call(far.pcm())
            answers: list[Any] = []

            def call(answers: list[Any] = answers) -> None:
                client = app.test_client()
                answers.append(client.get("/api", query_string={
                    "command": "Call", "Dialed": "5551234", "Url": receiver.url,
                    "Username": USER, "Password": PASSWORD}).data)

            threads = [threading.Thread(target=call) for _ in phone_lines]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            for body in answers:
                if b"<Code>200</Code>" not in body:
                    raise SystemExit(f"a call did not connect: {body.decode()}")
            # Ended, and each line has seen its relay drop (the next call
            # then starts its far end afresh).
            while gateway.active_calls() or any(line.in_call for line in phone_lines):
                time.sleep(0.05)
            for ended in list(gateway.recent)[-lines:]:
                with receiver.cond:
                    arrived = receiver.arrivals[ended.call_id]
                picked_up = phone_lines[int(ended.line.removeprefix("hat"))].at(
                    pick_ups[ended.line])
                assert picked_up is not None
                latencies.append(arrived - picked_up)
    finally:
        gateway.close(5)
        for line in phone_lines:
            line.close()
        receiver.server.shutdown()
    return latencies


class Limited:
    """A capture source that ends after ``frames`` (a file PCM never does)."""

    def __init__(self, source: AlsaCapture, frames: int) -> None:
        self.source = source
        self.rate = source.rate
        self.left = frames
        self.done = threading.Event()

    def read(self) -> Any:
        if self.left <= 0:
            self.done.set()
            return np.zeros(0, dtype=np.int16)
        block = self.source.read()
        self.left -= len(block)
        return block

    def close(self) -> None:
        self.source.close()


def capture_cpu(tmp: Path, rate: int, channels: int, seconds: float) -> tuple[float, float]:
    """CPU seconds per second of audio: the line's capture loop reading a
    file PCM unpaced into its ears, and the ALSA reads alone."""
    hello = FarEnd(rate).speech("Hello, you have reached the test line. Please hold.")
    far = FarEnd(rate)
    while far.seconds < seconds:
        far.tone(DIAL, 1.0).tone(RINGBACK, 8.0, RING_CADENCE).then(hello).keys("1#").silence(1)
    mono = far.pcm()[: round(seconds * rate)]
    np.repeat(mono[:, None], channels, axis=1).astype("<i2").tofile(tmp / f"cpu{rate}.raw")
    # A file of its own: alsa-lib may not see a rewritten one change.
    (tmp / f"asoundrc-cpu{rate}").write_text(
        f'pcm.cpu {{ type file slave.pcm {{ type null }} infile "{tmp}/cpu{rate}.raw" '
        'file "/dev/null" format "raw" }\n')
    os.environ["ALSA_CONFIG_PATH"] = str(tmp / f"asoundrc-cpu{rate}")
    import alsaaudio

    options = build(CaptureOptions, {"channels": channels})
    sources: list[Limited] = []

    def open_source() -> Limited:
        sources.append(Limited(AlsaCapture(alsaaudio, "cpu", rate, options), len(mono)))
        return sources[-1]

    ears = Ears("bench", Hears.TONES | Hears.VOICE | Hears.KEYS, rate=rate)
    loop = CaptureLoop("bench", open_source, ears, speed=0)  # 0: not paced
    cpu = time.process_time()
    loop.start()
    if not sources[-1].done.wait(600):
        raise SystemExit("the capture loop did not finish")
    with_ears = time.process_time() - cpu
    loop.stop()

    source = open_source()
    cpu = time.process_time()
    while len(source.read()):
        pass
    alone = time.process_time() - cpu
    source.close()
    return with_ears / seconds, alone / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=6, help="calls per line")
    parser.add_argument("--lines", type=int, default=4, help="lines called at once")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio for the CPU figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        latencies = answer_latency(tmp, args.calls, args.lines)
        ms = [x * 1000 for x in latencies]
        print(f"answer detection, far end's pick-up to CallConnected ({len(ms)} calls, "
              f"{args.lines} lines at once): median {statistics.median(ms):.0f} ms, "
              f"p99 {percentile(ms, 99):.0f} ms, min {min(ms):.0f} ms, max {max(ms):.0f} ms")
        print("capture thread CPU per second of audio:")
        for rate, channels in ((8000, 1), (48000, 2)):
            with_ears, alone = capture_cpu(tmp, rate, channels, args.seconds)
            print(f"  {rate} Hz, {channels} channel(s): {with_ears * 1000:.2f} ms "
                  f"({with_ears * 100:.2f} % of a core), the ALSA reads alone "
                  f"{alone * 1000:.2f} ms")


if __name__ == "__main__":
    main()
