"""The tone engine against Q.23/Q.24, checked by numpy FFT and by multimon-ng."""

import numpy as np
import numpy.typing as npt
import pytest

from gateway.errors import ToneSettingsError
from gateway.keys import KEYS, parse_keys
from gateway.tones import (
    FREQUENCIES,
    SAMPLE_RATES,
    Timing,
    ToneEngine,
    TonePlan,
    ToneSettings,
    read_wav,
    route,
    write_wav,
)
from tests.support import multimon_decode, needs_multimon

MIN_TIMING = Timing(duration_ms=40, gap_ms=50)


Pcm = npt.NDArray[np.int16]


def render(keys: str, rate: int = 8000, timing: Timing = Timing(), **settings: float) -> Pcm:
    engine = ToneEngine(ToneSettings(rate=rate, **settings))  # type: ignore[arg-type]
    return engine.render(TonePlan(parse_keys(keys), timing))


def peaks(samples: npt.NDArray[np.int16], rate: int) -> tuple[float, float, float, float]:
    """(low Hz, low magnitude, high Hz, high magnitude) by Hann-windowed, zero-padded
    FFT with parabolic interpolation of each band's peak."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    n = 1 << (len(x) * 16 - 1).bit_length()
    spectrum = np.abs(np.fft.rfft(x, n))
    hz = np.fft.rfftfreq(n, 1 / rate)

    def band(lo: float, hi: float) -> tuple[float, float]:
        idx = np.flatnonzero((hz >= lo) & (hz <= hi))
        k = idx[np.argmax(spectrum[idx])]
        a, b, c = np.log(spectrum[k - 1 : k + 2])
        shift = 0.5 * (a - c) / (a - 2 * b + c)
        return float(hz[k] + shift * (hz[1] - hz[0])), float(np.exp(b - 0.25 * (a - c) * shift))

    low_hz, low_mag = band(650, 1000)
    high_hz, high_mag = band(1150, 1700)
    return low_hz, low_mag, high_hz, high_mag


def runs(samples: npt.NDArray[np.int16], rate: int) -> tuple[list[int], list[int]]:
    """Lengths (in samples) of tone bursts and of the silences between them.

    A burst is a run of non-zero samples; a sine's own zero crossings last one
    sample, so silences shorter than 1 ms are not gaps."""
    nonzero = np.flatnonzero(samples != 0)
    breaks = np.flatnonzero(np.diff(nonzero) > rate // 1000)
    starts = np.concatenate([[nonzero[0]], nonzero[breaks + 1]])
    ends = np.concatenate([nonzero[breaks], [nonzero[-1]]])
    return list(ends - starts + 1), list(starts[1:] - ends[:-1] - 1)


@needs_multimon
@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("timing", [Timing(), MIN_TIMING], ids=["default", "minimum"])
def test_all_sixteen_keys_decode_independently(rate: int, timing: Timing) -> None:
    keys = "0123456789*#ABCD"
    assert multimon_decode(render(keys, rate, timing), rate) == keys


@needs_multimon
@pytest.mark.parametrize("rate", [8000, 48000])
def test_repeated_keys_and_pauses_decode(rate: int) -> None:
    keys = "1111##w00W*a"
    audio = render(keys, rate, MIN_TIMING)
    assert multimon_decode(audio, rate) == "1111##00*A"


@pytest.mark.parametrize("key", list(KEYS))
def test_frequencies_within_a_tenth_of_a_percent(key: str) -> None:
    rate = 8000
    low_hz, _, high_hz, _ = peaks(render(key, rate, Timing(1000, 100))[: rate], rate)
    want_low, want_high = FREQUENCIES[key]
    assert abs(low_hz - want_low) / want_low < 0.001
    assert abs(high_hz - want_high) / want_high < 0.001


@pytest.mark.parametrize("twist", [0.0, 2.0, 4.0, -3.0])
@pytest.mark.parametrize("key", ["1", "5", "#", "D"])
def test_twist_within_half_a_db(key: str, twist: float) -> None:
    rate = 16000
    audio = render(key, rate, Timing(500, 100), twist_db=twist)[: rate // 2]
    _, low_mag, _, high_mag = peaks(audio, rate)
    assert abs(20 * np.log10(high_mag / low_mag) - twist) < 0.5


Floats = npt.NDArray[np.float64]


def spectrum_db(x: Floats, rate: int) -> tuple[Floats, Floats]:
    n = 1 << (len(x) * 8 - 1).bit_length()
    return np.fft.rfftfreq(n, 1 / rate), 20 * np.log10(np.abs(np.fft.rfft(x, n)) + 1e-9)


def margin_db(burst: Pcm, rate: int, key: str, window: bool, width_hz: float) -> float:
    """How far below the weaker tone the strongest component is, more than
    ``width_hz`` from either tone."""
    x = burst.astype(np.float64) * (np.hanning(len(burst)) if window else 1.0)
    hz, db = spectrum_db(x, rate)
    low, high = FREQUENCIES[key]
    near = (np.abs(hz - low) < width_hz) | (np.abs(hz - high) < width_hz)
    weaker = min(db[np.abs(hz - low) < 5].max(), db[np.abs(hz - high) < 5].max())
    return float(weaker - db[~near].max())


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("key", ["1", "9", "*", "D"])
def test_nothing_else_within_30_db_of_the_tones(key: str, rate: int) -> None:
    """Harmonics, intermodulation and quantisation: a Hann-windowed look at a
    default 100 ms burst, everything more than 60 Hz from the two tones."""
    burst = render(key, rate)[: rate // 10]
    assert margin_db(burst, rate, key, window=True, width_hz=60) >= 30


@pytest.mark.parametrize("rate", [8000, 48000])
@pytest.mark.parametrize("key", ["3", "*", "C"])
def test_ramps_keep_the_burst_out_of_the_other_band(key: str, rate: int) -> None:
    """The burst as the line carries it (no analysis window): its on/off edges
    must not splatter 250 Hz away, where the other group's tones start (941 Hz
    to 1209 Hz is 268 Hz). A hard-edged burst fails this; ours passes."""
    ramped = render(key, rate)[: rate // 10]
    hard = render(key, rate, ramp_ms=0.0)[: rate // 10]
    assert margin_db(ramped, rate, key, window=False, width_hz=250) >= 40
    assert margin_db(hard, rate, key, window=False, width_hz=250) < 40


def test_loudest_allowed_level_does_not_clip() -> None:
    # -7 dBFS low + 2 dB twist: peaks add to 0.447 + 0.562 = 1.009 > 1, refused;
    # -7.1 dBFS is the loudest that fits.
    with pytest.raises(ToneSettingsError, match="would clip"):
        ToneSettings(level_dbfs=-7.0, twist_db=2.0)
    audio = render("0123456789*#ABCD", 48000, level_dbfs=-7.1, twist_db=2.0)
    assert np.abs(audio.astype(np.int32)).max() < 32767


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize(
    "timing", [Timing(), MIN_TIMING, Timing(73, 127), Timing(2000, 50)], ids=str
)
def test_on_and_off_durations_within_a_millisecond(rate: int, timing: Timing) -> None:
    audio = render("1D5", rate, timing)
    on, off = runs(audio, rate)
    assert len(on) == 3
    for samples in on:
        assert abs(samples / rate * 1000 - timing.duration_ms) < 1.0
    for samples in off:
        assert abs(samples / rate * 1000 - timing.gap_ms) < 1.0
    # The plan ends with its last gap, so two plans back to back stay apart.
    assert len(audio) == round(rate * 3 * (timing.duration_ms + timing.gap_ms) / 1000)


def test_pauses_are_silence_of_their_length() -> None:
    rate = 8000
    on, off = runs(render("1w2W3,4", rate), rate)
    assert [round(s / rate * 1000) for s in off] == [600, 1100, 600]
    assert len(on) == 4


def test_plan_seconds_matches_rendered_length() -> None:
    plan = TonePlan(parse_keys("12wW3"), Timing(60, 70))
    audio = ToneEngine(ToneSettings(rate=22050)).render(plan)
    assert plan.seconds == pytest.approx(3 * 0.13 + 1.5)
    assert len(audio) == round(plan.seconds * 22050)


def test_long_strings_do_not_drift() -> None:
    """128 digits at a rate where 70 ms is not a whole number of samples: the
    last digit still starts within half a sample of its ideal time."""
    rate = 22050
    audio = render("1" * 128, rate, Timing(45, 70))
    on, _off = runs(audio, rate)
    first_of_last = len(audio) - round(0.070 * rate) - on[-1]
    assert abs(first_of_last - 127 * 0.115 * rate) <= 1.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration_ms": 39}, "duration 39 ms is below the minimum 40 ms"),
        ({"duration_ms": 2001}, "duration 2001 ms is above the maximum 2000 ms"),
        ({"gap_ms": 49}, "gap 49 ms is below the minimum 50 ms"),
        ({"gap_ms": 5001}, "gap 5001 ms is above the maximum 5000 ms"),
    ],
)
def test_timing_limits(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ToneSettingsError, match=message):
        Timing(**kwargs)


def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(ToneSettingsError, match="rate 11025 Hz is not one of"):
        ToneSettings(rate=11025)


def test_plain_single_and_dual_tones() -> None:
    engine = ToneEngine(ToneSettings(rate=8000))
    beep = engine.tone((1000.0,), 250)
    assert len(beep) == 2000
    spectrum = np.abs(np.fft.rfft(beep.astype(float) * np.hanning(len(beep))))
    assert np.argmax(spectrum) * 8000 / len(beep) == pytest.approx(1000, abs=4)
    dial_tone = engine.tone((350.0, 440.0), 1000)
    hz, db = spectrum_db(dial_tone * np.hanning(len(dial_tone)), 8000)
    low_band, high_band = (hz > 300) & (hz < 400), (hz > 400) & (hz < 500)
    assert hz[low_band][np.argmax(db[low_band])] == pytest.approx(350, abs=1)
    assert hz[high_band][np.argmax(db[high_band])] == pytest.approx(440, abs=1)
    with pytest.raises(ToneSettingsError, match="outside 0 to 4000 Hz"):
        engine.tone((4100.0,), 100)


def test_routing_puts_tones_only_on_chosen_channels() -> None:
    mono = render("5")
    frames = route(mono, 2, frozenset({1}))
    assert frames.shape == (len(mono), 2)
    assert not frames[:, 0].any()
    assert np.array_equal(frames[:, 1], mono)


def test_wav_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames = route(render("12"), 3, frozenset({0, 2}))
    write_wav(tmp_path / "x.wav", frames, 8000)
    back, rate = read_wav(tmp_path / "x.wav")
    assert rate == 8000
    assert np.array_equal(back, frames)
