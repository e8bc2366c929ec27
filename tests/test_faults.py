"""Faults: a line failing with commands queued behind it, an OzML script
cut off by a fault, notification URLs that refuse, hang, trickle or answer
garbage, a modem unplugged mid-call and plugged back, a relay left
energised by a killed predecessor.

After each: the documented code, the line on hook, no call left behind, no
thread left behind, and the next command works. (Also covered elsewhere:
ALSA devices missing or failing mid-sequence in test_alsa_api.py, a hung
modem in test_modem_api.py, a dying MT8880 in test_mt8880_api.py, SIGKILL
mid-call in test_systemd.py.)
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.lines.simulated import SimulatedLine
from tests.conftest import Answer, call_api, simulated_line, wait_until
from tests.live import query, run_served
from tests.support import Receiver, decode_wav, hold_first_emit, needs_multimon
from tests.test_load import make_config, place_calls


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settled_threads(before: set[threading.Thread], timeout: float = 10.0) -> set[threading.Thread]:
    """Threads started since ``before`` that are still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        extra = {t for t in threading.enumerate() if t not in before and t.is_alive()}
        # Threads of the scrypt pool live as long as the process, by design.
        extra = {t for t in extra if not t.name.startswith("scrypt")}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


# -- a line failing mid-sequence ---------------------------------------------------


@needs_multimon
def test_fault_mid_sequence_with_commands_queued_behind_it(tmp_path: Path) -> None:
    config = make_config(tmp_path, [{"name": "line1", "driver": "simulated", "record_dir": "rec",
                                     "time_scale": 0.01,
                                     "call_timing": {"dial_tone_ms": 0, "answer_wait_ms": 0}}],
                         threads=16)
    before = set(threading.enumerate())

    def body(gateway: Gateway, port: int) -> dict[str, Any]:
        (call_id,) = place_calls(port, 1)
        driver = gateway.lines["line1"].driver
        assert isinstance(driver, SimulatedLine)
        gate, holding = hold_first_emit(driver, 30)
        driver.fail_after_digits = 2
        answers: dict[str, Answer] = {}

        def send(keys: str) -> None:
            answers[keys] = query(port, {"command": "SendDTMF", "CallId": call_id, "Keys": keys,
                                         "Party": "all", "Duration": "40", "Gap": "50"})

        first = threading.Thread(target=send, args=("12345",))
        first.start()
        assert holding.wait(30)
        queued = [threading.Thread(target=send, args=(k,)) for k in ("6", "7", "8", "9", "0")]
        for t in queued:
            t.start()
        wait_until(lambda: gateway.lines["line1"].worker.depth == 5)
        gate.set()  # the first command now runs and the hardware dies at its third key
        for t in (first, *queued):
            t.join(30)
        state = {
            "answers": answers,
            "hook": driver.hook.value,
            "calls": query(port, {"command": "ListActiveCalls"}).root.findall("ActiveCalls/Call"),
            "call": call_id,
        }
        # The next command works: a new call, keys and all.
        (again,) = place_calls(port, 1)
        state["next"] = query(port, {"command": "SendDTMF", "CallId": again, "Keys": "4",
                                     "Party": "all"}).code
        state["hangup"] = query(port, {"command": "HangUp", "CallId": again}).code
        state["again"] = again
        return state

    state = run_served(config, body)
    answers = state["answers"]
    assert answers["12345"].code == 801
    assert answers["12345"].message == (
        "Line 'line1' fault: simulated hardware fault")
    # The fault ended the call: what was queued for it finds no call, at once.
    assert {k: a.code for k, a in answers.items() if k != "12345"} == {
        k: 601 for k in "67890"}
    assert state["hook"] == "on-hook" and state["calls"] == []
    assert (state["next"], state["hangup"]) == (200, 200)
    rec = tmp_path / "rec"
    assert decode_wav(rec / f"{state['call']}.wav") == "12"  # what got out before the fault
    assert decode_wav(rec / f"{state['again']}.wav") == "4"
    events = (rec / f"{state['call']}.log").read_text()
    assert events.index("emit all") < events.index("on-hook")
    assert not settled_threads(before)


def test_fault_inside_an_ozml_script_reaches_error_and_finished_urls(
    make_app: Callable[..., Flask], receiver: Receiver
) -> None:
    app = make_app()
    gateway: Gateway = app.extensions["dtmf_gateway"]
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    driver.fail_after_digits = 4  # the dialled digit and two of the script's
    client = app.test_client()
    doc = "<Response><SendDTMF Keys='123456' Party='all'/><Delay>30</Delay></Response>"
    answer = call_api(client, command="Call", Dialed="9", ResponseOzML=doc,
                      ErrorUrl=f"{receiver.url}/error", FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200
    (error,) = receiver.wait_for("Error")
    assert error["Code"] == "801" and error["Message"].startswith("Line 'line1' fault: ")
    (finished,) = receiver.wait_for("CallFinished")
    assert finished["Reason"].startswith("line fault")
    # The script did not go on to its Delay: the line is free at once.
    assert driver.hook.value == "on-hook" and gateway.active_calls() == []
    assert call_api(client, command="Call", Dialed="1").code == 200


# -- notification URLs that misbehave ---------------------------------------------

BOMB = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        "<Response><Speak>&c;</Speak></Response>")


class HostileIntegrator:
    """A web server on loopback whose every path misbehaves its own way."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        stop = self.stop

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def answer(self, body: bytes, status: int = 200, **headers: str) -> None:
                self.send_response(status)
                for name, value in {"Content-Type": "application/xml",
                                    "Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def trickle(self, data: bytes) -> None:
                # A byte every 0.2 s: never idle long enough for a read timeout.
                for i in range(len(data)):
                    if stop.wait(0.2):
                        return
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()

            def do_GET(self) -> None:  # where a 302 sends a POST
                with contextlib.suppress(OSError):
                    self.route()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with contextlib.suppress(OSError):  # the gateway hung up: some paths want that
                    self.route()

            def route(self) -> None:
                path = self.path
                if path == "/trickle-body":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                                     b"Content-Length: 100000\r\n\r\n")
                    self.trickle(b" " * 100_000)
                elif path == "/trickle-headers":
                    self.trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000)
                elif path == "/binary":
                    self.answer(b"\xff\xfe\x00<Response/>\x80")
                elif path == "/huge":
                    self.answer(b"<Response>" + b" " * 300_000 + b"</Response>")
                elif path == "/bomb":
                    self.answer(BOMB.encode())
                elif path == "/error500":
                    self.answer(b"Traceback (most recent call last): ...", status=500)
                elif path == "/loop":
                    self.answer(b"", status=302, Location="/loop")
                elif path == "/to-ftp":
                    self.answer(b"", status=302, Location="ftp://127.0.0.1:9/x")
                elif path == "/to-file":
                    self.answer(b"", status=302, Location="file:///etc/passwd")
                elif path == "/close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif path == "/charset":
                    self.answer(b"<Response/>",
                                **{"Content-Type": "application/xml; charset=x-nope"})
                else:
                    self.answer(b"<Response><Hangup/></Response>")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[HostileIntegrator]:
    h = HostileIntegrator()
    yield h
    h.close()


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("refused", "402", "could not connect"),
        ("/trickle-body", "402", "timed out after 1 s"),
        ("/trickle-headers", "402", "timed out after 1 s"),
        ("/binary", "402", "not text: invalid bytes"),
        ("/charset", "402", "not text: its charset is unknown"),
        ("/huge", "402", "larger than 262144 bytes"),
        # What the answer held is for the log: ErrorUrl hears the class only.
        ("/bomb", "300", "the answer to CallConnected is not OzML this gateway runs"),
        ("/error500", "402", "HTTP 500"),
        ("/loop", "402", "HTTP 302"),
        # Only http and https are followed, redirects included.
        ("/to-ftp", "402", "HTTP 302"),
        ("/to-file", "402", "HTTP 302"),
        ("/close", "402", "no valid HTTP answer"),
    ],
)
def test_a_misbehaving_url_hangs_up_reports_and_frees_the_line(
    make_app: Callable[..., Flask], receiver: Receiver, hostile: HostileIntegrator,
    path: str, code: str, message: str,
) -> None:
    app = make_app([simulated_line("a"), simulated_line("b")],
                   server={"notify_timeout_s": 1.0})
    gateway: Gateway = app.extensions["dtmf_gateway"]
    client = app.test_client()
    url = f"http://127.0.0.1:{free_port()}/x" if path == "refused" else hostile.url + path
    started = time.monotonic()
    answer = call_api(client, command="Call", Dialed="1", Url=url,
                      ErrorUrl=f"{receiver.url}/error", FinishedUrl=f"{receiver.url}/finished")
    assert answer.code == 200
    # While line a waits for its URL, line b takes calls and keys.
    other = call_api(client, command="Call", Dialed="2")
    assert call_api(client, command="SendDTMF", CallId=other.text("CallId"), Keys="1",
                    Party="all").code == 200
    assert call_api(client, command="HangUp", CallId=other.text("CallId")).code == 200
    (error,) = receiver.wait_for("Error", timeout=15)
    assert error["CallId"] == answer.text("CallId")
    assert (error["Code"], message in error["Message"]) == (code, True), error
    (finished,) = receiver.wait_for("CallFinished", timeout=15)
    assert finished["CallId"] == answer.text("CallId")
    # Bounded by the timeout (1 s), not by the server's patience.
    assert time.monotonic() - started < 10
    wait_until(lambda: not gateway.active_calls())
    assert gateway.lines["a"].driver.hook.value == "on-hook"
    assert finished["Reason"].startswith("CallConnected failed") or "OzML" in finished["Reason"]
    assert call_api(client, command="Call", Dialed="3").code == 200


def test_notifications_that_never_finish_do_not_pile_up(
    make_app: Callable[..., Flask], hostile: HostileIntegrator
) -> None:
    """FinishedUrl and ErrorUrl go out on a small pool; each is bounded by the
    timeout, so a trickling integrator costs at most that pool's threads."""
    app = make_app(server={"notify_timeout_s": 1.0})
    client = app.test_client()
    before = set(threading.enumerate())
    started = time.monotonic()
    for _ in range(12):
        call_id = call_api(client, command="Call", Dialed="1",
                           FinishedUrl=f"{hostile.url}/trickle-body").text("CallId")
        assert call_api(client, command="HangUp", CallId=call_id).code == 200
    # The API answered at once all along...
    assert time.monotonic() - started < 5
    # ...and the 12 notifications gave up by themselves: 4 at a time, 1 s each.
    gateway: Gateway = app.extensions["dtmf_gateway"]
    failures = gateway.metrics.notification_failures.labels("CallFinished")
    wait_until(lambda: failures._value.get() == 12, timeout=15)
    notifiers = [t for t in threading.enumerate() if t not in before and "notify" in t.name]
    assert len(notifiers) <= 4


def test_a_url_with_an_impossible_port_is_refused_at_the_call(
    api: Callable[..., Answer], gateway: Gateway
) -> None:
    # It passed the check and then failed where nothing catches ValueError,
    # leaving the call up with nobody to end it.
    answer = api(command="Call", Dialed="1", Url="http://hook:secret@127.0.0.1:99999/x")
    assert answer.code == 302 and "Port out of range" in answer.message
    assert "secret" not in answer.message or "hook:secret@" in answer.message
    assert gateway.active_calls() == []


# -- a modem unplugged mid-call -------------------------------------------------------


@pytest.fixture
def modem() -> Iterator[Any]:
    from gateway.lines.modem_sim import SimulatedModem

    with SimulatedModem() as sim:
        yield sim


def test_modem_unplugged_mid_call_then_plugged_back(tmp_path: Path, modem: Any) -> None:
    from gateway.auth import save_user
    from gateway.config import from_mapping
    from tests.live import PASSWORD, USER

    config = from_mapping({
        "tones": {"duration_ms": 60, "gap_ms": 60},
        "line": [{"name": "m", "driver": "modem", "port": modem.port, "command_timeout_s": 0.5,
                  "answer_wait_ms": 0, "record_dir": "rec"},
                 {"name": "s", "driver": "simulated", "record_dir": "rec", "time_scale": 0.0,
                  "call_timing": {"dial_tone_ms": 0, "answer_wait_ms": 0}}],
    }, base_dir=tmp_path)
    save_user(config.users_path, USER, PASSWORD)
    before = set(threading.enumerate())

    def body(gateway: Gateway, port: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        call = query(port, {"command": "Call", "Dialed": "5551234"})
        assert call.code == 200 and gateway.lines["m"].call is not None
        unplug = threading.Timer(0.3, modem.vanish)
        unplug.start()
        out["during"] = query(port, {"command": "SendDTMF", "CallId": call.text("CallId"),
                                     "Keys": "1234567890" * 3, "Party": "all"})
        unplug.join()
        # An unplugged modem has no hook of its own to report: the driver's is
        # what /healthz shows.
        out["hook_after"] = gateway.lines["m"].driver.hook.value
        out["calls_after"] = [c.line for c in gateway.active_calls()]
        # While it is gone: the other line works, and a call that needs the
        # modem... takes the other line, the free one.
        s_call = query(port, {"command": "Call", "Dialed": "1"})
        out["other_line"] = (s_call.code, gateway.lines["s"].call is not None)
        # With the simulated line busy, the next call tries the modem: its
        # device is missing, answered at once.
        started = time.monotonic()
        out["missing"] = query(port, {"command": "Call", "Dialed": "2"})
        out["missing_s"] = time.monotonic() - started
        query(port, {"command": "HangUp", "CallId": s_call.text("CallId")})
        modem.reappear()
        # Plugged back: the next call on it opens it afresh and works.
        query(port, {"command": "Call", "Dialed": "1"})  # the simulated line again
        back = query(port, {"command": "Call", "Dialed": "3"})
        out["back"] = back.code
        out["back_keys"] = query(port, {"command": "SendDTMF", "CallId": back.text("CallId"),
                                        "Keys": "45", "Party": "all"}).code
        out["back_line"] = [c.line for c in gateway.active_calls()
                            if c.call_id == back.text("CallId")]
        return out

    out = run_served(config, body)
    assert out["during"].code == 801
    assert out["during"].message.startswith("Line 'm' fault: ")
    assert out["hook_after"] == "on-hook" and out["calls_after"] == []
    assert out["other_line"] == (200, True)
    assert out["missing"].code == 801 and "Line 'm' fault" in out["missing"].message
    assert out["missing_s"] < 5
    assert (out["back"], out["back_keys"], out["back_line"]) == (200, 200, ["m"])
    assert not modem.off_hook  # serve()'s stop put it on hook
    assert not settled_threads(before)


# -- a relay a killed process left energised ------------------------------------------


@pytest.mark.parametrize("active_high", [True, False])
def test_a_relay_left_energised_is_released_the_moment_the_next_start_opens_it(
    active_high: bool,
) -> None:
    """SIGKILL runs no handler: the relay stays as the dead process left it
    (until systemd's ExecStopPost ``dtmf-gateway onhook``). Whatever starts
    next drives it to on hook before anything else."""
    from gpiozero.pins.mock import MockFactory

    from gateway.lines.gpio import GpioOptions, LineControl

    factory = MockFactory()
    try:
        pin = factory.pin(17)
        pin.function = "output"
        pin.state = active_high  # energised: the line held off hook
        line = LineControl("line1", GpioOptions(hook_relay_pin=17, hook_settle_ms=0,
                                                hook_relay_active_high=active_high),
                           factory=factory)
        line.open()
        try:
            assert pin.state is (not active_high)
            assert not line.is_off_hook
            # The first write of the new process was the release.
            written = [s.state for s in pin.states]
            assert written[-1] is (not active_high)
            assert active_high not in written[written.index(active_high) + 1 :]
        finally:
            line.close()
    finally:
        factory.reset()
