"""Speech for OzML Speak: espeak-ng's voices and the resampler that brings it to a line's rate."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from gateway.errors import NotSupported
from gateway.speech import Synthesiser, _smooth, resample
from gateway.tones import ToneSettings

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)


def sine(hz: float, rate: int, seconds: float, amplitude: float = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize("to", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("n", [22050, 80987, 12345])
def test_resampling_keeps_length_frequency_and_level(to: int, n: int) -> None:
    x = sine(1000.0, 22050, n / 22050)
    y = resample(x, 22050, to)
    assert len(y) == round(n * to / 22050)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spectrum) * to / len(y) - 1000.0) < 2 * to / len(y)
    middle = y[len(y) // 4 : 3 * len(y) // 4]
    assert abs(int(np.abs(middle.astype(np.int32)).max()) - 10000) < 150


def test_what_a_lower_rate_cannot_carry_is_removed_not_folded() -> None:
    # 5 kHz at 22.05 kHz would alias to 3 kHz at 8 kHz: it must vanish instead.
    y = resample(sine(5000.0, 22050, 1.0), 22050, 8000)
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) < 10


def test_smooth_lengths() -> None:
    assert [_smooth(n) for n in (1, 2, 7, 11, 13, 17, 97, 1001)] == [
        1, 2, 8, 12, 15, 18, 100, 1024]


@needs_espeak
@pytest.mark.parametrize(
    ("language", "voice"),
    [(None, "en"), ("en-US", "en-us"), ("de_DE", "de-de"), ("pt-BR", "pt-br"), ("FR", "fr")],
)
def test_ozml_languages_to_espeak_voices(language: str | None, voice: str) -> None:
    assert Synthesiser().voice_for(language) == voice


@needs_espeak
def test_text_is_data_not_options() -> None:
    # On stdin, a leading dash is speech, not an espeak-ng option.
    audio = Synthesiser().render("--version", "en", ToneSettings(rate=8000))
    assert len(audio) > 2000 and audio.any()


@needs_espeak
@pytest.mark.parametrize(("text", "message"), [("  ", "nothing to say"),
                                               ("a" * 4001, "4001 characters")])
def test_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Synthesiser().render(text, "en", ToneSettings())


def test_missing_synthesiser_names_the_package() -> None:
    with pytest.raises(NotSupported, match=r"'/nonexistent/espeak-ng' is not installed"):
        Synthesiser("/nonexistent/espeak-ng").render("hello", None, ToneSettings())
