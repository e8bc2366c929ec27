"""The tone engine against Q.23/Q.24, checked by numpy FFT and by multimon-ng."""

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest

from gateway.errors import ToneSettingsError
from gateway.keys import KEYS, parse_keys
from gateway.tones import (
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

# ITU-T Q.23, typed in here so that a wrong table in the engine fails: (low Hz, high Hz).
Q23: dict[str, tuple[float, float]] = {
    key: (low, high)
    for row, low in zip(("123A", "456B", "789C", "*0#D"), (697.0, 770.0, 852.0, 941.0), strict=True)
    for key, high in zip(row, (1209.0, 1336.0, 1477.0, 1633.0), strict=True)
}


Pcm = npt.NDArray[np.int16]
Floats = npt.NDArray[np.float64]


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


def half_amplitude_edges(audio: Pcm, rate: int, keys: str) -> list[tuple[float, float]]:
    """Where each tone burst rises through and falls through half its steady
    amplitude (-6 dB), in samples from the start of ``audio``.

    A burst is a run of non-zero samples (a sine's own zero crossings last one
    sample, so quiet shorter than 1 ms does not end one). Its steady middle is
    fitted with its key's two Q.23 sines, amplitudes and phases free; the fit,
    carried over the edges, divides the audio into the envelope, read where
    the fit is not near a zero of its own. The half-amplitude time is a
    straight line fitted through the envelope's points between a quarter and
    three quarters: a ramp symmetric about its midpoint, as any sensible one
    is, puts the line's 0.5 exactly there."""
    pad = 16
    padded = np.concatenate([np.zeros(pad), audio.astype(np.float64), np.zeros(pad)])
    nonzero = np.flatnonzero(padded)
    breaks = np.flatnonzero(np.diff(nonzero) > rate // 1000)
    firsts = np.concatenate([[nonzero[0]], nonzero[breaks + 1]])
    lasts = np.concatenate([nonzero[breaks], [nonzero[-1]]])
    assert len(firsts) == len(keys), f"{len(firsts)} bursts for {len(keys)} keys"
    guard = 8 * rate // 1000  # longer than any ramp, so the fit sees the steady tone only
    edges = []
    for first, last, key in zip(firsts, lasts, keys, strict=True):
        n = np.arange(first - 2, last + 3)
        x = padded[n]
        omega = 2 * np.pi * np.array(Q23[key]) / rate
        basis = np.hstack([np.cos(np.outer(n, omega)), np.sin(np.outer(n, omega))])
        steady = slice(guard, len(n) - guard)
        coef = np.linalg.lstsq(basis[steady], x[steady], rcond=None)[0]
        fit = basis @ coef
        usable = np.abs(fit) > 0.05 * np.abs(fit).max()
        envelope = np.divide(x, fit, out=np.full(len(n), np.nan), where=usable)
        middle = (envelope >= 0.25) & (envelope <= 0.75)
        crossings = []
        for side in (n < first + guard, n > last - guard):
            points = middle & side
            assert points.sum() >= 2, "too few points on a ramp to time it"
            slope, intercept = np.polyfit(envelope[points], n[points], 1)
            crossings.append(float(slope * 0.5 + intercept) - pad)
        edges.append((crossings[0], crossings[1]))
    return edges


#: Each edge sits on the sample nearest its ideal time: half a sample either
#: way, plus what the measurement adds (16-bit rounding of the envelope; at
#: most 0.025 sample seen at any rate). A length between two edges is then
#: within a sample.
HALF_SAMPLE = 0.5 + 0.03
ONE_SAMPLE = 2 * HALF_SAMPLE


def ideal_samples(ms: float, rate: int) -> float:
    return ms * rate / 1000


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
    want_low, want_high = Q23[key]
    assert abs(low_hz - want_low) / want_low < 0.001
    assert abs(high_hz - want_high) / want_high < 0.001


@pytest.mark.parametrize("twist", [0.0, 2.0, 3.0, -3.0])
@pytest.mark.parametrize("key", ["1", "5", "#", "D"])
def test_twist_within_half_a_db(key: str, twist: float) -> None:
    rate = 16000
    audio = render(key, rate, Timing(500, 100), twist_db=twist)[: rate // 2]
    _, low_mag, _, high_mag = peaks(audio, rate)
    assert abs(20 * np.log10(high_mag / low_mag) - twist) < 0.5



def spectrum_db(x: Floats, rate: int) -> tuple[Floats, Floats]:
    n = 1 << (len(x) * 8 - 1).bit_length()
    return np.fft.rfftfreq(n, 1 / rate), 20 * np.log10(np.abs(np.fft.rfft(x, n)) + 1e-9)


def margin_db(burst: Pcm, rate: int, key: str, window: bool, width_hz: float) -> float:
    """How far below the weaker tone the strongest component is, more than
    ``width_hz`` from either tone."""
    x = burst.astype(np.float64) * (np.hanning(len(burst)) if window else 1.0)
    hz, db = spectrum_db(x, rate)
    low, high = Q23[key]
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
    to 1209 Hz is 268 Hz). A hard-edged burst (made here, at the same levels)
    fails this; ours passes with the default ramp and the longest. (A ramp
    under about 3 ms does little here: 1 ms gains a dB or two on none.)"""
    window = rate * 3 // 20  # the whole burst: it sounds half a ramp past 100 ms
    n = np.arange(rate // 10)
    low, high = Q23[key]
    hard = np.round(32767 * (10 ** (-12 / 20) * np.sin(2 * np.pi * low * n / rate)
                             + 10 ** (-10 / 20) * np.sin(2 * np.pi * high * n / rate)))
    assert margin_db(np.pad(hard, (0, window - len(n))), rate, key, False, 250) < 40
    for ramp_ms in (4.0, 5.0):
        ramped = render(key, rate, ramp_ms=ramp_ms)[:window]
        assert margin_db(ramped, rate, key, window=False, width_hz=250) >= 40


@pytest.mark.parametrize(
    ("twist", "loudest"), [(2.0, -8.08), (3.0, -8.65), (-3.0, -5.65), (0.0, -7.03)]
)
def test_the_loudest_level_leaves_the_true_peak_a_decibel_below_full_scale(
    twist: float, loudest: float
) -> None:
    """Two sines' peaks meet sooner or later, so the true peak is the sum of
    their amplitudes: 1 dB below full scale at ``loudest`` (worked out here:
    -1 - 20 log10(1 + 10^(twist/20)), rounded down to 0.01 dB), not 0.01 dB more."""
    assert ToneSettings(level_dbfs=loudest, twist_db=twist)
    louder = round(loudest + 0.01, 2)
    with pytest.raises(ToneSettingsError) as info:
        ToneSettings(level_dbfs=louder, twist_db=twist)
    assert str(info.value) == (
        f"level {louder:g} dBFS is outside -60 to {loudest:g} dBFS at {twist:g} dB twist"
        " (true peak 1 dB below full scale)"
    )


def check_edges(
    edges: list[tuple[float, float]], rate: int, timing: Timing, starts_ms: list[float],
    ramp_ms: float = 4.0,
) -> None:
    """Each tone starts at its ideal time and lasts ``duration`` at -6 dB, and
    each gap lasts ``gap``, to the nearest sample: over a long string too, so
    nothing drifts. The whole timeline lies a whole number of samples late,
    at most half a ramp, so the first ramp can rise before the first edge."""
    lag = round(edges[0][0])
    assert 0 <= lag <= ramp_ms * rate / 2000
    for (start, end), start_ms in zip(edges, starts_ms, strict=True):
        assert abs(start - lag - ideal_samples(start_ms, rate)) <= HALF_SAMPLE, start_ms
        end_ms = start_ms + timing.duration_ms
        assert abs(end - lag - ideal_samples(end_ms, rate)) <= HALF_SAMPLE, end_ms
        assert abs(end - start - ideal_samples(timing.duration_ms, rate)) <= ONE_SAMPLE
    for (_, end), (start, _) in itertools.pairwise(edges):
        assert start - end >= ideal_samples(timing.gap_ms, rate) - ONE_SAMPLE


def evenly(count: int, timing: Timing) -> list[float]:
    """Ideal start times of ``count`` digits with no pauses between them."""
    return [k * (timing.duration_ms + timing.gap_ms) for k in range(count)]


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("ramp_ms", [1.0, 4.0, 5.0])
@pytest.mark.parametrize(
    "timing", [Timing(), MIN_TIMING, Timing(73, 127), Timing(2000, 50)], ids=str
)
def test_tones_and_gaps_last_their_time_between_the_half_amplitude_points(
    rate: int, ramp_ms: float, timing: Timing
) -> None:
    """What a receiver times: a 40 ms tone is 40 ms at -6 dB, with the
    longest ramp too, and a 50 ms gap is 50 ms."""
    audio = render("1D5", rate, timing, ramp_ms=ramp_ms)
    check_edges(half_amplitude_edges(audio, rate, "1D5"), rate, timing, evenly(3, timing), ramp_ms)
    # The plan ends with its last gap, so two plans back to back stay apart.
    assert len(audio) == round(rate * 3 * (timing.duration_ms + timing.gap_ms) / 1000)


@pytest.mark.parametrize("rate", SAMPLE_RATES)
def test_plans_back_to_back_keep_the_whole_gap(rate: int) -> None:
    """The last gap of one plan and the start of the next add up to the gap at
    -6 dB: the ramp that sounds before a plan's first half-amplitude point is
    the part of the gap the previous plan left over."""
    engine = ToneEngine(ToneSettings(rate=rate, ramp_ms=5.0))
    first = engine.render(TonePlan(parse_keys("12"), MIN_TIMING))
    second = engine.render(TonePlan(parse_keys("3"), MIN_TIMING))
    edges = half_amplitude_edges(np.concatenate([first, second]), rate, "123")
    check_edges(edges, rate, MIN_TIMING, evenly(3, MIN_TIMING), ramp_ms=5.0)


def test_pauses_are_silence_of_their_length() -> None:
    """A pause adds its time to the gap before it, between -6 dB points."""
    rate = 8000
    edges = half_amplitude_edges(render("1w2W3,4", rate), rate, "1234")
    check_edges(edges, rate, Timing(), [0, 700, 1900, 2600])


def test_plan_seconds_matches_rendered_length() -> None:
    plan = TonePlan(parse_keys("12wW3"), Timing(60, 70))
    audio = ToneEngine(ToneSettings(rate=22050)).render(plan)
    assert plan.seconds == pytest.approx(3 * 0.13 + 1.5)
    assert len(audio) == round(plan.seconds * 22050)


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("timing", [MIN_TIMING, Timing(45, 70), Timing()], ids=str)
def test_long_strings_do_not_drift(rate: int, timing: Timing) -> None:
    """128 digits, at timings and rates where a tone or gap is not a whole
    number of samples (45 ms at 22050 Hz is 992.25): every tone, every gap
    and the start of digit 127 are where they belong to within a sample."""
    keys = "0123456789*#ABCD" * 8
    audio = render(keys, rate, timing)
    check_edges(half_amplitude_edges(audio, rate, keys), rate, timing, evenly(128, timing))


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 11025}, "rate 11025 Hz is not one of 8000, 16000, 22050, 44100, 48000"),
        ({"twist_db": -3.5}, "twist -3.5 dB is outside -3 to +3 dB"),
        ({"twist_db": 3.5}, "twist 3.5 dB is outside -3 to +3 dB"),
        ({"twist_db": math.nan}, "twist nan dB is outside -3 to +3 dB"),
        ({"ramp_ms": 0.5}, "ramp 0.5 ms is outside 1 to 5 ms"),
        ({"ramp_ms": 5.5}, "ramp 5.5 ms is outside 1 to 5 ms"),
        ({"ramp_ms": math.inf}, "ramp inf ms is outside 1 to 5 ms"),
        ({"level_dbfs": -60.5}, "level -60.5 dBFS is outside -60 to -8.08 dBFS at 2 dB twist"),
        ({"level_dbfs": math.nan}, "level nan dBFS is outside -60 to -8.08 dBFS"),
        ({"level_dbfs": -math.inf}, "level -inf dBFS is outside -60 to -8.08 dBFS"),
    ],
)
def test_settings_outside_their_range_are_refused_by_name(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ToneSettingsError) as info:
        ToneSettings(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_the_edges_of_every_range_are_accepted() -> None:
    for rate in (8000, 48000):
        for twist, level in ((-3.0, -5.65), (3.0, -8.65), (2.0, -60.0)):
            for ramp in (1.0, 5.0):
                assert ToneSettings(rate, level, twist, ramp).ramp_ms == ramp


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
