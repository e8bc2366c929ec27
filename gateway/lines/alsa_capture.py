"""The audio HAT's receive side: what the line brings back, read from an ALSA capture PCM.

One :class:`AlsaCapture` is opened when the line goes off hook and closed
on hook; the line's :class:`~gateway.lines.hearing.CaptureLoop` reads it on
a thread of its own and feeds the detectors blocks of about 100 ms (their
cost is per call, not per sample).

Like the playback side, the PCM is opened non-blocking and every wait is
bounded. An overrun (the reader fell behind and ALSA dropped the buffer:
``EPIPE``) is counted and recovered; the frames lost are put back as
silence of the same length, so the line's timeline (samples since off
hook) stays the wall clock's and a cadence or a key's echo is not shifted.
Any other ALSA error, or a device that delivers nothing for a while (a
codec whose clock stopped), is a :class:`~gateway.errors.LineFault`.

Positions: :attr:`AlsaCapture.position` is the line time of the next frame
the device will hand over. A sound played now reaches the ADC before that
frame is read, but it may be up to the capture buffer (frames captured and
not yet read) later on the timeline: :attr:`AlsaCapture.lag_s` bounds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.errors import LineFault
from gateway.tones import SAMPLE_RATES, Samples

log = logging.getLogger(__name__)

#: What the detectors are fed at a time (their cost is per call).
BLOCK_S = 0.1
#: A device that delivers nothing for this long (or two buffers, if longer) has stopped.
STALL_S = 0.5
#: At most this much silence stands in for what an overrun lost; a longer
#: gap is the stall above, not an overrun.
MAX_GAP_S = 2.0
#: The most audio the capture buffer may hold: it bounds how late on the
#: line's timeline the echo of the gateway's own keys can appear.
MAX_BUFFER_MS = 500


@dataclass
class CaptureOptions:
    """``[line.capture]``: what the line hears, and from where."""

    #: false: the line hears nothing (no input wired): calls keep the fixed
    #: waits of ``call_timing`` and the far end's keys are not heard.
    enabled: bool = True
    #: ALSA PCM to capture from; "" is the line's own ``device`` (the HAT's
    #: capture side), e.g. "plughw:CARD=Device,DEV=0" for a USB card's input.
    device: str = ""
    #: Capture rate; 0 is the line's playback ``rate``.
    rate: int = field(default=0, metadata={"min": 0, "max": 48000})
    #: Channels to open; a codec's ``hw:`` capture is often two.
    channels: int = field(default=1, metadata={"min": 1, "max": 8})
    #: Which of them is the line (0 = left).
    channel: int = field(default=0, metadata={"min": 0, "max": 7})
    #: Frames per ALSA period; default 10 ms at the capture rate.
    period_size: int | None = field(default=None, metadata={"min": 16, "max": 8192})
    #: The capture buffer, in periods: the reader may fall behind this long
    #: before an overrun; the echo window of the gateway's own keys widens by as much.
    periods: int = field(default=10, metadata={"min": 2, "max": 64})

    def __post_init__(self) -> None:
        if self.rate and self.rate not in SAMPLE_RATES:
            raise ValueError(f"rate: {self.rate} is not 0 (the playback rate) or one of "
                             f"{', '.join(map(str, SAMPLE_RATES))}")
        if self.channel >= self.channels:
            raise ValueError(f"channel: {self.channel} does not exist on a "
                             f"{self.channels}-channel capture (0 to {self.channels - 1})")
        if self.rate:
            self.check_buffer(self.rate)

    def frames_per_period(self, rate: int) -> int:
        return self.period_size if self.period_size is not None else rate // 100

    def check_buffer(self, rate: int) -> None:
        """ValueError when the buffer at ``rate`` is longer than MAX_BUFFER_MS."""
        buffer_ms = self.frames_per_period(rate) * self.periods * 1000 / rate
        if buffer_ms > MAX_BUFFER_MS:
            raise ValueError(
                f"periods: {self.periods} periods of {self.frames_per_period(rate)} frames at "
                f"{rate} Hz buffer {buffer_ms:g} ms; at most {MAX_BUFFER_MS} ms, or the echo "
                "of the gateway's own keys cannot be told from the far end's"
            )


class AlsaCapture:
    """A capture PCM as a :class:`~gateway.lines.hearing.CaptureSource`:
    blocks of the line's channel, mono int16, at :attr:`rate`.

    ``read`` is for one thread (the capture loop's); ``close`` is safe from
    any thread, at any moment, and twice.
    """

    def __init__(self, alsa: Any, device: str, rate: int, options: CaptureOptions,
                 on_overrun: Callable[[], None] = lambda: None) -> None:
        self.device = device
        self.rate = rate
        self.channel = options.channel
        self._channels = options.channels
        self._alsa = alsa
        self._on_overrun = on_overrun
        self._where = f"ALSA capture device {device!r}"
        try:
            self._pcm: Any = alsa.PCM(
                type=alsa.PCM_CAPTURE,
                mode=alsa.PCM_NONBLOCK,
                device=device,
                rate=rate,
                channels=options.channels,
                format=alsa.PCM_FORMAT_S16_LE,
                periodsize=options.frames_per_period(rate),
                periods=options.periods,
            )
        except alsa.ALSAAudioError as exc:
            raise LineFault(f"{self._where}: {exc} (on a card without an input, set "
                            "capture.enabled = false)") from exc
        info = self._pcm.info()
        got = (info["rate"], info["channels"], info["format_name"])
        if got != (rate, options.channels, "S16_LE"):
            self._pcm.close()
            raise LineFault(
                f"{self._where} captures {got[0]} Hz, {got[1]} channel(s), {got[2]}, not "
                f"{rate} Hz, {options.channels} channel(s), S16_LE: use its plughw: name, or "
                "set capture.rate and capture.channels to what it captures"
            )
        self.period_frames = int(info["period_size"])
        self.buffer_frames = int(info["buffer_size"])
        self._block_frames = max(round(rate * BLOCK_S), self.period_frames)
        self._stall_s = max(STALL_S, 2 * self.buffer_frames / rate)
        #: Frames handed over since the device was opened (gaps included).
        self.frames = 0
        self.overruns = 0
        self._lock = threading.Lock()  # one caller inside the PCM at a time
        self._closed = threading.Event()
        self._last_data = time.monotonic()
        #: Until when (monotonic) the timeline holds what the card heard.
        self._filled_to = self._last_data
        self._lost_since: float | None = None

    @property
    def position(self) -> float:
        """Line time of the next frame to be read (seconds since it was opened)."""
        return self.frames / self.rate

    @property
    def lag_s(self) -> float:
        """How much later than :attr:`position` a sound on the line now may
        lie on the timeline: the frames the device may hold unread."""
        return self.buffer_frames / self.rate

    def read(self) -> Samples:
        """About 100 ms of the line's channel; an empty block once closed.
        Raises LineFault when the device fails or stops delivering."""
        parts: list[Samples] = []
        got = 0
        while got < self._block_frames:
            if self._closed.is_set():
                return np.zeros(0, dtype=np.int16)
            with self._lock:
                if self._closed.is_set():
                    return np.zeros(0, dtype=np.int16)
                if self._lost_since is not None:
                    # This read restarts the stream an overrun stopped: what
                    # the card heard meanwhile is gone; silence keeps its place.
                    restart = time.monotonic()
                    gap = min(round((restart - self._lost_since) * self.rate),
                              round(MAX_GAP_S * self.rate))
                    self._lost_since = None
                    self._filled_to = restart
                    parts.append(np.zeros(gap, dtype=np.int16))
                    got += gap
                    self.frames += gap
                try:
                    n, data = self._pcm.read()
                except self._alsa.ALSAAudioError as exc:
                    raise LineFault(f"{self._where}: {exc}") from exc
            now = time.monotonic()
            if n > 0:
                frames = np.frombuffer(data, dtype="<i2")
                if self._channels > 1:
                    frames = frames.reshape(-1, self._channels)[:, self.channel]
                parts.append(frames.astype(np.int16))
                got += n
                self.frames += n
                self._last_data = self._filled_to = now
                continue
            if n < 0:  # -EPIPE: pyalsaaudio prepares the stream again at the next read
                self.overruns += 1
                self._lost_since = self._filled_to
                self._on_overrun()
            if now - self._last_data > self._stall_s:
                raise LineFault(f"{self._where}: no audio for {self._stall_s:g} s (stalled)")
            if n == 0:
                # Nothing captured yet: a period's worth arrives in a period's time.
                self._closed.wait(self.period_frames / self.rate)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        self._closed.set()
        # A read in progress returns within a period (the PCM is
        # non-blocking); if it does not (a plugin blocked in a file read),
        # the reader's own next look at the flag ends it and the PCM is left
        # to the garbage collector rather than closed under its feet.
        if not self._lock.acquire(timeout=1.0):
            log.warning("%s: a read did not return; left to close on its own", self._where)
            return
        try:
            pcm, self._pcm = self._pcm, None
            if pcm is not None:
                try:
                    pcm.close()
                except Exception as exc:
                    log.warning("closing %s: %s", self._where, exc)
        finally:
            self._lock.release()
