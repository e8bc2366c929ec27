"""The edges of every tone setting, judged by independent tools: renders of
``dtmf-gateway render`` through a telephone channel made by sox (8 kHz,
300-3400 Hz band-pass, G.711 mu-law and A-law) decoded by multimon-ng; the
true peak measured with numpy; out-of-range values in the config refused.

Expected values are typed in here from the standards, not read from the engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from gateway.cli import main
from gateway.config import from_mapping
from gateway.errors import ConfigError
from gateway.keys import parse_keys
from gateway.tones import SAMPLE_RATES, Timing, ToneEngine, TonePlan, ToneSettings, read_wav
from tests.support import multimon_decode, needs_multimon

Pcm = npt.NDArray[np.int16]

SOX = shutil.which("sox")
# As with multimon-ng, CI runs these whatever: a missing sox fails there.
needs_sox = pytest.mark.skipif(SOX is None and not os.environ.get("CI"),
                               reason="sox is not installed (apt-get install sox)")

ALL_KEYS = "0123456789*#ABCD"
#: The largest magnitude each G.711 law decodes to, on a 16-bit scale (mu-law
#: 8031 of 8159 in its 14-bit range, A-law 4032 of 4096 in its 13-bit range):
#: a sample above it is clipped by the encoder.
G711_CEILING = {"mu-law": 32124, "a-law": 32256}
#: The loudest low-group level the engine must accept at each twist, worked
#: out here: the sum of both amplitudes 1 dB below full scale,
#: -1 - 20 log10(1 + 10^(twist/20)) dBFS, rounded down to 0.01 dB.
LOUDEST = {-3.0: -5.65, 2.0: -8.08, 3.0: -8.65}


def sox(args: list[str], audio: bytes) -> tuple[bytes, str]:
    assert SOX is not None
    done = subprocess.run([SOX, "-D", *args], input=audio, capture_output=True, check=True,
                          timeout=60)
    return done.stdout, done.stderr.decode()


def telephone_channel(samples: Pcm, rate: int, law: str) -> tuple[Pcm, Pcm, str]:
    """``samples`` resampled to 8 kHz and band-passed to 300-3400 Hz, then
    coded and decoded in G.711 ``law``. Returns the band-passed 16-bit audio,
    what the far end hears, and everything sox warned about (it reports each
    clipped sample)."""
    pcm16 = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1"]
    g711 = ["-t", "raw", "-e", law, "-b", "8", "-c", "1", "-r", "8000"]
    band, warned = sox([*pcm16, "-r", str(rate), "-", *pcm16, "-r", "8000", "-",
                        "rate", "8000", "sinc", "300-3400"], samples.astype("<i2").tobytes())
    coded, warned_coding = sox([*pcm16, "-r", "8000", "-", *g711, "-"], band)
    heard, warned_decoding = sox([*g711, "-", *pcm16, "-r", "8000", "-"], coded)
    return (np.frombuffer(band, "<i2").astype(np.int16),
            np.frombuffer(heard, "<i2").astype(np.int16),
            warned + warned_coding + warned_decoding)


def rendered(tmp_path: Path, keys: str, *options: str) -> tuple[Pcm, int]:
    out = tmp_path / "keys.wav"
    assert main(["render", keys, "-o", str(out), *options]) == 0
    samples, rate = read_wav(out)
    return samples, rate


# (keys, options): each edge of each range, the others at their defaults
# unless the edge is only an edge together with another (the longest ramp
# matters at the shortest tone).
EDGES = [
    pytest.param(ALL_KEYS, ["--twist", "-3"], id="twist-low"),
    pytest.param(ALL_KEYS, ["--twist", "3"], id="twist-high"),
    pytest.param(ALL_KEYS, ["--twist", "-3", "--duration", "40", "--gap", "50"],
                 id="twist-low-shortest"),
    pytest.param(ALL_KEYS, ["--twist", "3", "--duration", "40", "--gap", "50"],
                 id="twist-high-shortest"),
    pytest.param(ALL_KEYS, ["--ramp", "5", "--duration", "40", "--gap", "50"],
                 id="longest-ramp-shortest-tone"),
    pytest.param("1111" + ALL_KEYS, ["--ramp", "5", "--duration", "40", "--gap", "50",
                                     "--rate", "48000"], id="longest-ramp-shortest-tone-48k"),
    pytest.param(ALL_KEYS, ["--ramp", "1", "--duration", "40", "--gap", "50"],
                 id="shortest-ramp"),
    pytest.param("1D", ["--duration", "2000", "--gap", "5000"], id="longest-tone-and-gap"),
    pytest.param(ALL_KEYS, ["--level", "-60"], id="quietest"),
    *(pytest.param(ALL_KEYS, ["--rate", str(rate), "--twist", str(twist), "--level",
                              str(level), "--duration", "40", "--gap", "50"],
                   id=f"loudest-{rate}-twist{twist:+g}")
      for rate in SAMPLE_RATES for twist, level in LOUDEST.items()),
]


@needs_multimon
@needs_sox
@pytest.mark.parametrize("law", ["mu-law", "a-law"])
@pytest.mark.parametrize(("keys", "options"), EDGES)
def test_every_edge_survives_a_telephone_channel(
    tmp_path: Path, keys: str, options: list[str], law: str
) -> None:
    samples, rate = rendered(tmp_path, keys, *options)
    band, heard, warned = telephone_channel(samples, rate, law)
    assert "clip" not in warned, warned
    assert int(np.abs(band.astype(np.int32)).max()) < G711_CEILING[law]
    assert multimon_decode(heard, 8000) == keys


def true_peak_dbfs(samples: Pcm, oversample: int = 8) -> float:
    """The peak between samples too: the band-limited signal rebuilt at
    ``oversample`` times the rate by zero-padding its spectrum."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    rebuilt = np.fft.irfft(spectrum, len(samples) * oversample) * oversample
    return float(20 * np.log10(np.abs(rebuilt).max() / 32767))


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize(("twist", "level"), LOUDEST.items())
@pytest.mark.parametrize("ramp_ms", [1.0, 4.0, 5.0])
def test_the_loudest_true_peak_stays_a_decibel_below_full_scale(
    rate: int, twist: float, level: float, ramp_ms: float
) -> None:
    """Every key at the shortest timing: 16 chances for the two sines' peaks
    to meet, and 32 ramps. The render starts and ends in silence, so the
    spectrum's wrap-around adds no edge of its own."""
    engine = ToneEngine(ToneSettings(rate, level, twist, ramp_ms))
    audio = engine.render(TonePlan(parse_keys(ALL_KEYS), Timing(40, 50)))
    assert true_peak_dbfs(audio) <= -1.0
    # Not a margin bought by a quiet render: the peak is within 0.05 dB of it.
    assert true_peak_dbfs(audio) > -1.05


@pytest.mark.parametrize(
    ("tones", "message"),
    [
        ({"twist_db": -3.5}, "tones.twist_db: -3.5 is below the minimum -3.0"),
        ({"twist_db": 3.5}, "tones.twist_db: 3.5 is above the maximum 3.0"),
        ({"ramp_ms": 0.5}, "tones.ramp_ms: 0.5 is below the minimum 1.0"),
        ({"ramp_ms": 5.5}, "tones.ramp_ms: 5.5 is above the maximum 5.0"),
        ({"level_dbfs": -60.5}, "tones.level_dbfs: -60.5 is below the minimum -60.0"),
        ({"level_dbfs": -8.07}, "tones.level_dbfs: -8.07 is above the maximum -8.08 at "
                                "twist_db 2.0 (the true peak of both tones 1 dB below"),
        ({"level_dbfs": -8.64, "twist_db": 3}, "tones.level_dbfs: -8.64 is above the maximum "
                                               "-8.65 at twist_db 3.0"),
        ({"level_dbfs": -5.64, "twist_db": -3}, "tones.level_dbfs: -5.64 is above the maximum "
                                                "-5.65 at twist_db -3.0"),
        ({"level_dbfs": float("nan")}, "tones.level_dbfs: nan is not a finite number"),
        ({"twist_db": float("-inf")}, "tones.twist_db: -inf is not a finite number"),
        ({"duration_ms": 39}, "tones.duration_ms: 39 is below the minimum 40"),
        ({"gap_ms": 5001}, "tones.gap_ms: 5001 is above the maximum 5000"),
        ({"rate": 11025}, "tones.rate: 11025 is not one of 8000, 16000, 22050, 44100, 48000"),
    ],
)
def test_the_config_refuses_values_outside_each_range(
    tones: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"tones": tones})
    assert str(info.value).startswith(message), str(info.value)


def test_the_config_accepts_the_edges() -> None:
    for tones in ({"twist_db": -3.0, "level_dbfs": -5.65, "ramp_ms": 5.0},
                  {"twist_db": 3.0, "level_dbfs": -8.65, "ramp_ms": 1.0},
                  {"level_dbfs": -60.0, "duration_ms": 40, "gap_ms": 50}):
        config = from_mapping({"tones": tones}).tones
        assert {key: getattr(config, key) for key in tones} == tones


def test_a_config_out_of_range_is_one_line_at_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text("[tones]\ntwist_db = 4.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "onhook", "--config", str(tmp_path / "gateway.toml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == "dtmf-gateway: error: tones.twist_db: 4.0 is above the maximum 3.0\n"
