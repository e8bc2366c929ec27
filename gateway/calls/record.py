"""Record: what the line hears during a call, into the recordings folder.

A recording taps the line's ears (see :class:`gateway.lines.hearing.EarsTap`):
it writes every block the capture delivers to ``<CallId>-<n>.wav`` as it
comes (a valid WAV at any moment, as the simulated line's recordings are),
and it ends on the first of: its ``Duration``, ``Inactivity`` seconds of
silence (counted from the last speech, or from its start), one of its
``FinishDigits`` pressed, or the call's end. Then a ``RecordCompleted``
notification goes to its ``FinishedUrl``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import ozml
from gateway.detect import Dtmf, Silence, Voice
from gateway.lines.hearing import LineEvent
from gateway.lines.recording import WavFile
from gateway.tones import Samples

log = logging.getLogger(__name__)


class Recording:
    """One Record command's recording; its methods are called on the line's
    hearing thread, :meth:`stop` from anywhere, once."""

    def __init__(self, name: str, path: Path, rate: int, command: ozml.Record,
                 on_done: Callable[[Recording], None]) -> None:
        """Raises OSError when the file cannot be made."""
        self.name = name
        self.path = path
        self.command = command
        self.reason = ""
        self.done = threading.Event()
        self._on_done = on_done
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Made now: even a recording that hears nothing is a (silent) WAV.
        self._wav: WavFile | None = WavFile(path, rate, 1)
        self._rate = rate
        self._frames = 0
        self._quiet_since: float | None = None
        self._started: float | None = None
        #: Why the recording could not be written, if it could not.
        self.failure: OSError | None = None

    @property
    def seconds(self) -> float:
        """How much has been recorded."""
        return self._frames / self._rate if self._rate else 0.0

    def audio(self, block: Samples, rate: int) -> None:
        with self._lock:
            if self.done.is_set() or self._wav is None:
                return
            try:
                self._wav.write(block)
                self._frames = self._wav.frames
            except OSError as exc:
                # A full disk: what was written stays a valid WAV; it ends here.
                self.failure = exc
            limit = self.command.duration_s or ozml.MAX_RECORD_S
            over = self.failure is not None or self.seconds >= limit
        if over:
            self.stop("could not be written" if self.failure is not None else "duration")

    def events(self, events: Sequence[LineEvent], now: float) -> None:
        if self.done.is_set():
            return
        if self._started is None:
            self._started = now
        for event in events:
            if isinstance(event, Dtmf) and event.key in self.command.finish_digits:
                self.stop(f"finish digit {event.key}")
                return
            if isinstance(event, Voice):
                self._quiet_since = None
            elif isinstance(event, Silence):
                self._quiet_since = event.t
        quiet_from = self._quiet_since if self._quiet_since is not None else self._started
        inactivity = self.command.inactivity_s
        if inactivity and now - max(quiet_from, self._started) >= inactivity:
            self.stop("inactivity")

    def stop(self, reason: str) -> None:
        """End the recording (once): close its file and tell whoever waits."""
        with self._lock:
            if self.done.is_set():
                return
            self.reason = reason
            wav, self._wav = self._wav, None
            if wav is not None:
                wav.close()
            self.done.set()
        self._on_done(self)
