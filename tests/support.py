"""Test helpers that talk to real, independent tools (multimon-ng, sox)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.errors import LineFault

MULTIMON = shutil.which("multimon-ng")
needs_multimon = pytest.mark.skipif(
    MULTIMON is None and not __import__("os").environ.get("CI"),
    reason="multimon-ng is not installed (apt-get install multimon-ng)",
)

DECODER_RATE = 22050  # multimon-ng's native input rate


Pcm = npt.NDArray[np.int16]


def resample(samples: Pcm, rate: int, to: int = DECODER_RATE) -> Pcm:
    """Linear-interpolation resampling: enough for DTMF, which sits below 1.7 kHz."""
    if rate == to:
        return samples
    n_out = int(len(samples) * to / rate)
    t_out = np.arange(n_out) * (rate / to)
    return np.round(np.interp(t_out, np.arange(len(samples)), samples.astype(np.float64))).astype(
        np.int16
    )


def multimon_decode(samples: npt.NDArray[np.int16], rate: int) -> str:
    """Decode mono PCM with multimon-ng's DTMF demodulator; the keys it heard, in order.

    Silence is added either side so the decoder sees a first and last digit whole.
    """
    if MULTIMON is None:
        raise RuntimeError("multimon-ng is not installed (apt-get install multimon-ng)")
    if samples.ndim != 1:
        raise ValueError("decode one channel at a time")
    pad = np.zeros(DECODER_RATE // 5, dtype=np.int16)
    pcm = np.concatenate([pad, resample(samples, rate), pad]).astype("<i2").tobytes()
    out = subprocess.run(
        [MULTIMON, "-q", "-a", "DTMF", "-t", "raw", "-"],
        input=pcm,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return "".join(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("DTMF:")
    )


def decode_wav(path: str | Path, channel: int = 0) -> str:
    """Decode one channel of a 16-bit WAV file."""
    from gateway.tones import read_wav

    samples, rate = read_wav(path)
    if samples.ndim == 2:
        samples = np.ascontiguousarray(samples[:, channel])
    return multimon_decode(samples, rate)


def decode_raw(path: str | Path, rate: int, channels: int = 1, channel: int = 0) -> str:
    """Decode raw little-endian int16 interleaved PCM (an ALSA ``file`` plugin's output)."""
    data = np.fromfile(str(path), dtype="<i2").astype(np.int16)
    if channels > 1:
        frames = data[: len(data) // channels * channels].reshape(-1, channels)
        data = np.ascontiguousarray(frames[:, channel])
    return multimon_decode(data, rate)


class Receiver:
    """An integrator's web server on loopback (``host``): records the
    notifications POSTed to it and answers each path with the body set in
    ``answers`` (404 if none). ``delays`` holds the answer to a path back that
    many seconds."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        import http.server
        import threading
        import urllib.parse

        self.received: list[tuple[str, dict[str, str]]] = []
        self.authorization: list[str] = []
        self.answers: dict[str, str] = {}
        self.delays: dict[str, float] = {}
        self.event = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                with receiver.event:
                    receiver.authorization.append(self.headers.get("Authorization", ""))
                    receiver.received.append((self.path, form))
                    receiver.event.notify_all()
                delay = receiver.delays.get(self.path)
                if delay:
                    import time

                    time.sleep(delay)
                body = receiver.answers.get(self.path)
                try:
                    if body is None:
                        self.send_error(404)
                        return
                    data = body.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the gateway gave up waiting: that is what some tests want

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, name: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, str]]:
        """The first ``count`` notifications named ``name`` (waits for them)."""
        import time

        deadline = time.monotonic() + timeout
        with self.event:
            while True:
                found = [f for _, f in self.received if f.get("NotificationName") == name]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} notification within {timeout} s: "
                                         f"{self.received}")
                self.event.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Told:
    """What a line's ears told the call layer (a ``LineHandler``), recorded:
    the rings, the far end leaving, the keys with their durations and the
    faults. ``changed`` is set when the far end leaves or a fault comes.
    ``faults_fail``: a fault is a failure of the test (raised in the ears'
    thread) rather than recorded."""

    def __init__(self, *, faults_fail: bool = False) -> None:
        self.rings = 0
        self.rang = threading.Event()
        self.left: list[str] = []
        self.keys: list[tuple[str, int]] = []
        self.faults: list[LineFault] = []
        self.changed = threading.Event()
        self._faults_fail = faults_fail

    def ringing(self) -> None:
        self.rings += 1
        self.rang.set()

    def far_end_left(self, why: str) -> None:
        self.left.append(why)
        self.changed.set()

    def key(self, key: str, duration_ms: int) -> None:
        self.keys.append((key, duration_ms))

    def fault(self, exc: LineFault) -> None:
        if self._faults_fail:
            raise AssertionError(f"no fault expected: {exc}")
        self.faults.append(exc)
        self.changed.set()


def hold_first_emit(
    driver: Any, timeout: float = 60.0
) -> tuple[threading.Event, threading.Event]:
    """Make ``driver``'s next emit wait until the returned ``gate`` is set.

    Returns ``(gate, holding)``: ``holding`` is set once the held emit has
    started, so a test knows the line is busy with that command and can judge
    what queues behind it without depending on the machine's speed.
    """
    gate, holding = threading.Event(), threading.Event()
    emit = driver.emit

    def held_emit(*args: Any, **kwargs: Any) -> None:
        if not holding.is_set():
            holding.set()
            assert gate.wait(timeout), "the held emit was never released"
        emit(*args, **kwargs)

    driver.emit = held_emit
    return gate, holding


EXAMPLE_CONFIG = Path(__file__).parent.parent / "deploy" / "gateway.example.toml"


def example_line_block(name: str) -> dict[str, Any]:
    """The commented-out ``[[line]]`` block named ``name`` in the example
    configuration, uncommented and parsed as TOML."""
    import tomllib

    text = EXAMPLE_CONFIG.read_text()
    start = text.index(f'# [[line]]\n# name = "{name}"')
    end = text.find("\n\n", start)
    block = text[start : end if end >= 0 else len(text)]
    parsed: dict[str, Any] = tomllib.loads("\n".join(ln[2:] for ln in block.splitlines()))
    return parsed


def load_script(path: Path) -> ModuleType:
    """A script of the repository that is not in a package (bench/, firmware-notes/), imported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEED_EXAMPLE = Path(__file__).parent / "data" / "seed-senddtmf-example.txt"


def seed_example() -> tuple[str, str]:
    """The seed's SendDTMF example, as the seed gives it: the request URL, and
    the answer with its whitespace folded to single spaces."""
    lines = SEED_EXAMPLE.read_text().splitlines()
    return lines[lines.index("URL request") + 1], lines[lines.index("Response") + 1]
