"""Logs that cannot be forged (issue 13), through the real server.

CR, LF, other control characters and a copy of a log line go into every
field of every command (query and form), the Basic header, and every field
of the console's forms and pages; then every line of the server's log is
read: each is a record of the server's own (or the indented rest of a
traceback), every command line parses as one, and no password or secret is
anywhere in it. Also the paths that used to leak: a command name on the
error path while the users file is unreadable, and a password typed as the
command name.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.parse
from pathlib import Path

from tests.browser import Browser
from tests.live import PASSWORD, USER, LiveServer, query

LINE = ('[[line]]\nname = "line1"\ndriver = "simulated"\nrecord_dir = "rec"\n'
        "time_scale = 0.0\ncall_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }\n")
LOW, LOW_PASSWORD = "listener", "listen-only"

# A log line as the server writes one, stamped at a time no real line of
# this run can have: a line that starts with it is a forgery.
STAMP = "2001-02-03 04:05:06,789"
COPY = (f"{STAMP} INFO gateway.api: api user={USER} addr=10.6.6.6 command=HangUp "
        "line=line1 call=FORGED code=200 ms=1")
PAYLOADS = [
    "\r\n" + COPY,
    "\n" + COPY,
    "\r" + COPY,
    "\x1b[2K\r" + COPY,  # a terminal's erase-line, then back to the margin
    "\x85" + COPY,  # NEL
    "\u2028" + COPY,  # LINE SEPARATOR
    "\x00\x08\x0b\x0c\x7f\t",
    " code=200 ms=1 " + COPY.split(": ", 1)[1],  # a second code= on the same line
    "\\r\\n" + COPY,  # escapes spelt out, which must not read as the real ones
]
WRONG = "wrong-Secret-9"
TYPED_AS_COMMAND = "hunter2secretpw"
URL_SECRET = "url-Secret-7"
SECRETS = [PASSWORD, LOW_PASSWORD, WRONG, TYPED_AS_COMMAND, URL_SECRET]
DEAD = "http://127.0.0.1:9/"  # nothing listens: a notification there fails at once

# Each command's fields, with a valid value the payload is appended to; a
# request carries one of them, the one under test (the rest stay out, so that
# each accepted Call makes a known number of notifications).
FIELDS = {
    "SendDTMF": {"CallId": "", "Keys": "1", "Party": "all", "Duration": "60", "Gap": "60"},
    "Call": {"Dialed": "1", "Url": DEAD + "connected", "ErrorUrl": DEAD + "error",
             "FinishedUrl": f"http://hook:{URL_SECRET}@127.0.0.1:9/finished",
             "ResponseOzML": "<Response><Speak>", "RingTime": "30", "ApiExtension": "9",
             "CallerId": "1", "CallerDisplayName": "x"},
    "HangUp": {"CallId": ""},
    "ListActiveCalls": {},
}
REQUIRED = {"SendDTMF": {"Keys": "1", "Party": "all"}, "Call": {"Dialed": "1"}}
OZML_TAIL = "</Speak><Hangup/></Response>"

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                    r"[\w.]+: (.*)")
COMMAND_LINE = re.compile(r"(api|console) user=(\S+) addr=(\S+) command=(\S+) line=(\S+) "
                          r"call=(\S+) code=(\d{3}) ms=(\d+)")
COMMANDS = {"SendDTMF", "Call", "HangUp", "ListActiveCalls", "other", "-"}


def requests_for(command: str, payload: str) -> list[tuple[str, dict[str, str]]]:
    """(the field under test, the parameters) for every field of ``command``,
    its name, and a field the API does not know."""
    fields = FIELDS[command]
    found = []
    for name in [*fields, "command", payload]:
        params = {"command": command, **REQUIRED.get(command, {}),
                  "Username": USER, "Password": PASSWORD}
        if name == "command":
            params["command"] = command + payload
        elif name in fields:
            params[name] = (fields[name] + payload
                            + (OZML_TAIL if name == "ResponseOzML" else ""))
        else:
            params[name] = payload
        found.append((name, params))
    return found


def send_everywhere(server: LiveServer) -> int:
    """Every field of every command, by GET and by POST, with each payload;
    how many notifications to dead URLs that set going."""
    browser = Browser(server)
    notified = 0
    for payload in PAYLOADS:
        for command in FIELDS:
            for name, params in requests_for(command, payload):
                for reply in (browser.send("GET", "/api?" + urllib.parse.urlencode(params)),
                              browser.send("POST", "/api", params)):
                    accepted = command == "Call" and reply.code() == 200
                    if accepted and name == "Url":
                        # CallConnected fails; the call ends by itself (no ErrorUrl).
                        notified += 1
                        wait_until_no_call(server)
                    elif accepted and name == "FinishedUrl":
                        notified += 1  # CallFinished, at the HangUp below
                    hang_up_all(server)
        # Credentials, wrong on purpose, in the parameters and in a Basic header.
        for params in ({"Username": USER + payload, "Password": PASSWORD},
                       {"Username": USER, "Password": WRONG + payload},
                       {"Username": payload, "Password": payload}):
            browser.send("GET", "/api?" + urllib.parse.urlencode(
                {"command": "ListActiveCalls", **params}))
        for user, password in ((USER + payload, PASSWORD), (USER, WRONG + payload)):
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            browser.send("GET", "/api?command=HangUp",
                         headers={"Authorization": f"Basic {token}"})
        console_everywhere(server, payload)
    return notified


def wait_until_no_call(server: LiveServer) -> None:
    deadline = time.monotonic() + 60
    while list(query(server.port, {"command": "ListActiveCalls"}).root.iter("CallId")):
        assert time.monotonic() < deadline, "the call did not end by itself"
        time.sleep(0.02)


def console_everywhere(server: LiveServer, payload: str) -> None:
    """Every field of the console's forms, and of its pages' queries."""
    quoted = urllib.parse.quote(payload, safe="")
    # The sign-in form: a wrong one with the payload in each field, then a right one.
    stranger = Browser(server)
    stranger.send("GET", f"/login?next={quoted}")
    for form in ({"username": USER + payload, "password": PASSWORD},
                 {"username": USER, "password": WRONG + payload},
                 {"username": payload, "password": payload, "next": payload},
                 {"username": USER, "password": PASSWORD, "next": payload,
                  "login_token": payload}):
        stranger.send("POST", "/login", form)
    browser = Browser(server)
    assert browser.sign_in(next_query=quoted).status == 302
    csrf = browser.csrf()
    call = server.api({"command": "Call", "Dialed": "1"}).text("CallId")
    browser.send("POST", "/call", {"csrf": csrf, "dialed": "1" + payload})
    hang_up_all(server, keep=call)
    for name in ("call", "party", "keys", "key", "duration", "gap"):
        form = {"csrf": csrf, "call": call, "party": "all", "keys": "1", "duration": "60",
                "gap": "60"}
        form[name] = form.get(name, "") + payload
        browser.send("POST", "/keys", form)
        browser.send("POST", "/keys", form, headers={"Accept": "application/json"})
    browser.send("POST", "/hangup", {"csrf": csrf, "call": call + payload, "next": payload})
    browser.send("POST", "/hangup", {"csrf": csrf + payload, "call": call})
    browser.send("GET", f"/keypad?call={quoted}&party={quoted}&duration={quoted}&gap={quoted}")
    browser.send("GET", f"/fragment/calls?back={quoted}")
    browser.send("GET", f"/{quoted}")
    browser.send("POST", "/call", {"csrf": csrf, "dialed": "1"},
                 headers={"Origin": "http://evil.example/" + quoted})
    browser.send("POST", "/logout", {"csrf": payload})
    browser.send("POST", "/logout", {"csrf": csrf})
    hang_up_all(server)


def hang_up_all(server: LiveServer, keep: str = "") -> None:
    for found in query(server.port, {"command": "ListActiveCalls"}).root.iter("CallId"):
        if found.text and found.text != keep:
            server.api({"command": "HangUp", "CallId": found.text})


def notification_failures(server: LiveServer) -> float:
    conn_answer = Browser(server).send("GET", "/metrics")
    return sum(float(v) for v in re.findall(
        r"^dtmf_gateway_notification_failures_total\{[^}]*\} (\S+)$", conn_answer.body, re.M))


def check_every_line(output: str) -> list[str]:
    """Every line of the log judged; the messages of the command lines returned."""
    commands = []
    in_record = False
    for line in output.splitlines():
        assert line.isprintable(), repr(line)
        assert not line.startswith(STAMP), line
        if line.startswith("dtmf-gateway: serving http://127.0.0.1:"):
            continue
        if line.startswith("    ") and in_record:
            continue  # the rest of a traceback, indented
        record = RECORD.fullmatch(line)
        assert record, repr(line)
        in_record = True
        message = record.group(2)
        if message.startswith(("api user=", "console user=")):
            parsed = COMMAND_LINE.fullmatch(message)
            assert parsed, message
            assert parsed.group(2) in {USER, LOW, "-"}, message
            assert parsed.group(3) == "127.0.0.1", message
            assert parsed.group(4) in COMMANDS, message
            commands.append(message)
    return commands


def test_no_client_value_forges_a_log_line_or_shows_a_secret(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, "[auth]\nlockout_failures = 1000\n" + LINE,
                        log_level="debug", users={LOW: (LOW_PASSWORD, ["ListActiveCalls"])})
    try:
        before = notification_failures(server)
        expected = send_everywhere(server)
        # Every notification to a dead URL logs its failure: wait for all of
        # them (the metric counts each once it is logged and done).
        deadline = time.monotonic() + 60
        while notification_failures(server) - before < expected:
            assert time.monotonic() < deadline, (expected, server.output[-3000:])
            time.sleep(0.05)
        # A call through the line's worker, after everything it had to do
        # (and log) for the calls before. A line a notifier thread has yet to
        # write would only go unjudged: this cannot fail the test wrongly.
        call = server.api({"command": "Call", "Dialed": "1"})
        assert server.api({"command": "HangUp", "CallId": call.text("CallId")}).code == 200
    finally:
        assert server.stop() == 0
    output = server.output
    commands = check_every_line(output)
    leaks = [(s, line) for line in output.splitlines() for s in SECRETS if s in line]
    assert leaks == []
    assert "Traceback" not in server.served_output
    # Not vacuous: the payloads reached the log, escaped, on the command lines.
    assert any(STAMP[:10] in line for line in commands)
    assert any("command=other" in line for line in commands)


def test_an_unreadable_users_file_logs_no_client_text(tmp_path: Path) -> None:
    """The command name was logged unescaped on the error path (``api: %s
    failed``) while the users file was unreadable; a password typed as the
    command name was logged too."""
    server = LiveServer(tmp_path, LINE, users={LOW: (LOW_PASSWORD, ["ListActiveCalls"])})
    users = tmp_path / "users.toml"
    good = users.read_text()
    try:
        assert server.api({"command": TYPED_AS_COMMAND}).code == 301
        users.write_text(good + "\n[broken\n")
        for payload in PAYLOADS:
            assert server.api({"command": "HangUp" + payload}).code == 800
            assert server.api({"command": TYPED_AS_COMMAND + payload}).code == 800
            Browser(server).sign_in(USER + payload, PASSWORD)
        users.write_text(good)
        assert server.api({"command": "ListActiveCalls"}).code == 200
    finally:
        assert server.stop() == 0
    output = server.output
    assert "api: other failed" in output
    leaks = [(s, line) for line in output.splitlines() for s in SECRETS if s in line]
    assert leaks == []
    for line in output.splitlines():
        assert line.isprintable() and not line.startswith(STAMP), repr(line)
        assert (line.startswith(("dtmf-gateway: serving", "    "))
                or RECORD.fullmatch(line)), repr(line)
