"""Text to speech with espeak-ng: OzML ``Speak`` as PCM at a line's rate.

espeak-ng (the Debian package) runs as a subprocess per phrase; the text goes
in on standard input, so nothing in it can be taken for an option. Its WAV
(22050 Hz) is resampled to the line's rate in the frequency domain, which also
removes what a lower rate cannot carry instead of folding it back as noise.
"""

from __future__ import annotations

import functools
import io
import math
import re
import shutil
import subprocess
import wave

import numpy as np

from gateway.errors import NotSupported
from gateway.tones import FULL_SCALE, Samples, ToneSettings

#: A phrase that takes longer than this to render is a stuck synthesiser.
RENDER_TIMEOUT_S = 30.0
#: OzML text is a sentence or two; this bounds the audio held in memory.
MAX_TEXT = 4000


class Synthesiser:
    """espeak-ng at ``command`` (a name on PATH or a path)."""

    def __init__(self, command: str = "espeak-ng", words_per_minute: int = 160) -> None:
        self.command = command
        self.words_per_minute = words_per_minute

    def executable(self) -> str:
        path = shutil.which(self.command)
        if path is None:
            raise NotSupported(
                f"cannot speak: {self.command!r} is not installed (apt-get install espeak-ng)"
            )
        return path

    def voice_for(self, language: str | None) -> str:
        """The espeak-ng voice for an OzML ``Language`` (``en-US``, ``de``, ``pt_BR``).

        A tag whose language espeak-ng has is passed on for espeak-ng to pick
        the closest voice (``de-AT`` speaks German); anything else is an error
        that lists what is installed rather than speech in the wrong language.
        """
        known = _languages(self.executable())
        if not language:
            return "en"
        tag = language.strip().lower().replace("_", "-")
        if tag in known or tag.split("-", 1)[0] in known:
            return tag
        primaries = sorted({k.split("-", 1)[0] for k in known})
        raise NotSupported(
            f"espeak-ng has no voice for language {language!r} (it has {', '.join(primaries)})"
        )

    def render(self, text: str, language: str | None, settings: ToneSettings) -> Samples:
        """``text`` as mono int16 at ``settings.rate``, peaking at the DTMF peak level."""
        if not text.strip():
            raise ValueError("nothing to say")
        if len(text) > MAX_TEXT:
            raise ValueError(f"{len(text)} characters to speak is more than {MAX_TEXT}")
        voice = self.voice_for(language)
        try:
            out = subprocess.run(
                [self.executable(), "--stdout", "--stdin", "-b", "1", "-v", voice,
                 "-s", str(self.words_per_minute)],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=RENDER_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise NotSupported(f"espeak-ng took more than {RENDER_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise NotSupported(f"cannot run espeak-ng: {exc.strerror}") from None
        if out.returncode != 0:
            detail = out.stderr.decode(errors="replace").strip() or f"exit status {out.returncode}"
            raise NotSupported(f"espeak-ng failed: {detail}")
        samples, rate = _read_stream_wav(out.stdout)
        samples = resample(samples, rate, settings.rate)
        return _level(samples, settings)


@functools.lru_cache(maxsize=4)
def _languages(executable: str) -> frozenset[str]:
    out = subprocess.run([executable, "--voices"], capture_output=True, text=True,
                         timeout=RENDER_TIMEOUT_S, check=False)
    # "Pty Language Age/Gender VoiceName File Other-Languages", one voice a
    # line; other languages read "(en 2)(en-gb 3)": tag, then priority.
    known: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 2:
            continue
        known.add(fields[1].lower())
        for other in re.findall(r"\(([A-Za-z0-9-]+) \d+\)", line):
            known.add(other.lower())
    return frozenset(known)


def _read_stream_wav(data: bytes) -> tuple[Samples, int]:
    # espeak-ng writes to a pipe before it knows the length, so the header's
    # sizes are placeholders (0x7ffff000): read the samples up to the end.
    try:
        with wave.open(io.BytesIO(data), "rb") as src:
            if src.getsampwidth() != 2 or src.getnchannels() != 1:
                raise NotSupported("espeak-ng did not give 16-bit mono audio")
            rate = src.getframerate()
            pcm = src.readframes(src.getnframes())
    except (wave.Error, EOFError) as exc:
        raise NotSupported(f"espeak-ng gave no audio ({exc})") from None
    pcm = pcm[: len(pcm) // 2 * 2]
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16), rate


def resample(samples: Samples, rate: int, to: int) -> Samples:
    """Band-limited resampling by the FFT: keep the bins below both Nyquists.

    The input is padded with silence to a length whose transforms, in and
    out, have only small prime factors: a phrase's raw length is often a
    large prime times something, where the FFT is many times slower.
    """
    if rate == to or samples.size == 0:
        return samples.astype(np.int16)
    step_in = rate // math.gcd(rate, to)
    step_out = to // math.gcd(rate, to)
    blocks = _smooth(-(-samples.size // step_in))
    n_in, n_out = blocks * step_in, blocks * step_out
    spectrum = np.fft.rfft(samples.astype(np.float64), n_in)
    bins = n_out // 2 + 1
    if bins <= spectrum.size:
        spectrum = spectrum[:bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(bins - spectrum.size, complex)])
    out = np.fft.irfft(spectrum, n_out) * (n_out / n_in)
    out = out[: round(samples.size * to / rate)]
    return np.clip(np.round(out), -FULL_SCALE, FULL_SCALE).astype(np.int16)


def _smooth(n: int) -> int:
    """The smallest number >= n with no prime factor above 5."""
    best = 1 << max(0, (n - 1).bit_length())
    five = 1
    while five < best:
        three = five
        while three < best:
            candidate = three
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            three *= 3
        five *= 5
    return best


def _level(samples: Samples, settings: ToneSettings) -> Samples:
    # Speech peaks where the DTMF peaks (low plus high group): the line level
    # the tones were set up for is then right for speech too, and never clips.
    peak = int(np.max(np.abs(samples.astype(np.int32)))) if samples.size else 0
    if peak == 0:
        return samples
    target = (settings.low_amplitude + settings.high_amplitude) * FULL_SCALE
    scaled = samples.astype(np.float64) * (target / peak)
    return np.clip(np.round(scaled), -FULL_SCALE, FULL_SCALE).astype(np.int16)
