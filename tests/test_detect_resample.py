"""The resampler to 8 kHz: level, timing and what it keeps out, against plain numpy sines."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.detect.resample import Resampler
from gateway.errors import DetectError

RATES = [16000, 22050, 32000, 44100, 48000, 11025, 96000, 44056]


def through(x: np.ndarray, rate: int, step: int | None = None) -> np.ndarray:
    r = Resampler(rate)
    if step is None:
        return np.concatenate([r.feed(x), r.flush()])
    parts = [r.feed(x[i: i + step]) for i in range(0, len(x), step)]
    return np.concatenate([*parts, r.flush()])


def sine(hz: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("hz", [300.0, 1000.0, 1633.0, 3300.0])
def test_the_band_passes_with_its_level_and_phase(rate: int, hz: float) -> None:
    out = through(sine(hz, rate), rate)
    assert len(out) == 8000
    want = sine(hz, 8000)
    inner = slice(200, -200)  # away from the edges, where the input starts and stops
    error = out[inner] - want[inner]
    # Flat to 0.01 dB in amplitude and on time to a small fraction of a sample.
    assert np.sqrt(np.mean(error ** 2)) < 10000 * 10 ** (-60 / 20), rate


@pytest.mark.parametrize("rate", [r for r in RATES if r >= 16000])
@pytest.mark.parametrize("hz", [4700.0, 6000.0, 7900.0])
def test_what_would_fold_into_the_band_is_80_db_down(rate: int, hz: float) -> None:
    if hz >= rate / 2:
        pytest.skip("above the input's own band")
    out = through(sine(hz, rate), rate)[200:-200]
    assert 20 * np.log10(np.sqrt(np.mean(out ** 2)) / (10000 / np.sqrt(2))) < -80


@pytest.mark.parametrize("rate", RATES)
def test_an_impulse_lands_at_its_time(rate: int) -> None:
    x = np.zeros(rate)
    at = rate // 2 + 7
    x[at] = 20000
    out = through(x, rate)
    peak = np.argmax(np.abs(out))
    assert abs(peak - at * 8000 / rate) <= 0.5


@pytest.mark.parametrize("rate", RATES)
def test_any_block_sizes_give_the_same_samples(rate: int) -> None:
    x = np.random.default_rng(rate).normal(0, 3000, rate * 2)
    whole = through(x, rate)
    for step in (1, 7, 441, 4000):
        if step == 1 and rate > 22050:
            continue  # slow in Python, and nothing 7 does not already show
        # Equal to rounding: a matrix product may sum in another order.
        assert np.allclose(through(x, rate, step), whole, rtol=0, atol=1e-6), step


def test_8000_passes_through() -> None:
    x = np.arange(100, dtype=np.float64)
    assert np.array_equal(through(x, 8000), x)


@pytest.mark.parametrize("rate", [999, 0, 400000, 8000.5, True])
def test_unusable_rates_are_refused(rate: object) -> None:
    with pytest.raises(DetectError, match="sample rate"):
        Resampler(rate)  # type: ignore[arg-type]
