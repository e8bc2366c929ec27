"""Access through the real server: brute force locked out per address,
answer times that do not tell an unknown user from a wrong password,
address lists, per-command permissions, and memory that a burst of wrong
passwords cannot exhaust.

Clients connect from other loopback addresses (127.0.0.2, ...) to be other
machines as far as the server can tell. (Passwords in the log are checked in
test_logs.py.)
"""

from __future__ import annotations

import http.client
import random
import socket
import statistics
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import PASSWORD, USER, Answer, LiveServer, SourceConnection, api_from, login

LINE = ('[[line]]\nname = "line1"\ndriver = "simulated"\nrecord_dir = "rec"\n'
        "time_scale = 0.0\ncall_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }\n")




@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path, "[auth]\nlockout_failures = 5\nlockout_seconds = 60\n" + LINE,
                   users={"listener": ("listen-only", ["ListActiveCalls"])})
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.output


def test_brute_force_from_one_address_is_locked_out(server: LiveServer) -> None:
    attacker, neighbour = "127.0.0.2", "127.0.0.3"
    guesses = [login(server, attacker, USER, f"guess{i}") for i in range(5)]
    assert guesses == [305] * 5
    # Locked: further guesses, and even the right password, are refused
    # without a check; a guess cannot tell the right password from a wrong one.
    assert [login(server, attacker, USER, p) for p in ("guess6", PASSWORD)] == [307, 307]
    assert login(server, attacker, "nobody", "x") == 307
    # Other clients are not locked out with it.
    assert login(server, neighbour, USER, PASSWORD) == 200
    assert login(server, "127.0.0.1", USER, PASSWORD) == 200
    # A lock-out is logged once per refused attempt, with the address only.
    assert "api refused 127.0.0.2: locked out after repeated failures" in server.output


def test_spread_guesses_lock_each_address(server: LiveServer) -> None:
    """Guessing from many addresses locks each of them; none gets more than
    its share of tries."""
    codes: dict[str, list[int]] = {}
    for n in range(2, 12):
        source = f"127.0.1.{n}"
        codes[source] = [login(server, source, USER, f"g{n}-{i}") for i in range(7)]
    assert all(c == [305] * 5 + [307] * 2 for c in codes.values()), codes


def test_wrong_user_and_wrong_password_take_the_same_time(tmp_path: Path) -> None:
    """Medians of interleaved tries, through HTTP: an unknown user is checked
    against a dummy scrypt hash of the same cost as a real user's."""
    s = LiveServer(tmp_path, "[auth]\nlockout_failures = 1000\n" + LINE, log_level="warning")
    try:
        tries = 40
        kinds = ["unknown user", "wrong password"] * tries
        random.Random(8).shuffle(kinds)
        times: dict[str, list[float]] = {"unknown user": [], "wrong password": []}
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        for i, kind in enumerate(kinds):
            user = f"nobody{i}" if kind == "unknown user" else USER
            query = urllib.parse.urlencode({"command": "ListActiveCalls", "Username": user,
                                            "Password": f"wrong{i}"})
            started = time.perf_counter()
            conn.request("GET", f"/api?{query}")
            answer = Answer(200, conn.getresponse().read())
            times[kind].append(time.perf_counter() - started)
            assert answer.code == 305
        conn.close()
    finally:
        assert s.stop() == 0
    unknown = statistics.median(times["unknown user"])
    wrong = statistics.median(times["wrong password"])
    # Both pay for a whole scrypt (tens of ms); a shortcut for unknown users
    # would make theirs a fraction of a millisecond.
    assert min(unknown, wrong) > 0.005, times
    assert abs(unknown - wrong) < 0.2 * max(unknown, wrong), (unknown, wrong)


def test_address_lists_through_the_real_server(tmp_path: Path) -> None:
    s = LiveServer(tmp_path, '[server]\nallow = ["127.0.0.0/24"]\ndeny = ["127.0.0.66/32"]\n'
                   + LINE)
    try:
        assert login(s, "127.0.0.1", USER, PASSWORD) == 200
        # Outside allow, or inside deny: 307 before the password is looked at,
        # so the address learns nothing about the credentials.
        for source in ("127.0.1.1", "127.0.0.66"):
            assert login(s, source, USER, PASSWORD) == 307
            assert login(s, source, USER, "wrong") == 307
        # The API's description is refused to them too.
        conn = SourceConnection(s.port, "127.0.0.66")
        conn.request("GET", "/api/openapi.yaml")
        assert conn.getresponse().status == 403
        conn.close()
        # Refusals by address are not failed logins: nobody is locked out by them.
        assert login(s, "127.0.0.1", USER, PASSWORD) == 200
    finally:
        assert s.stop() == 0


def test_a_user_without_the_permission_gets_306_for_every_other_command(
    server: LiveServer,
) -> None:
    call = server.api({"command": "Call", "Dialed": "1"})
    assert call.code == 200
    call_id = call.text("CallId")
    listener = {"Username": "listener", "Password": "listen-only"}
    assert api_from(server, "127.0.0.4", command="ListActiveCalls", **listener).code == 200
    for params in ({"command": "SendDTMF", "CallId": call_id, "Keys": "1", "Party": "all"},
                   {"command": "HangUp", "CallId": call_id},
                   {"command": "HangUp", "CallId": "nosuch"},
                   {"command": "Call", "Dialed": "2"}):
        answer = api_from(server, "127.0.0.4", **params, **listener)
        # 306 before the command looks at anything: no hint whether a call exists.
        assert (answer.code, answer.message) == (306, "User is not allowed to use API in ACL")
    # Refusals for permission do not lock the address out, and did nothing.
    assert api_from(server, "127.0.0.4", command="ListActiveCalls", **listener).code == 200
    calls = server.api({"command": "ListActiveCalls"}).root.findall("ActiveCalls/Call")
    assert [c.findtext("CallId") for c in calls] == [call_id]
    assert server.api({"command": "HangUp", "CallId": call_id}).code == 200


def test_a_burst_of_wrong_passwords_cannot_exhaust_memory(tmp_path: Path) -> None:
    """scrypt takes 8 MiB while it runs, and the C library used to keep that
    in each thread that ran it: 48 wrong passwords at once, each in its own
    server thread, grew the process by 740 MiB."""
    s = LiveServer(tmp_path, "[auth]\nlockout_failures = 1000\n" + LINE, log_level="warning")
    try:
        before = s.rss_kib()
        for _ in range(2):
            start = threading.Barrier(48)
            codes: list[int] = []

            def guess(n: int, start: threading.Barrier = start, codes: list[int] = codes) -> None:
                start.wait()
                codes.append(login(s, f"127.0.2.{n + 1}", USER, f"wrong{n}"))

            threads = [threading.Thread(target=guess, args=(n,)) for n in range(48)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert codes == [305] * 48
        grown_mib = (s.rss_kib() - before) / 1024
        # Right passwords still work at once afterwards.
        assert login(s, "127.0.0.1", USER, PASSWORD) == 200
    finally:
        assert s.stop() == 0
    # Each check's block goes back when it ends (1.5 MiB measured); kept by
    # the two checking threads it would be 16 MiB, and 740 MiB in 48 threads.
    assert grown_mib < 12, grown_mib


def test_loopback_sources_are_distinct_addresses() -> None:
    """What the tests above rely on: Linux lets a client bind any 127/8 address."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname(), source_address=("127.0.0.9", 0)):
            peer, address = listener.accept()
            peer.close()
    assert address[0] == "127.0.0.9"
