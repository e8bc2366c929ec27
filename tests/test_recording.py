"""Recordings that cannot lie: the simulated line's recorder, outside the line
interface, streaming to disk, bounded, and a fault whenever it cannot write.

The WAV files are judged by sox (``soxi``, ``sox -t raw``), not by the writer's
own reader; full disks are real ones, as near as a test can get: a file
size limit (``RLIMIT_FSIZE``) in a child process, and ``/dev/full``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.errors import LineFault
from gateway.keys import parse_keys
from gateway.lines import BuiltLine, build_line
from gateway.lines.base import HookState
from gateway.lines.recording import StreamingRecorder, WavFile, check_directory
from gateway.lines.simulated import SimulatedLine, SimulatedOptions
from gateway.tones import Timing, TonePlan, ToneSettings
from tests.support import decode_wav, needs_multimon

needs_sox = pytest.mark.skipif(shutil.which("soxi") is None, reason="sox is not installed")

RATE = 8000


def soxi(path: Path, flag: str) -> str:
    """What sox reads in a file's header: ``-s`` frames, ``-c`` channels, ``-r`` rate."""
    return subprocess.run(["soxi", flag, str(path)], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def sox_samples(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    raw = subprocess.run(["sox", str(path), "-t", "raw", "-e", "signed", "-b", "16", "-L", "-"],
                         capture_output=True, check=True, timeout=30).stdout
    return np.frombuffer(raw, dtype="<i2")


def simulated(tmp_path: Path, **options: Any) -> BuiltLine:
    opts = SimulatedOptions(record_dir=str(tmp_path / "rec"), time_scale=0.0, **options)
    return build_line("simulated", "line1", opts, ToneSettings(rate=RATE))


def plan(keys: str) -> TonePlan:
    return TonePlan(parse_keys(keys), Timing(50, 50))


def events(path: Path) -> list[str]:
    """The event log's lines without their timestamps."""
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


# -- the recorder is not the line ------------------------------------------------------


def test_the_line_interface_has_no_recording() -> None:
    from gateway.lines.base import LineDriver
    from gateway.lines.modem import ModemLine

    for cls in (LineDriver, SimulatedLine, ModemLine):
        for name in ("begin_call", "end_call", "recording_path"):
            assert not hasattr(cls, name), (cls.__name__, name)


@needs_multimon
def test_build_line_gives_the_simulated_line_its_recorder(tmp_path: Path) -> None:
    built = simulated(tmp_path)
    line, recorder = built.driver, built.recorder
    assert isinstance(line, SimulatedLine) and isinstance(recorder, StreamingRecorder)
    assert line.recorder is recorder
    line.open()
    line.place_call("1", Timing(50, 50))
    recorder.begin("AbC12")
    line.emit(plan("159#"))
    line.on_hook()
    recorder.end("AbC12")
    line.close()
    assert recorder.path("AbC12") == tmp_path / "rec" / "AbC12.wav"
    assert decode_wav(recorder.path("AbC12")) == "159#"
    logged = events(recorder.log_path("AbC12"))
    assert logged[0] == "call AbC12 begins" and logged[-1] == "call AbC12 ends"
    assert logged[1:-1] == ["emit all 4 symbols 4 digits 50/50 ms", "on-hook"]


@needs_sox
def test_audio_and_events_are_on_disk_as_they_happen(tmp_path: Path) -> None:
    """Nothing of a call waits in memory for its end: after each command the
    WAV is valid and complete so far, and the event is in the log."""
    built = simulated(tmp_path)
    line, recorder = built.driver, built.recorder
    assert isinstance(recorder, StreamingRecorder)
    line.open()
    line.off_hook()
    recorder.begin("live")
    line.emit(plan("12"))  # 2 x (50 + 50) ms
    assert soxi(recorder.path("live"), "-s") == str(RATE * 200 // 1000)
    assert events(recorder.log_path("live"))[-1] == "emit all 2 symbols 2 digits 50/50 ms"
    line.emit(plan("3"))
    assert soxi(recorder.path("live"), "-s") == str(RATE * 300 // 1000)
    assert len(events(recorder.log_path("live"))) == 3
    recorder.end("live")
    line.close()


@needs_sox
def test_a_recording_stops_at_max_record_s_and_the_call_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    built = simulated(tmp_path, max_record_s=1.0)
    line, recorder = built.driver, built.recorder
    assert isinstance(recorder, StreamingRecorder)
    line.open()
    line.off_hook()
    recorder.begin("long")
    with caplog.at_level("WARNING"):
        for _ in range(4):
            line.emit(plan("123456"))  # 0.6 s each: the bound falls inside the second
    assert line.hook is HookState.OFF_HOOK
    recorder.end("long")
    line.close()
    assert soxi(recorder.path("long"), "-s") == str(RATE)  # exactly max_record_s
    logged = events(recorder.log_path("long"))
    stops = [e for e in logged if e.startswith("recording stopped")]
    assert stops == ["recording stopped: max_record_s (1 s) reached; the call goes on"]
    # Nothing more is kept after the bound but the call's end.
    assert logged[logged.index(stops[0]) + 1 :] == ["call long ends"]
    assert [e for e in logged if e.startswith("emit")] == [
        "emit all 6 symbols 6 digits 50/50 ms"] * 2
    assert caplog.text.count("max_record_s") == 1
    # The next call records again from its start.
    line.open()
    line.off_hook()
    recorder.begin("next")
    line.emit(plan("1"))
    recorder.end("next")
    assert soxi(recorder.path("next"), "-s") == str(RATE // 10)


def test_max_record_s_is_a_documented_bounded_setting() -> None:
    from gateway.config import from_mapping
    from gateway.errors import ConfigError

    line = {"name": "a", "driver": "simulated"}
    assert from_mapping({"line": [line]}).lines[0].options.max_record_s == 600.0
    with pytest.raises(ConfigError, match=r"line\[0\]\.max_record_s: 4000\.0 is above"):
        from_mapping({"line": [{**line, "max_record_s": 4000.0}]})


# -- a directory that cannot take recordings --------------------------------------------


def test_a_missing_directory_is_made_at_the_first_call_not_before(tmp_path: Path) -> None:
    built = simulated(tmp_path)
    assert built.recorder is not None
    built.driver.open()
    built.driver.off_hook()
    built.driver.on_hook()
    built.driver.close()
    assert not (tmp_path / "rec").exists()
    built.driver.open()
    built.driver.off_hook()
    built.recorder.begin("first")
    assert (tmp_path / "rec" / "first.wav").is_file()
    built.recorder.end("first")
    built.driver.close()


def test_onhook_and_selftest_without_a_config_leave_no_directory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["onhook"]) == 0
    assert main(["selftest", "--keys", "1"]) == 0
    assert "line1: PASS" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["afile/rec", "/proc/nope"])
def test_open_refuses_a_record_dir_it_cannot_use(tmp_path: Path, where: str) -> None:
    (tmp_path / "afile").write_text("not a directory")
    opts = SimulatedOptions(record_dir=str(tmp_path / where), time_scale=0.0)
    built = build_line("simulated", "line1", opts, ToneSettings())
    with pytest.raises(LineFault) as fault:
        built.driver.open()
    message = str(fault.value)
    assert message.startswith(f"cannot record calls in {tmp_path / where}: ")
    assert message.endswith("afile is not a directory" if where == "afile/rec"
                            else "creating a file in /proc failed: No such file or directory")
    assert built.driver.hook is HookState.ON_HOOK


def test_a_directory_that_goes_bad_faults_the_line_before_it_seizes(tmp_path: Path) -> None:
    built = simulated(tmp_path)
    line = built.driver
    line.open()
    (tmp_path / "rec").write_text("the directory was replaced by a file")
    with pytest.raises(LineFault, match=r"rec is not a directory$"):
        line.place_call("1", Timing(50, 50))
    assert line.hook is HookState.ON_HOOK


def test_check_directory_leaves_nothing_behind(tmp_path: Path) -> None:
    check_directory(tmp_path / "a" / "b")
    check_directory(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_files_that_cannot_be_written_fail_begin_with_a_line_fault(tmp_path: Path) -> None:
    """``/dev/full`` answers every write ENOSPC: a full disk, for root too."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    recorder = StreamingRecorder("line1", tmp_path, RATE, 1, 60.0)
    (tmp_path / "wavfull.wav").symlink_to("/dev/full")
    with pytest.raises(LineFault, match=r"^cannot record the call: creating "
                       rf"{re.escape(str(tmp_path))}/wavfull\.wav: No space left on device$"):
        recorder.begin("wavfull")
    (tmp_path / "logfull.log").symlink_to("/dev/full")
    with pytest.raises(LineFault, match=r"writing .*/logfull\.log: No space left on device$"):
        recorder.begin("logfull")
    # A failed recording answers every later write with its fault, never silence.
    with pytest.raises(LineFault, match=r"logfull\.log"):
        recorder.audio(np.zeros(10, dtype=np.int16))
    recorder.end("logfull")
    recorder.audio(np.zeros(10, dtype=np.int16))  # no call: nothing to record


# -- a disk that fills during a call ----------------------------------------------------


def run_limited(script: str, limit: int, cwd: Path) -> dict[str, Any]:
    """``script`` in a child process whose files may grow to ``limit`` bytes;
    it prints one JSON object."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """)
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@needs_sox
def test_a_write_that_fills_the_disk_keeps_the_whole_frames_as_a_valid_wav(
    tmp_path: Path,
) -> None:
    # Stereo frames are 4 bytes; 44 + 10001 leaves a partial frame to cut back.
    limit = 44 + 10001
    result = run_limited("""
        import json, numpy as np
        from pathlib import Path
        from gateway.lines.recording import WavFile
        wav = WavFile(Path("cut.wav"), 8000, 2)
        frames = (np.arange(40000, dtype=np.int16) % 2000).reshape(-1, 2)
        wav.write(frames[:1000])
        try:
            wav.write(frames[1000:])
            error = None
        except OSError as exc:
            error = exc.strerror
        print(json.dumps({"error": error, "frames": wav.frames}))
    """, limit, tmp_path)
    assert result == {"error": "File too large", "frames": 10000 // 4}
    path = tmp_path / "cut.wav"
    assert os.path.getsize(path) == 44 + 10000
    assert (soxi(path, "-c"), soxi(path, "-r"), soxi(path, "-s")) == ("2", "8000", "2500")
    expected = np.arange(40000, dtype=np.int16) % 2000
    assert np.array_equal(sox_samples(path), expected[:5000])


@needs_multimon
def test_a_disk_that_fills_mid_command_is_a_fault_on_hook_and_the_audio_stays(
    tmp_path: Path,
) -> None:
    # 1 s of 8 kHz mono after the header: "12345" at 100/100 ms, then the limit.
    result = run_limited("""
        import json
        from pathlib import Path
        from gateway.errors import LineFault
        from gateway.keys import parse_keys
        from gateway.lines import build_line
        from gateway.lines.simulated import SimulatedOptions
        from gateway.tones import Timing, TonePlan, ToneSettings
        opts = SimulatedOptions(record_dir=str(Path("rec").resolve()), time_scale=0.0)
        built = build_line("simulated", "line1", opts, ToneSettings(rate=8000))
        built.driver.open()
        built.driver.off_hook()
        built.recorder.begin("full")
        try:
            built.driver.emit(TonePlan(parse_keys("1234567890"), Timing(100, 100)))
            fault = None
        except LineFault as exc:
            fault = str(exc)
        hook = built.driver.hook.value
        built.recorder.end("full")
        print(json.dumps({"fault": fault, "hook": hook}))
    """, 44 + 16000, tmp_path)
    assert result["fault"] == (f"cannot record the call: writing "
                               f"{tmp_path}/rec/full.wav: File too large")
    assert result["hook"] == "on-hook"
    assert decode_wav(tmp_path / "rec" / "full.wav") == "12345"
    assert events(tmp_path / "rec" / "full.log") == [
        "call full begins", "emit all 10 symbols 10 digits 100/100 ms"]


def test_wav_file_header_counts_the_data_after_every_write(tmp_path: Path) -> None:
    import wave

    wav = WavFile(tmp_path / "w.wav", RATE, 1)
    for n in (0, 7, 100):
        wav.write(np.ones(n, dtype=np.int16))
        with wave.open(str(tmp_path / "w.wav")) as check:
            assert check.getnframes() == wav.frames
    wav.close()
    assert wav.frames == 107
