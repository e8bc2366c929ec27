"""A far end for the alsa line: what it plays (built from sox and espeak-ng
parts), and a phone line that runs in real time between two FIFOs.

:class:`FarEnd` assembles the far end's audio from off hook on, part by
part, from values a test types in; it knows nothing of the gateway's tone
engine or its detectors' tables. :class:`PhoneLine` is a sound card and its
line in one: it drains what the gateway plays (a playback tap on a FIFO) at
the card's pace, and writes into the capture's infile (another FIFO), in
real time, the far end's audio plus the echo of what the gateway played,
attenuated and a few milliseconds late, as a line's hybrid returns it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests import sox_signals as sx

Pcm = npt.NDArray[np.int16]


class FarEnd:
    """The far end's audio from the moment the line goes off hook."""

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        self._parts: list[Pcm] = []
        #: Named moments (seconds from off hook), for the test to assert against.
        self.marks: dict[str, float] = {}

    @property
    def seconds(self) -> float:
        return sum(len(p) for p in self._parts) / self.rate

    def mark(self, name: str) -> FarEnd:
        self.marks[name] = self.seconds
        return self

    def silence(self, seconds: float) -> FarEnd:
        self._parts.append(np.zeros(round(seconds * self.rate), dtype=np.int16))
        return self

    def tone(self, hz: Sequence[float], seconds: float, pattern_ms: Sequence[int] = (),
             level: float = -13.0) -> FarEnd:
        """``hz`` together for ``seconds``: steady, or in ``pattern_ms`` (on,
        off, ...) repeated; ``level`` dBm0 for one tone (3 dB less each for two)."""
        parts = (sx.cadence(hz, pattern_ms, seconds, level) if pattern_ms else
                 [(seconds, [(f, level - (3.0 if len(hz) > 1 else 0.0)) for f in hz])])
        self._parts.append(sx.synth(parts, self.rate))
        return self

    def sequence(self, parts: Sequence[tuple[float, float]], level: float = -13.0) -> FarEnd:
        """Single tones one after another: (Hz, seconds) each, 0 Hz for silence."""
        self._parts.append(sx.synth([(s, [(hz, level)] if hz else []) for hz, s in parts],
                                    self.rate))
        return self

    def speech(self, text: str, voice: str = "en-us") -> FarEnd:
        pcm, rate = sx.speech(text, voice)
        self._parts.append(pcm if rate == self.rate else sx.resample(pcm, rate, self.rate))
        return self

    def keys(self, keys: str, on_s: float = 0.08, off_s: float = 0.12,
             level: float = -20.0) -> FarEnd:
        self._parts.append(sx.synth(sx.keys(keys, on_s, off_s, level, lead_s=0.0), self.rate))
        return self

    def then(self, other: FarEnd) -> FarEnd:
        """``other``'s audio after this."""
        self._parts.append(other.pcm())
        return self

    def pcm(self) -> Pcm:
        return np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.int16)

    def write(self, path: Path) -> Path:
        self.pcm().astype("<i2").tofile(path)
        return path


#: How often the line moves audio: a card's period, coarse enough for Python.
TICK_S = 0.02


class PhoneLine:
    """The line between a playback FIFO (what the gateway plays) and a
    capture FIFO (the capture's infile), run in real time on a thread.

    While ``off_hook()`` says the gateway holds the line, each tick writes
    the next 20 ms of the far end (``far``, then silence; ``say`` mixes more
    in from now) plus the echo of what the gateway played. On hook the
    capture FIFO is only kept from running dry (a reader waiting in it is
    released), so a new call starts with next to nothing stale in it.
    """

    def __init__(self, playback: Path, capture: Path, rate: int, far: Pcm,
                 off_hook: Callable[[], bool], echo_loss_db: float = 12.0,
                 echo_delay_s: float = 0.005) -> None:
        self.rate = rate
        self.far = far.astype(np.float64)
        self._off_hook = off_hook
        self._gain = 10 ** (-echo_loss_db / 20)
        self._delay = round(echo_delay_s * rate)
        self._chunk = round(TICK_S * rate)
        for fifo in (playback, capture):
            if not fifo.exists():
                os.mkfifo(fifo)
        # Read-write ends: opening never waits for the other side, and the
        # other side's open never waits for us.
        self._play_fd = os.open(playback, os.O_RDWR | os.O_NONBLOCK)
        self._cap_fd = os.open(capture, os.O_RDWR | os.O_NONBLOCK)
        for fd in (self._play_fd, self._cap_fd):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)
        self._lock = threading.Lock()
        self._extra = np.zeros(0)
        self._echo = np.zeros(self._delay)
        self._pending = b""
        #: Wall time (monotonic) of far-end sample 0 in the current (or last) call.
        self.started_at: float | None = None
        self._in_call = False
        #: Far-end samples written in the current call.
        self.position = 0
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phone-line", daemon=True)
        self._thread.start()

    def next_call(self, far: Pcm) -> None:
        """What the far end plays in the calls from the next off hook on."""
        with self._lock:
            self.far = far.astype(np.float64)

    @property
    def in_call(self) -> bool:
        """The line has seen the gateway off hook and not yet back on hook
        (it looks once a tick: a hook flash shorter than that goes unseen)."""
        return self._in_call

    def at(self, seconds: float) -> float | None:
        """The wall time (monotonic) at which far-end time ``seconds`` went on
        the line, in the current (or the last) call; None before any."""
        return None if self.started_at is None else self.started_at + seconds

    def say(self, pcm: Pcm, lead_s: float = 0.05) -> float:
        """Mix ``pcm`` into the far end from ``lead_s`` from now; its far-end time."""
        with self._lock:
            start = self.position + round(lead_s * self.rate)
            offset = start - self.position
            extra = np.zeros(max(len(self._extra), offset + len(pcm)))
            extra[: len(self._extra)] += self._extra
            extra[offset: offset + len(pcm)] += pcm
            self._extra = extra
        return start / self.rate

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in (self._play_fd, self._cap_fd):
            os.close(fd)

    # -- the thread ------------------------------------------------------------------
    def _played(self) -> npt.NDArray[np.float64]:
        """One tick of what the gateway played (a card takes a period a tick)."""
        want = self._chunk * 2 - len(self._pending)
        with contextlib.suppress(BlockingIOError):
            self._pending += os.read(self._play_fd, want) if want > 0 else b""
        take, self._pending = self._pending[: self._chunk * 2], self._pending[self._chunk * 2:]
        out = np.zeros(self._chunk)
        got = np.frombuffer(take[: len(take) // 2 * 2], dtype="<i2")
        out[: len(got)] = got
        return out

    def _tick(self) -> None:
        played = self._played()
        if not self._off_hook():
            if self._in_call:
                self._in_call = False
                self._echo = np.zeros(self._delay)
            if _unread(self._cap_fd) == 0:
                self._write(np.zeros(self._chunk))
            return
        if not self._in_call:
            _drain(self._cap_fd)
            with self._lock:
                self.position = 0
                self._extra = np.zeros(0)
            self.started_at = time.monotonic()
            self._in_call = True
            self.calls += 1
        with self._lock:
            n, pos = self._chunk, self.position
            out = np.zeros(n)
            far = self.far[pos: pos + n]
            out[: len(far)] += far
            extra, self._extra = self._extra[:n], self._extra[n:]
            out[: len(extra)] += extra
            self.position += n
        self._echo = np.concatenate([self._echo, played * self._gain])
        out += self._echo[:n]
        self._echo = self._echo[n:]
        self._write(out)

    def _write(self, samples: npt.NDArray[np.float64]) -> None:
        data = np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()
        try:
            os.write(self._cap_fd, data)
        except BlockingIOError:
            pass  # nobody reads (a capture that failed): the card's ADC runs on
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._tick()
            next_at += TICK_S
            # Late (a loaded machine): catch up tick by tick, as a card's
            # buffer hands over what it took meanwhile.
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return


def _unread(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 65536):
            pass
