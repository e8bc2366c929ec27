"""ALSA without a sound card: ``file`` PCMs with a ``null`` slave, in an asoundrc of the test's own.

alsa-lib re-reads its configuration when ``ALSA_CONFIG_PATH`` names other files
(or they change), so a test points the variable at its asoundrc and every PCM
opened afterwards in this process sees the test's devices; no subprocess is
needed. The file plugin
writes exactly the interleaved S16_LE frames the application played, and the
null slave takes them as fast as they come (no real-time pacing).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest


class AlsaTap:
    """Named tap devices in ``directory``; ``raw(name)`` is where each one's audio lands.

    A capture device (:meth:`add_capture`) reads a prepared file (or a FIFO
    fed in real time) through the file plugin's ``infile``: unpaced, as fast
    as it is read, and once the file has run out ALSA hands over whatever
    its buffer held before (not silence), so a test's file outlasts its call.
    The plugin also writes what was captured to its ``file`` (``tee``).
    """

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        self.asoundrc = directory / "asoundrc"
        self._monkeypatch = monkeypatch
        self._devices: dict[str, Path] = {}
        self._text: dict[str, str] = {}
        self._version = 0
        self.write()

    def add(self, name: str, target: Path | None = None) -> Path:
        """Define PCM ``name`` writing to ``target`` (default ``<name>.raw``)."""
        self._devices[name] = target or self.directory / f"{name}.raw"
        self._text[name] = (f'pcm.{name} {{\n    type file\n    slave.pcm {{ type null }}\n'
                            f'    file "{self._devices[name]}"\n    format "raw"\n}}\n')
        self.write()
        return self._devices[name]

    def add_capture(self, name: str, infile: Path, tee: Path | None = None) -> Path:
        """Define capture PCM ``name`` reading raw S16_LE frames from
        ``infile``; what it captured goes to ``tee`` (default /dev/null)."""
        self._devices[name] = tee or Path("/dev/null")
        self._text[name] = (f'pcm.{name} {{\n    type file\n    slave.pcm {{ type null }}\n'
                            f'    infile "{infile}"\n    file "{self._devices[name]}"\n'
                            '    format "raw"\n}\n')
        self.write()
        return infile

    def add_duplex(self, name: str, playback: str, capture: str) -> None:
        """Define ``name`` as one device, as a sound card is: playing into
        PCM ``playback``, capturing from PCM ``capture``."""
        self._text[name] = (f'pcm.{name} {{\n    type asym\n    playback.pcm "{playback}"\n'
                            f'    capture.pcm "{capture}"\n}}\n')
        self.write()

    def remove(self, name: str) -> None:
        self._devices.pop(name, None)
        del self._text[name]
        self.write()

    def write(self) -> None:
        text = "".join(self._text.values())
        # A new file for each version: alsa-lib notices another file name at
        # once, where a rewritten one may keep its mtime (one-second stamps).
        self._version += 1
        self.asoundrc = self.directory / f"asoundrc.{self._version}"
        self.asoundrc.write_text(text or "# no devices\n")
        self._monkeypatch.setenv("ALSA_CONFIG_PATH", str(self.asoundrc))

    def raw(self, name: str) -> Path:
        return self._devices[name]

    def frames(self, name: str, channels: int = 1) -> npt.NDArray[np.int16]:
        data = np.fromfile(str(self.raw(name)), dtype="<i2").astype(np.int16)
        return data if channels == 1 else data.reshape(-1, channels)


def unplugging_consumer(fifo: Path, limit: int) -> threading.Thread:
    """Consume ``limit`` bytes a tap device writes into ``fifo``, then go away.

    ALSA's next write then fails (EPIPE in the file plugin, EIO to the
    application), as when a USB card is pulled. The read end is opened
    read-write, so it neither waits for nor depends on the writer, and the pipe
    shrunk to one page before the writer can open it: writes start failing
    within 4 KiB of the consumer leaving, not 64 KiB.
    """
    fd = os.open(fifo, os.O_RDWR)
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)

    def consume() -> None:
        try:
            got = 0
            while got < limit:
                got += len(os.read(fd, limit - got))
        finally:
            os.close(fd)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return thread
