"""HangUp always wins, a command's answer tells the truth, and no call holds a
line for ever: against the real server process on a real-time simulated line.

Bounds here are for a loaded 2-core machine: a hang-up that waited for the
command it interrupts would take seconds (the tones below last 35 s), one
that works takes milliseconds; 3 s tells them apart with room to spare.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.live import Answer, LiveServer
from tests.support import Receiver

LINE = """
[[line]]
name = "line1"
driver = "simulated"
record_dir = "rec"
time_scale = 1.0
call_timing = { dial_tone_ms = 50, answer_wait_ms = 50 }
"""
#: 5 keys at the longest tone and gap: 35 s on the line.
LONG = {"Keys": "12345", "Duration": "2000", "Gap": "5000", "Party": "all"}
HANG_UP_S = 3.0


def healthz(server: LiveServer) -> dict[str, object]:
    with urllib.request.urlopen(f"{server.base}/healthz", timeout=10) as answer:
        body: dict[str, object] = json.loads(answer.read())
    return body


def line_state(server: LiveServer) -> dict[str, object]:
    lines = healthz(server)["lines"]
    assert isinstance(lines, dict)
    state: dict[str, object] = lines["line1"]
    return state


def events(server: LiveServer, call_id: str) -> list[str]:
    path = server.dir / "rec" / f"{call_id}.log"
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


def events_so_far(server: LiveServer, call_id: str) -> str:
    # The event log is written when the call ends.
    server.api({"command": "HangUp", "CallId": call_id})
    return "\n".join(events(server, call_id))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path, "[server]\ncommand_timeout_s = 1.0\n" + LINE)
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.output


def place(server: LiveServer, **params: str) -> str:
    answer = server.api({"command": "Call", "Dialed": "1", **params})
    assert answer.code == 200, answer
    return answer.text("CallId")


def start_long_keys(server: LiveServer, call_id: str) -> tuple[threading.Thread, list[Answer]]:
    answers: list[Answer] = []
    sender = threading.Thread(target=lambda: answers.append(
        server.api({"command": "SendDTMF", "CallId": call_id, **LONG}, timeout=120)))
    sender.start()
    # The keys are on the line once the line is busy with them.
    wait_until(lambda: line_state(server)["busy"] is True, timeout=30)
    return sender, answers


def test_hang_up_stops_a_long_senddtmf_at_once_and_its_answer_says_so(
        server: LiveServer) -> None:
    call_id = place(server)
    sender, answers = start_long_keys(server, call_id)
    started = time.monotonic()
    hung = server.api({"command": "HangUp", "CallId": call_id})
    took = time.monotonic() - started
    assert hung.code == 200 and took < HANG_UP_S
    sender.join(HANG_UP_S)
    assert not sender.is_alive()
    # The interrupted command does not claim its keys went out, nor a busy line.
    (keys,) = answers
    assert keys.code == 601 and "hung up by API" in keys.message, keys
    assert line_state(server)["hook"] == "on-hook"
    assert server.api({"command": "ListActiveCalls"}).root.find("ActiveCalls/Call") is None
    log = events(server, call_id)
    assert "on-hook" in log and log[-1] == f"call {call_id} ends"
    # The line is healthy and takes the next call at once.
    assert line_state(server)["fault"] is None
    assert server.api({"command": "Call", "Dialed": "2"}).code == 200


def test_a_flood_of_hang_ups_answers_at_once_and_holds_no_thread(server: LiveServer) -> None:
    call_id = place(server)
    sender, _ = start_long_keys(server, call_id)
    started = time.monotonic()
    with ThreadPoolExecutor(80) as pool:
        codes = list(pool.map(
            lambda _: server.api({"command": "HangUp", "CallId": call_id}, timeout=30).code,
            range(80)))
        # Meanwhile the server still answers everyone else.
        assert healthz(server)["status"] == "ok"
    took = time.monotonic() - started
    assert codes.count(200) >= 1 and set(codes) <= {200, 601}, codes
    assert took < 10, took  # 80 requests on a loaded machine, none waiting for the line
    sender.join(HANG_UP_S)
    assert not sender.is_alive()
    assert line_state(server)["hook"] == "on-hook"


def test_a_command_longer_than_the_command_timeout_answers_200(server: LiveServer) -> None:
    # command_timeout_s is 1 s here; these keys take 3 s: the timeout is for
    # waiting for the line, not for keys already going out.
    call_id = place(server)
    keys = server.api({"command": "SendDTMF", "CallId": call_id, "Keys": "123",
                       "Duration": "500", "Gap": "500", "Party": "all"}, timeout=60)
    assert keys.code == 200, keys
    assert "emit all 3 symbols 3 digits 500/500 ms" in events_so_far(server, call_id)


def test_a_command_that_never_got_the_line_says_nothing_was_done(server: LiveServer) -> None:
    call_id = place(server)
    sender, _ = start_long_keys(server, call_id)
    queued = server.api({"command": "SendDTMF", "CallId": call_id, "Keys": "9",
                         "Party": "all"}, timeout=60)
    assert queued.code == 802 and "nothing of it was done" in queued.message, queued
    server.api({"command": "HangUp", "CallId": call_id})
    sender.join(HANG_UP_S)
    assert "9" not in "".join(e for e in events(server, call_id) if e.startswith("emit"))


def test_hang_up_ends_a_script_inside_its_command(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, LINE)
    try:
        doc = ("<Response><SendDTMF Keys='12345' Duration='2000' Gap='5000' Party='all'/>"
               "<Delay>60</Delay></Response>")
        call_id = place(server, ResponseOzML=doc)
        wait_until(lambda: line_state(server)["busy"] is True, timeout=30)
        started = time.monotonic()
        assert server.api({"command": "HangUp", "CallId": call_id}).code == 200
        wait_until(lambda: line_state(server)["hook"] == "on-hook"
                   and line_state(server)["busy"] is False, timeout=HANG_UP_S)
        assert time.monotonic() - started < HANG_UP_S
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.output


def test_a_script_longer_than_its_bound_is_refused_before_the_call(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, "[calls]\nmax_script_s = 60\n" + LINE)
    try:
        # 256 commands at the longest timing would hold the line for 63.7 hours.
        doc = "<Response>" + (
            "<SendDTMF Keys='1234567890' Duration='2000' Gap='5000' Party='all'/>" * 256
        ) + "</Response>"
        refused = server.api({"command": "Call", "Dialed": "1", "ResponseOzML": doc})
        assert refused.code == 302 and "calls.max_script_s" in refused.message, refused
        assert "'ResponseOzML'" in refused.message
        # Nothing was placed: the line never left the hook.
        assert line_state(server)["hook"] == "on-hook"
        assert not list((tmp_path / "rec").glob("*.log"))
        # One within the bound runs.
        assert server.api({"command": "Call", "Dialed": "1", "ResponseOzML":
                           "<Response><Delay>1</Delay></Response>"}).code == 200
    finally:
        assert server.stop() == 0


def test_a_forgotten_call_ends_when_idle_and_at_its_maximum_length(
        tmp_path: Path, receiver: Receiver) -> None:
    server = LiveServer(tmp_path, "[server]\nnotify_allow = [\"127.0.0.1/32\"]\n"
                        "[calls]\nidle_s = 1\nmax_call_s = 4\n" + LINE)
    try:
        forgotten = place(server, FinishedUrl=f"{receiver.url}/done")
        (finished,) = receiver.wait_for("CallFinished", timeout=30)
        assert finished["CallId"] == forgotten
        assert "calls.idle_s" in finished["Reason"]
        assert 1.0 <= float(finished["TalkDuration"]) < 4.0
        # A call kept busy is never idle, but it ends at its maximum length.
        busy = place(server, FinishedUrl=f"{receiver.url}/done")
        deadline = time.monotonic() + 30
        while not any(f.get("CallId") == busy for _, f in receiver.received):
            assert time.monotonic() < deadline
            server.api({"command": "SendDTMF", "CallId": busy, "Keys": "1",
                        "Party": "all"})
        (_, second) = receiver.wait_for("CallFinished", count=2)
        assert second["CallId"] == busy and "calls.max_call_s" in second["Reason"]
        assert float(second["TalkDuration"]) >= 4.0
        assert line_state(server)["hook"] == "on-hook"
    finally:
        assert server.stop() == 0
