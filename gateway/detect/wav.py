"""Reading 16-bit PCM WAV files in blocks, with a one-line reason for any file that is not one."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from gateway.errors import DetectError

_PCM = 1
_EXTENSIBLE = 0xFFFE
# The GUID tail shared by every KSDATAFORMAT_SUBTYPE_*; PCM is subtype 1.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


class WavReader:
    """A 16-bit PCM WAV file's first channel, in blocks: ``rate``, ``frames``, iteration."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise DetectError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            self._parse()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> WavReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _fail(self, why: str) -> DetectError:
        return DetectError(f"{self.path}: {why}")

    def _parse(self) -> None:
        head = self._file.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise self._fail("not a WAV file")
        fmt: bytes | None = None
        while True:
            chunk = self._file.read(8)
            if len(chunk) < 8:
                raise self._fail("no audio data (truncated WAV file)" if fmt else
                                 "not a WAV file (no fmt chunk)")
            tag, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if tag == b"fmt ":
                fmt = self._file.read(size + (size & 1))
                self._check_format(fmt)
            elif tag == b"data":
                if fmt is None:
                    raise self._fail("not a WAV file (data before fmt)")
                self._data_start = self._file.tell()
                end = self._file.seek(0, 2)
                available = end - self._data_start
                # A recording still being written (arecord to a pipe) says 0 or 0xFFFFFFFF.
                size = available if size in (0, 0xFFFFFFFF) or size > available else size
                self.frames = size // self._frame_bytes
                self._file.seek(self._data_start)
                if self.frames == 0:
                    raise self._fail("no audio (empty WAV file)")
                return
            else:
                self._file.seek(size + (size & 1), 1)

    def _check_format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise self._fail("not a WAV file (short fmt chunk)")
        tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _EXTENSIBLE and len(fmt) >= 40:
            sub = fmt[24:40]
            tag = struct.unpack("<H", sub[:2])[0] if sub[2:] == _GUID_TAIL else -1
        kinds = {1: "PCM", 3: "floating-point", 6: "A-law", 7: "mu-law"}
        if tag != _PCM:
            kind = kinds.get(tag, "compressed")
            raise self._fail(f"{kind} audio; detect reads 16-bit PCM "
                             "(convert with: sox IN.wav -b 16 -e signed OUT.wav)")
        if bits != 16:
            raise self._fail(f"{bits}-bit PCM; detect reads 16-bit PCM "
                             "(convert with: sox IN.wav -b 16 OUT.wav)")
        if channels < 1 or rate < 1:
            raise self._fail(f"{channels} channels at {rate} Hz")
        self.channels, self.rate = channels, rate
        self._frame_bytes = block if block >= 2 * channels else 2 * channels

    def blocks(self, frames: int = 8000) -> Iterator[npt.NDArray[np.int16]]:
        """The first channel, ``frames`` at a time."""
        left = self.frames
        self._file.seek(self._data_start)
        while left > 0:
            n = min(frames, left)
            raw = self._file.read(n * self._frame_bytes)
            n = len(raw) // self._frame_bytes
            if n == 0:
                return
            data = np.frombuffer(raw[: n * self._frame_bytes], dtype="<i2")
            step = self._frame_bytes // 2
            yield np.ascontiguousarray(data[::step], dtype=np.int16)
            left -= n

    def __iter__(self) -> Iterator[npt.NDArray[np.int16]]:
        return self.blocks()
