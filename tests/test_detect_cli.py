"""``dtmf-gateway detect``: recordings made by sox in, one event per line out; bad files refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import sox_signals as sx
from tests.sox_signals import needs_sox

pytestmark = needs_sox


def detect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "detect", *args],
                          capture_output=True, text=True, timeout=120)


def sox(*args: str) -> None:
    subprocess.run([sx.SOX or "sox", "-D", "-R", "-V1", *args], check=True, timeout=60)


@pytest.fixture
def line_recording(tmp_path: Path) -> Path:
    """44.1 kHz stereo, as arecord on a HAT might make it: dial tone, keys, busy,
    on the first channel; other keys on the second."""
    parts = [(0.2, []), (1.5, [(350.0, -16.0), (440.0, -16.0)]), (0.5, [])]
    parts += sx.keys("90#", on_s=0.08, off_s=0.1, lead_s=0.0)
    parts += [(1.0, []), *sx.cadence((480, 620), (500, 500), 3.0), (1.5, [])]
    raw = sx.synth(parts, rate=44100)
    raw.astype("<i2").tofile(tmp_path / "left.raw")
    right = sx.synth(sx.keys("1111111111", on_s=0.1, off_s=0.1), rate=44100)
    right.astype("<i2").tofile(tmp_path / "right.raw")
    out = tmp_path / "line.wav"
    fmt = ["-t", "raw", "-r", "44100", "-e", "signed", "-b", "16", "-c", "1"]
    sox("-M", *fmt, str(tmp_path / "left.raw"), *fmt, str(tmp_path / "right.raw"), str(out))
    return out


def test_readable_lines_in_time_order(line_recording: Path) -> None:
    result = detect(str(line_recording))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    words = [line.split(None, 1)[1] for line in lines]
    assert words == ["tone dial (us)", "tone_end dial", "dtmf 9 (80 ms)", "dtmf 0 (80 ms)",
                     "dtmf # (80 ms)", "silence", "tone busy (us)", "tone_end busy",
                     "silence"], lines
    times = [float(line.split()[0]) for line in lines]
    assert times == sorted(times)
    assert times[0] == pytest.approx(0.2, abs=0.02)


def test_json_lines(line_recording: Path) -> None:
    result = detect(str(line_recording), "--json", "--country", "US")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[2] == {"t": pytest.approx(2.2, abs=0.005), "event": "dtmf", "key": "9",
                         "duration_ms": 80}
    assert events[0]["event"] == "tone" and events[0]["country"] == "us"
    assert [e["event"] for e in events].count("dtmf") == 3


def test_another_countrys_tones(tmp_path: Path) -> None:
    path = tmp_path / "de.wav"
    sox("-r", "16000", "-n", "-b", "16", str(path), "synth", "0.3", "sine", "0", ":",
        "synth", "3", "sine", "425", "gain", "-16")
    result = detect(str(path), "--country", "de")
    assert [line.split(None, 1)[1] for line in result.stdout.splitlines()] == [
        "tone dial (de)", "tone_end dial"], result.stdout


def bad_files(tmp: Path) -> list[tuple[Path, str]]:
    text = tmp / "notes.wav"
    text.write_text("not audio at all\n")
    eight, float32, a_law, empty = (tmp / f"{n}.wav" for n in ("u8", "f32", "alaw", "empty"))
    sox("-n", "-r", "8000", "-b", "8", "-e", "unsigned", str(eight), "synth", "0.2", "sine", "440")
    sox("-n", "-r", "8000", "-b", "32", "-e", "floating-point", str(float32), "synth", "0.2",
        "sine", "440")
    sox("-n", "-r", "8000", "-e", "a-law", str(a_law), "synth", "0.2", "sine", "440")
    sox("-n", "-r", "8000", "-b", "16", str(empty), "trim", "0", "0")
    wide = tmp / "s24.wav"
    sox("-n", "-r", "8000", "-b", "24", str(wide), "synth", "0.2", "sine", "440")
    return [
        (tmp / "missing.wav", f"cannot read {tmp / 'missing.wav'}: No such file or directory"),
        (text, f"{text}: not a WAV file"),
        (eight, f"{eight}: 8-bit PCM; detect reads 16-bit PCM"),
        (wide, f"{wide}: 24-bit PCM; detect reads 16-bit PCM"),
        (float32, f"{float32}: floating-point audio; detect reads 16-bit PCM"),
        (a_law, f"{a_law}: A-law audio; detect reads 16-bit PCM"),
        (empty, f"{empty}: no audio (empty WAV file)"),
        (tmp, f"cannot read {tmp}: Is a directory"),
    ]


def test_bad_files_get_one_line_and_status_2(tmp_path: Path) -> None:
    for path, message in bad_files(tmp_path):
        result = detect(str(path))
        assert result.returncode == 2, (path, result.stderr)
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"dtmf-gateway: error: {message}"), result.stderr


def test_an_unknown_country_is_one_line_and_status_2(line_recording: Path) -> None:
    result = detect(str(line_recording), "--country", "zz")
    assert result.returncode == 2
    assert result.stderr == ("dtmf-gateway: error: unknown country 'zz' (one of: at, au, ca, "
                             "ch, de, es, fr, hu, it, jp, nl, nz, uk, us)\n")
