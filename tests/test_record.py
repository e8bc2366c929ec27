"""Record on a line that hears (the alsa line's capture, a far end made by
sox and espeak-ng): what the far end says goes into the recordings folder,
until a finish digit, silence, the duration or the call's end, then
RecordCompleted; the file is downloadable by a user who may Record."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from gateway.tones import read_wav
from tests.alsa_tap import AlsaTap
from tests.conftest import PASSWORD, USER, call_api, wait_until
from tests.sox_signals import needs_espeak, needs_sox
from tests.support import Receiver
from tests.test_alsa_hearing import DIALED, Hat, answered

pytestmark = [needs_sox, needs_espeak, pytest.mark.usefixtures("mock_pins")]


@pytest.fixture
def hat(tap: AlsaTap, make_app: Callable[..., Flask], tmp_path: Path) -> Hat:
    return Hat(tap, make_app, tmp_path)


def spoken(samples: np.ndarray, rate: int) -> float:
    """Seconds of the recording that carry sound (20 ms frames above -40 dBFS)."""
    frame = rate // 50
    frames = samples[: len(samples) // frame * frame].astype(np.float64).reshape(-1, frame)
    loud = np.sqrt((frames ** 2).mean(axis=1)) > 32768 * 10 ** (-40 / 20)
    return float(loud.sum()) / 50


def start_call(hat: Hat, far_after_answer: Callable[[object], object]) -> str:
    far = answered(rings=1)
    far_after_answer(far)
    hat.start(far)
    answer = hat.api(command="Call", Dialed=DIALED)
    assert answer.code == 200, answer
    return answer.text("CallId")


def test_a_finish_digit_ends_the_recording_which_holds_the_speech(
        hat: Hat, receiver: Receiver) -> None:
    call_id = start_call(hat, lambda far: far.silence(0.5).speech(  # type: ignore[attr-defined]
        "Please leave your message after the tone. This is the message.").keys(
        "#", on_s=0.1, off_s=0.2).silence(30.0))
    answer = hat.api(command="Record", CallId=call_id, FinishDigits="#",
                     FinishedUrl=f"{receiver.url}/done")
    assert answer.code == 200, answer
    name = answer.text("RecordingName")
    assert name == f"{call_id}-1.wav"
    (done,) = receiver.wait_for("RecordCompleted", timeout=60)
    assert done["RecordingName"] == name and done["Reason"] == "finish digit #"
    assert done["RecordUrl"] == f"/recordings/{name}" and done["CallId"] == call_id
    samples, rate = read_wav(hat.dir / "recordings" / name)
    assert rate == 8000 and float(done["Duration"]) == pytest.approx(len(samples) / rate,
                                                                     abs=0.01)
    # The speech is in it (seconds of sound, not a silent file), and it ended
    # at the key, long before the 30 s of silence after it.
    assert spoken(samples, rate) > 2.0 and len(samples) / rate < 15
    assert hat.api(command="HangUp", CallId=call_id).code == 200


def test_inactivity_and_duration_end_it_and_so_does_the_call(hat: Hat,
                                                            receiver: Receiver) -> None:
    call_id = start_call(hat, lambda far: far.speech(  # type: ignore[attr-defined]
        "Short.").silence(60.0))
    first = hat.api(command="Record", CallId=call_id, Inactivity="2",
                    FinishedUrl=f"{receiver.url}/done")
    second = hat.api(command="Record", CallId=call_id, Duration="1.5",
                     FinishedUrl=f"{receiver.url}/done")
    assert first.code == second.code == 200
    reasons = {d["RecordingName"]: d for d in receiver.wait_for("RecordCompleted", count=2,
                                                                timeout=60)}
    assert reasons[first.text("RecordingName")]["Reason"] == "inactivity"
    timed = reasons[second.text("RecordingName")]
    assert timed["Reason"] == "duration" and 1.5 <= float(timed["Duration"]) < 1.8
    third = hat.api(command="Record", CallId=call_id, FinishedUrl=f"{receiver.url}/done")
    assert hat.api(command="HangUp", CallId=call_id).code == 200
    (*_, last) = receiver.wait_for("RecordCompleted", count=3, timeout=60)
    assert last["RecordingName"] == third.text("RecordingName")
    assert last["Reason"] == "the call ended"


def test_the_recording_is_downloaded_by_a_user_who_may_record(hat: Hat,
                                                               receiver: Receiver) -> None:
    call_id = start_call(hat, lambda far: far.speech("Hello.").silence(30.0))  # type: ignore[attr-defined]
    name = hat.api(command="Record", CallId=call_id, Duration="1",
                   FinishedUrl=f"{receiver.url}/done").text("RecordingName")
    receiver.wait_for("RecordCompleted", timeout=60)
    hat.api(command="HangUp", CallId=call_id)
    assert hat.app is not None
    client = hat.app.test_client()
    assert (hat.dir / "recordings" / name).stat().st_size > 44 + 8000
    query = urllib.parse.urlencode({"Username": USER, "Password": PASSWORD})
    got = client.get(f"/recordings/{name}?{query}")
    assert got.status_code == 200 and got.content_type == "audio/wav"
    assert got.data == (hat.dir / "recordings" / name).read_bytes()
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert client.get(f"/recordings/{name}",
                      headers={"Authorization": f"Basic {basic}"}).status_code == 200
    # The API's codes for the rest: no credentials, a user who may not, no such file.
    assert b"<Code>304</Code>" in client.get(f"/recordings/{name}").data
    listener = urllib.parse.urlencode({"Username": "listener", "Password": "listen-only"})
    assert b"<Code>306</Code>" in client.get(f"/recordings/{name}?{listener}").data
    for bad in ("nosuch-1.wav", "..%2Fusers.toml", "x.wav"):
        assert client.get(f"/recordings/{bad}?{query}").status_code == 404


def test_a_line_that_hears_nothing_cannot_record(make_app: Callable[..., Flask],
                                                 receiver: Receiver) -> None:
    app = make_app()  # a simulated line without a far end: nothing to hear
    client = app.test_client()
    call_id = call_api(client, command="Call", Dialed="1").text("CallId")
    answer = call_api(client, command="Record", CallId=call_id)
    assert answer.code == 303 and "records nothing" in answer.message
    bad = call_api(client, command="Record", CallId=call_id, Format="mp3")
    assert bad.code == 302 and "'Format'" in bad.message
    assert call_api(client, command="HangUp", CallId=call_id).code == 200
    doc = "<Response><Record Duration='1'/><SendDTMF Keys='1' Party='all'/></Response>"
    call_api(client, command="Call", Dialed="1", ResponseOzML=doc,
             ErrorUrl=f"{receiver.url}/error")
    (error,) = receiver.wait_for("Error")
    assert error["Code"] == "303"


def test_record_in_ozml_holds_the_script_until_it_ends(hat: Hat, receiver: Receiver,
                                                       tmp_path: Path) -> None:
    far = answered(rings=1).silence(0.5).speech("My message.").keys("5").silence(30.0)
    hat.start(far)
    doc = (f"<Response><Record FinishDigits='5' FinishedUrl='{receiver.url}/done'/>"
           "<SendDTMF Keys='9' Party='all'/></Response>")
    assert hat.api(command="Call", Dialed=DIALED, ResponseOzML=doc).code == 200
    (done,) = receiver.wait_for("RecordCompleted", timeout=60)
    assert done["Reason"] == "finish digit 5"
    wait_until(lambda: not hat.gateway.active_calls(), timeout=30)
    assert hat.gateway.recent[-1].end_reason == "CallConnected script ended"
