"""Audio files to play into a call: from the media folder or an http(s) URL.

A local ``AudioFile`` is a path inside ``[calls] media_dir`` (never outside
it: no absolute paths, no ``..`` and no link that leads out); a URL is
fetched under the notifications' rules (the address policy on every hop,
``server.notify_timeout_s`` for the whole exchange) and at most
``calls.max_media_bytes``. Either must be a WAV file (PCM or float, as sox, audio
editors and telephony tools write them, extensible headers included) of
any common rate and channel count; it comes out mono, at the line's rate.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway import notify
from gateway.detect.resample import Resampler
from gateway.errors import MediaError, NotifyError
from gateway.tones import Samples


def load(source: str, rate: int, *, media_dir: Path, max_bytes: int, timeout: float,
         policy: notify.Policy | None = None) -> Samples:
    """``source`` (a path in ``media_dir`` or an http(s) URL) as mono int16 at ``rate``."""
    if source.lower().startswith(("http://", "https://")):
        try:
            data = notify.get(source, timeout, max_bytes, policy, what="AudioFile")
        except NotifyError as exc:
            raise MediaError(str(exc)) from None
        return decode(data, rate)
    return decode(_read_local(source, media_dir, max_bytes), rate)


def _read_local(source: str, media_dir: Path, max_bytes: int) -> bytes:
    relative = Path(source)
    if relative.is_absolute() or ".." in relative.parts or not source.strip():
        raise MediaError(f"{source!r} is not a path inside the media folder")
    base = media_dir.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise MediaError(f"{source!r} leads outside the media folder")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise MediaError(f"{source!r}: no such file in the media folder") from None
    except IsADirectoryError:
        raise MediaError(f"{source!r} is a folder, not a file") from None
    except OSError as exc:
        raise MediaError(f"{source!r}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise MediaError(f"{source!r} is larger than {max_bytes} bytes")
    return data


#: WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, and WAVE_FORMAT_EXTENSIBLE (whose
#: sub-format's first two bytes are one of the other two).
PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


def _chunks(data: bytes) -> dict[bytes, bytes]:
    """A RIFF/WAVE file's chunks by their id (the first of each)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError("not a WAV file")
    found: dict[bytes, bytes] = {}
    at = 12
    while at + 8 <= len(data):
        ident, size = data[at : at + 4], struct.unpack_from("<I", data, at + 4)[0]
        # A file cut short (or a header that says "as long as it goes") keeps what it has.
        found.setdefault(ident, data[at + 8 : at + 8 + size])
        at += 8 + size + (size & 1)
    return found


def decode(data: bytes, rate: int) -> Samples:
    """A WAV file's audio (PCM of 8, 16, 24 or 32 bits, or 32/64-bit float;
    any channels, any rate) as mono int16 at ``rate``, channels averaged."""
    chunks = _chunks(data)
    fmt, frames = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or len(fmt) < 16 or frames is None:
        raise MediaError("not a WAV file (no fmt or data chunk)")
    tag, channels, source_rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]
    if tag not in (PCM, FLOAT) or not 1 <= channels <= 8 or not 1000 <= source_rate <= 192000:
        raise MediaError("not a PCM WAV file this gateway plays (format, channels or rate)")
    width = bits // 8
    if block != width * channels or (tag == PCM and width not in (1, 2, 3, 4)) or (
            tag == FLOAT and width not in (4, 8)):
        raise MediaError(f"{bits}-bit {'float' if tag == FLOAT else 'PCM'} samples are not "
                         "ones this gateway reads")
    frames = frames[: len(frames) // block * block]
    if not frames:
        raise MediaError("the WAV file holds no audio")
    values: npt.NDArray[np.float64]
    if tag == FLOAT:
        values = np.frombuffer(frames, f"<f{width}").astype(np.float64) * 32767
    elif width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)
        signed = raw[:, 0] | raw[:, 1] << 8 | raw[:, 2] << 16
        values = (signed - ((signed & 0x800000) << 1)).astype(np.float64) / 256
    elif width == 1:
        values = (np.frombuffer(frames, np.uint8).astype(np.float64) - 128) * 256
    else:
        values = np.frombuffer(frames, f"<i{width}").astype(np.float64) / (1 << (8 * width - 16))
    mono = values.reshape(-1, channels).mean(axis=1)
    if source_rate != rate:
        resampler = Resampler(source_rate, rate)
        mono = np.concatenate([resampler.feed(mono), resampler.flush()])
    out: Samples = np.clip(np.round(mono), -32768, 32767).astype(np.int16)
    return out
