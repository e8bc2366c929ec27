"""Recordings of what a simulated line carried, one per call.

Not part of the line interface: a real line records nothing, and the call
layer only tells a line's recorder, when it has one, that a call began and
ended. What goes into a recording is the business of whoever assembled the
line (:func:`gateway.lines.build_line`): the simulated line writes its audio
and events through a :class:`StreamingRecorder` as they happen, a simulated
chip or modem renders what it sent at the end (:func:`save_wav`).

A recording cannot lie: a directory that cannot take files, a file that
cannot be created and a write that fails (a full disk) raise
:class:`~gateway.errors.LineFault` naming the line, what was being done and
the system's reason, so the call layer reports the fault instead of a
silent 200. What was written before the failure stays a valid WAV: the
header's sizes are brought up to date after every write, and a write that
got only part of its frames out is cut back to the whole frames.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

import numpy as np

from gateway.errors import LineFault
from gateway.tones import Samples

log = logging.getLogger(__name__)

Mark = TypeVar("Mark")

#: ``max_record_s`` bounds: a 48 kHz recording of 8 channels stays under the
#: 4 GiB a WAV header can count.
MAX_RECORD_S = (1.0, 3600.0)
#: Ten minutes: about 9 MiB at 8 kHz mono, far longer than a call that sends keys.
DEFAULT_MAX_RECORD_S = 600.0
#: A PCM WAV file's RIFF, fmt and data headers.
_HEADER_BYTES = 44


class CallRecorder(ABC):
    """``<directory>/<CallId>.wav`` (and whatever else a recorder keeps) per call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, call_id: str) -> Path:
        """Where the call's audio is (or will be once the call has ended)."""
        return self.directory / f"{call_id}.wav"

    @abstractmethod
    def begin(self, call_id: str) -> None:
        """A call starts on the line. Raises LineFault when it cannot be recorded."""

    @abstractmethod
    def end(self, call_id: str) -> None:
        """The call ended: finish its files. Never raises for a call not begun."""


class RenderedRecorder(CallRecorder, Generic[Mark]):
    """For a simulator that keeps what it played: at a call's start ``mark()``
    says where the simulator is; at its end ``render(mark, max_samples)``
    gives the audio since then, saved as the call's WAV (at most
    ``max_seconds`` of it)."""

    def __init__(self, line: str, directory: Path, rate: int, max_seconds: float,
                 mark: Callable[[], Mark], render: Callable[[Mark, int], Samples]) -> None:
        super().__init__(directory)
        self.line = line
        self.rate = rate
        self.max_seconds = max_seconds
        self._mark = mark
        self._render = render
        self._marks: dict[str, Mark] = {}
        self._lock = threading.Lock()

    def begin(self, call_id: str) -> None:
        check_directory(self.directory)
        mark = self._mark()
        with self._lock:
            self._marks[call_id] = mark

    def end(self, call_id: str) -> None:
        with self._lock:
            if call_id not in self._marks:
                return
            mark = self._marks.pop(call_id)
        limit = round(self.rate * self.max_seconds)
        audio = self._render(mark, limit)[:limit]
        if len(audio) >= limit:
            log.warning("line %s: call %s: recording stopped: max_record_s (%g s) reached",
                        self.line, call_id, self.max_seconds)
        save_wav(self.path(call_id), audio, self.rate)


def recording_fault(doing: str, path: Path, exc: OSError) -> LineFault:
    """The LineFault for a recording that failed, in words a person can act on."""
    reason = exc.strerror or str(exc)
    return LineFault(f"cannot record the call: {doing} {path}: {reason}")


def check_directory(directory: Path) -> None:
    """Raise LineFault unless recordings can be made in ``directory``.

    A directory that does not exist yet is fine when the nearest one that
    does can take it: it is created at the first call, not here. The check
    writes a header's worth of bytes to an unnamed file, so a full disk, a
    read-only mount and a pseudo-filesystem (``/proc``) all fail it, for
    root too, and nothing is left behind.
    """
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LineFault(f"cannot record calls in {directory}: "
                        f"{existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            os.write(probe.fileno(), bytes(_HEADER_BYTES))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LineFault(f"cannot record calls in {directory}: "
                        f"creating a file in {existing} failed: {reason}") from exc


class _AppendFile:
    """A file written only at its end, with positional writes: after a failed
    write it is cut back to the whole ``unit``\\ s that made it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                       0o644)

    def append(self, data: bytes, unit: int = 0) -> None:
        fd = self._require()
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                written = os.pwrite(fd, view[done:], self.size + done)
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += written
        except OSError:
            kept = done - done % (unit or len(view))
            self.size += kept
            try:
                os.ftruncate(fd, self.size)
            except OSError:
                log.warning("%s: could not cut back a partial write", self.path)
            raise
        self.size += done

    def overwrite(self, data: bytes, offset: int) -> None:
        if os.pwrite(self._require(), data, offset) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def _require(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, f"{self.path} is closed")
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class WavFile:
    """16-bit PCM WAV written as it goes (``frames`` are interleaved int16).

    Its header counts the data after every write, so the file is valid at
    any moment: after a full disk, after a kill, while the call goes on.
    Raises OSError; after a failed write the file keeps the whole frames
    that got out.
    """

    def __init__(self, path: Path, rate: int, channels: int) -> None:
        self.path = path
        self.rate = rate
        self.channels = channels
        self._file = _AppendFile(path)
        try:
            self._file.append(self._header(0))
        except OSError:
            self._file.close()
            raise

    @property
    def frames(self) -> int:
        return (self._file.size - _HEADER_BYTES) // (2 * self.channels)

    def _header(self, data_bytes: int) -> bytes:
        block = 2 * self.channels
        return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
                + b"fmt " + struct.pack("<IHHIIHH", 16, 1, self.channels, self.rate,
                                        self.rate * block, block, 16)
                + b"data" + struct.pack("<I", data_bytes))

    def write(self, frames: Samples) -> None:
        data = np.ascontiguousarray(frames, dtype="<i2").tobytes()
        try:
            self._file.append(data, unit=2 * self.channels)
        finally:
            data_bytes = self._file.size - _HEADER_BYTES
            self._file.overwrite(struct.pack("<I", 36 + data_bytes), 4)
            self._file.overwrite(struct.pack("<I", data_bytes), 40)

    def close(self) -> None:
        self._file.close()


def save_wav(path: Path, samples: Samples, rate: int) -> None:
    """``samples`` (mono, or interleaved frames) as a WAV file at ``path``, its
    directory created; LineFault when it cannot be written."""
    channels = 1 if samples.ndim == 1 else int(samples.shape[1])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise recording_fault("creating", path.parent, exc) from exc
    try:
        wav = WavFile(path, rate, channels)
    except OSError as exc:
        raise recording_fault("creating", path, exc) from exc
    try:
        wav.write(samples)
    except OSError as exc:
        raise recording_fault("writing", path, exc) from exc
    finally:
        wav.close()


def _stamp(now: float) -> str:
    return (f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}"
            f".{int(now * 1000) % 1000:03d}Z")


class StreamingRecorder(CallRecorder):
    """A call's audio and event log, written as they happen: ``<CallId>.wav``
    and ``<CallId>.log`` (one timestamped event a line).

    Nothing of a call is kept in memory. After ``max_seconds`` of audio the
    recording stops, with one line in the event log and a warning in the
    service log, while the call goes on. Every method may be called from any
    thread.
    """

    def __init__(self, line: str, directory: Path, rate: int, channels: int,
                 max_seconds: float) -> None:
        super().__init__(directory)
        self.line = line
        self.rate = rate
        self.channels = channels
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        self._call: str | None = None
        self._wav: WavFile | None = None
        self._log: _AppendFile | None = None
        #: The call's recording hit ``max_seconds``: nothing more is written.
        self._full = False
        #: Why the call's recording failed; every later write says so again.
        self._failed: LineFault | None = None

    def log_path(self, call_id: str) -> Path:
        return self.directory / f"{call_id}.log"

    def check(self) -> None:
        """LineFault unless this line's directory can take recordings."""
        check_directory(self.directory)

    def begin(self, call_id: str) -> None:
        with self._lock:
            self._close()
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise recording_fault("creating", self.directory, exc) from exc
            path = self.path(call_id)
            try:
                wav = WavFile(path, self.rate, self.channels)
            except OSError as exc:
                raise recording_fault("creating", path, exc) from exc
            try:
                events = _AppendFile(self.log_path(call_id))
            except OSError as exc:
                wav.close()
                raise recording_fault("creating", self.log_path(call_id), exc) from exc
            self._call, self._wav, self._log = call_id, wav, events
            self._full, self._failed = False, None
        self.event(f"call {call_id} begins")

    def event(self, what: str) -> None:
        """One line in the call's event log (none outside a call)."""
        with self._lock:
            self._write_event(what)

    def _write_event(self, what: str, closing: bool = False) -> None:
        self._raise_if_failed()
        if self._log is None or (self._full and not closing):
            return
        try:
            self._log.append(f"{_stamp(time.time())} {what}\n".encode())
        except OSError as exc:
            self._fail(recording_fault("writing", self._log.path, exc))

    def audio(self, frames: Samples) -> None:
        """Frames that reached the line (``channels`` interleaved), appended."""
        with self._lock:
            self._raise_if_failed()
            wav = self._wav
            if wav is None or self._full:
                return
            room = max(0, round(self.max_seconds * self.rate) - wav.frames)
            try:
                wav.write(frames[:room])
            except OSError as exc:
                self._fail(recording_fault("writing", wav.path, exc))
            if len(frames) < room:
                return
            note = (f"recording stopped: max_record_s ({self.max_seconds:g} s) reached; "
                    "the call goes on")
            self._write_event(note)
            self._full = True
            call = self._call
        log.warning("line %s: call %s: %s", self.line, call, note)

    def _fail(self, fault: LineFault) -> NoReturn:
        self._failed = fault
        self._close_files()
        raise fault

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise LineFault(str(self._failed))

    def end(self, call_id: str) -> None:
        with self._lock:
            if self._call != call_id:
                return
            try:
                if self._failed is None:
                    self._write_event(f"call {call_id} ends", closing=True)
            finally:
                self._close()

    def _close(self) -> None:
        self._close_files()
        self._call = None
        self._failed = None

    def _close_files(self) -> None:
        wav, self._wav = self._wav, None
        events, self._log = self._log, None
        for f in (wav, events):
            if f is not None:
                try:
                    f.close()
                except OSError as exc:
                    log.warning("line %s: closing %s: %s", self.line, f.path, exc)
