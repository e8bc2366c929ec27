"""A line that cannot record, on the real ``dtmf-gateway serve`` process: a
bad ``record_dir`` at start-up, one that goes bad while serving, and a disk
that fills in the middle of a command. Each is a faulted line (801,
``/healthz`` 503 with the reason, ``dtmf_gateway_line_up`` 0) while a healthy
line takes the next ``Call``; never an 800, never a silent 200.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.service_process import GatewayProcess
from tests.support import decode_wav, needs_multimon

LINE = """
[[line]]
name = "{name}"
driver = "simulated"
record_dir = "{record_dir}"
time_scale = 0.05
call_timing = {{ dial_tone_ms = 0, answer_wait_ms = 0 }}
"""


def lines(**record_dirs: str) -> str:
    return "".join(LINE.format(name=n, record_dir=d) for n, d in record_dirs.items())


def code_of(body: str) -> tuple[int, str]:
    found = re.search(r"<Code>(\d+)</Code>\s*<Message>(.*?)</Message>", body, re.S)
    assert found, body
    return int(found.group(1)), found.group(2)


def call_on(proc: GatewayProcess) -> tuple[int, str, str]:
    """(code, message, CallId) of a Call."""
    body = proc.api(command="Call", Dialed="1")
    code, message = code_of(body)
    found = re.search(r"<CallId>(\w+)</CallId>", body)
    return code, message, found.group(1) if found else ""


def line_of(proc: GatewayProcess, call_id: str) -> str:
    body = proc.api(command="ListActiveCalls")
    for call in re.findall(r"<Call>.*?</Call>", body, re.S):
        if f"<CallId>{call_id}</CallId>" in call:
            source = re.search(r"<Source>(.*?)</Source>", call)
            assert source
            return source.group(1)
    raise AssertionError(f"{call_id} is not active: {body}")


def health(proc: GatewayProcess) -> tuple[int, dict[str, dict[str, object]]]:
    status, body = proc.request("/healthz")
    return status, json.loads(body)["lines"]


def line_up(proc: GatewayProcess, name: str) -> float:
    status, body = proc.request("/metrics")
    assert status == 200
    found = re.search(rf'^dtmf_gateway_line_up\{{[^}}]*line="{name}"[^}}]*\}} (\S+)$', body, re.M)
    assert found, body
    return float(found.group(1))


@pytest.mark.parametrize("bad_dir", ["afile/rec", "/proc/nope"])
def test_a_bad_record_dir_at_start_up_faults_its_line_and_the_others_serve(
    tmp_path: Path, bad_dir: str
) -> None:
    (tmp_path / "afile").write_text("a file, not a directory")
    proc = GatewayProcess(tmp_path, lines(bad=bad_dir, good="rec"))
    try:
        status, report = health(proc)
        assert status == 503
        fault = str(report["bad"]["fault"])
        assert fault.startswith("cannot record calls in ")
        assert "afile is not a directory" in fault or "/proc failed" in fault
        assert report["good"]["fault"] is None
        assert (line_up(proc, "bad"), line_up(proc, "good")) == (0.0, 1.0)
        code, _, first = call_on(proc)
        assert code == 200 and line_of(proc, first) == "good"
        # With the healthy line busy, the faulted one is tried again, and says why.
        code, message, _ = call_on(proc)
        assert code == 801 and message.startswith("Line 'bad' fault: cannot record")
        assert code_of(proc.api(command="HangUp", CallId=first))[0] == 200
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.output
    assert not (tmp_path / "proc").exists()


def test_a_record_dir_that_goes_bad_faults_the_line_and_the_next_call_takes_another(
    tmp_path: Path,
) -> None:
    proc = GatewayProcess(tmp_path, lines(one="rec1", two="rec2"))
    try:
        assert health(proc)[0] == 200
        shutil.rmtree(tmp_path / "rec1", ignore_errors=True)
        (tmp_path / "rec1").write_text("where the recordings were")
        code, message, _ = call_on(proc)
        assert code == 801, message
        assert message == (f"Line 'one' fault: cannot record calls in "
                           f"{tmp_path}/rec1: {tmp_path}/rec1 is not a directory")
        status, report = health(proc)
        assert status == 503 and "rec1 is not a directory" in str(report["one"]["fault"])
        assert line_up(proc, "one") == 0.0
        code, _, on_two = call_on(proc)
        assert code == 200 and line_of(proc, on_two) == "two"
        # Repaired: the faulted line's next command opens it afresh.
        (tmp_path / "rec1").unlink()
        code, _, on_one = call_on(proc)
        assert code == 200 and line_of(proc, on_one) == "one"
        for call_id in (on_one, on_two):
            assert code_of(proc.api(command="HangUp", CallId=call_id))[0] == 200
        assert health(proc)[0] == 200
        assert (tmp_path / "rec1" / f"{on_one}.wav").is_file()
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.output


@needs_multimon
def test_a_disk_that_fills_mid_command_answers_801_and_leaves_a_valid_recording(
    tmp_path: Path,
) -> None:
    # Every file the server writes may grow to one second of 8 kHz mono audio
    # after its WAV header: RLIMIT_FSIZE is a full disk that this test can make.
    limit = 44 + 16000
    prelude = ("import resource, signal\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))")
    proc = GatewayProcess(tmp_path, lines(line1="rec"), prelude=prelude)
    rec = tmp_path / "rec"
    try:
        code, _, full = call_on(proc)
        assert code == 200
        code, message = code_of(proc.api(command="SendDTMF", CallId=full, Keys="1234567890",
                                         Party="all", Duration="100", Gap="100"))
        assert (code, message) == (801, f"Line 'line1' fault: cannot record "
                                        f"the call: writing {rec}/{full}.wav: File too large")
        assert health(proc)[0] == 503
        # The fault ended the call; what was written before it stays, valid.
        assert code_of(proc.api(command="HangUp", CallId=full))[0] == 601
        assert decode_wav(rec / f"{full}.wav") == "12345"
        logged = (rec / f"{full}.log").read_text()
        assert f"call {full} begins" in logged and "emit all 10 symbols" in logged
        # The next call records what it carries, and every answer says so.
        code, _, after = call_on(proc)
        assert code == 200
        assert code_of(proc.api(command="SendDTMF", CallId=after, Keys="9", Party="all"))[0] == 200
        assert code_of(proc.api(command="HangUp", CallId=after))[0] == 200
        assert health(proc)[0] == 200
        assert decode_wav(rec / f"{after}.wav") == "9"
        assert (rec / f"{after}.log").read_text().rstrip().endswith(f"call {after} ends")
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.output


@needs_multimon
def test_a_recording_is_valid_when_the_server_is_killed_mid_call(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path, lines(line1="rec"))
    code, _, call_id = call_on(proc)
    assert code == 200
    for keys in ("14", "7"):
        sent = proc.api(command="SendDTMF", CallId=call_id, Keys=keys, Party="all")
        assert code_of(sent)[0] == 200
    proc.kill()  # SIGKILL: no handler runs, nothing is closed
    assert decode_wav(tmp_path / "rec" / f"{call_id}.wav") == "147"
    assert f"call {call_id} begins" in (tmp_path / "rec" / f"{call_id}.log").read_text()
