"""Play: audio files from the media folder or a URL, of any common rate and
channel count, resampled for the line; refused where they may not come from
or are not audio; stopped at once by HangUp. Files are made by sox."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.tones import read_wav
from tests.conftest import Answer, call_api, simulated_line, wait_until
from tests.support import Receiver

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")


def sox_tone(path: Path, hz: float, seconds: float, rate: int, channels: int, bits: int,
             encoding: str = "signed-integer") -> Path:
    if bits == 8:
        encoding = "unsigned-integer"
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", str(channels), "-b", str(bits),
                    "-e", encoding, str(path), "synth", str(seconds), "sine", str(hz),
                    "vol", "0.5"], check=True, capture_output=True)
    return path


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


class Played:
    def __init__(self, app: Flask, media: Path) -> None:
        self.app = app
        self.media = media
        self.gateway: Gateway = app.extensions["dtmf_gateway"]
        self.client = app.test_client()

    def api(self, **params: str) -> Answer:
        return call_api(self.client, **params)

    def call(self) -> str:
        return self.api(command="Call", Dialed="1").text("CallId")

    def recording(self, call_id: str) -> np.ndarray:
        self.api(command="HangUp", CallId=call_id)
        recorder = self.gateway.lines["line1"].recorder
        assert recorder is not None
        samples, rate = read_wav(recorder.path(call_id))
        assert rate == 8000
        loud = np.flatnonzero(np.abs(samples) > 200)  # the audio, without the silence around it
        return samples[loud[0]: loud[-1] + 1]


@pytest.fixture
def played(make_app: Callable[..., Flask], tmp_path: Path) -> Played:
    media = tmp_path / "media"
    media.mkdir()
    return Played(make_app(), media)


@needs_sox
@pytest.mark.parametrize(("rate", "channels", "bits", "encoding"), [
    (8000, 1, 16, "signed-integer"), (44100, 2, 24, "signed-integer"),
    (48000, 1, 32, "signed-integer"), (22050, 2, 8, "unsigned-integer"),
    (16000, 6, 32, "floating-point"), (11025, 1, 64, "floating-point"),
])
def test_a_file_of_any_common_format_plays_at_the_lines_rate(
        played: Played, rate: int, channels: int, bits: int, encoding: str) -> None:
    sox_tone(played.media / "tone.wav", 1000, 0.5, rate, channels, bits, encoding)
    call_id = played.call()
    answer = played.api(command="Play", CallId=call_id, AudioFile="tone.wav")
    assert answer.code == 200, answer
    audio = played.recording(call_id)
    # Half a second at 8 kHz (within a ramp's worth), still 1 kHz.
    assert abs(len(audio) - 4000) < 80
    assert abs(peak_hz(audio, 8000) - 1000) < 5


@needs_sox
def test_repeat_and_timeout(played: Played) -> None:
    sox_tone(played.media / "beep.wav", 800, 0.25, 8000, 1, 16)
    call_id = played.call()
    assert played.api(command="Play", CallId=call_id, AudioFile="beep.wav",
                      Repeat="3").code == 200
    assert abs(len(played.recording(call_id)) - 6000) < 100
    call_id = played.call()
    assert played.api(command="Play", CallId=call_id, AudioFile="beep.wav", Repeat="true",
                      Timeout="0.6").code == 200
    assert abs(len(played.recording(call_id)) - 4800) < 100


@pytest.mark.parametrize(("audio_file", "detail"), [
    ("nosuch.wav", "no such file in the media folder"),
    ("../outside.wav", "is not a path inside the media folder"),
    ("/etc/passwd", "is not a path inside the media folder"),
    ("link.wav", "leads outside the media folder"),
    ("text.wav", "not a WAV file"),
    ("folder", "is a folder, not a file"),
    ("", "an AudioFile is needed"),
])
def test_what_may_not_be_played_is_302(played: Played, tmp_path: Path, audio_file: str,
                                       detail: str) -> None:
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    (played.media / "link.wav").symlink_to(tmp_path / "outside.wav")
    (played.media / "text.wav").write_text("hello, not audio")
    (played.media / "folder").mkdir()
    call_id = played.call()
    answer = played.api(command="Play", CallId=call_id, AudioFile=audio_file)
    assert answer.code == 302, answer
    assert "'AudioFile'" in answer.message and detail in answer.message
    # Nothing else of the call was harmed.
    assert played.api(command="SendDTMF", CallId=call_id, Keys="1", Party="all").code == 200


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Files served over HTTP on loopback (the tests' config opens 127.0.0.1)."""
    root = tmp_path / "web"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@needs_sox
def test_from_a_url_under_the_notification_rules(
        make_app: Callable[..., Flask], tmp_path: Path, web: tuple[str, Path]) -> None:
    base, root = web
    sox_tone(root / "tone.wav", 600, 0.4, 16000, 1, 16)
    p = Played(make_app(calls={"max_media_bytes": 20000}), tmp_path)
    call_id = p.call()
    assert p.api(command="Play", CallId=call_id, AudioFile=f"{base}/tone.wav").code == 200
    assert abs(peak_hz(p.recording(call_id), 8000) - 600) < 5
    call_id = p.call()
    refused = p.api(command="Play", CallId=call_id,
                    AudioFile=base.replace("127.0.0.1", "127.0.0.2") + "/tone.wav")
    assert refused.code == 302 and "refused by the notification policy" in refused.message
    sox_tone(root / "long.wav", 600, 2.0, 16000, 1, 16)  # 64 kB: over max_media_bytes
    too_big = p.api(command="Play", CallId=call_id, AudioFile=f"{base}/long.wav")
    assert too_big.code == 302 and "larger than 20000 bytes" in too_big.message


def test_a_tone_only_line_cannot_play(make_app: Callable[..., Flask]) -> None:
    from tests.test_mt8880_api import mt8880_line

    p = Played(make_app([mt8880_line(name="line1")]), Path("."))
    call_id = p.call()
    answer = p.api(command="Play", CallId=call_id, AudioFile="x.wav")
    assert answer.code == 303 and answer.message == (
        "Command 'Play' cannot be used here: a mt8880 line plays no audio")


@needs_sox
def test_in_ozml_a_bad_file_is_reported_and_the_script_goes_on(
        make_app: Callable[..., Flask], tmp_path: Path, receiver: Receiver) -> None:
    app = make_app()
    sox_tone(tmp_path / "media" / "ok.wav" if (tmp_path / "media").mkdir() is None
             else tmp_path, 1000, 0.2, 8000, 1, 16)
    doc = ("<Response><Play AudioFile='missing.wav'/><Play>ok.wav</Play>"
           "<SendDTMF Keys='1' Party='all'/></Response>")
    client = app.test_client()
    call_api(client, command="Call", Dialed="1", ResponseOzML=doc,
             ErrorUrl=f"{receiver.url}/error")
    (error,) = receiver.wait_for("Error")
    assert error["Code"] == "302" and "missing.wav" in error["Message"]
    gateway: Gateway = app.extensions["dtmf_gateway"]
    wait_until(lambda: not gateway.active_calls())
    events = [what for _, what in gateway.lines["line1"].driver.events]
    assert "play all 0.200 s" in events and any(e.startswith("emit all 1") for e in events)


@needs_sox
def test_hang_up_stops_a_long_play_at_once(make_app: Callable[..., Flask],
                                           tmp_path: Path) -> None:
    app = make_app([simulated_line(time_scale=1.0)])
    (tmp_path / "media").mkdir()
    sox_tone(tmp_path / "media" / "long.wav", 440, 30, 8000, 1, 16)
    p = Played(app, tmp_path / "media")
    call_id = p.call()
    answers: list[Answer] = []
    player = threading.Thread(target=lambda: answers.append(
        call_api(app.test_client(), command="Play", CallId=call_id, AudioFile="long.wav")))
    player.start()
    wait_until(lambda: any(w.startswith("play") for _, w in p.gateway.lines["line1"].driver.events))
    started = time.monotonic()
    assert p.api(command="HangUp", CallId=call_id).code == 200
    player.join(5)
    assert not player.is_alive() and time.monotonic() - started < 5
    assert answers[0].code == 601
