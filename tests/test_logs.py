"""Logs: secrets scrubbed on every path, and the journal's format under systemd."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import logs
from tests.service_process import PASSWORD, USER, GatewayProcess, basic, simulated_lines


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /api?command=SendDTMF&Username=u&Password=qwe123&Keys=1",
     "GET /api?command=SendDTMF&Username=u&Password=[redacted]&Keys=1"),
    ("url=http%3A%2F%2Fh%2F%3FPassword%3Dqwe123%26x%3D1",
     "url=http%3A%2F%2Fh%2F%3FPassword%3D[redacted]%26x%3D1"),
    ("form {'Username': 'u', 'Password': 'qwe123'}",
     "form {'Username': 'u', 'Password': '[redacted]'}"),
    ('{"password": "qwe123", "x": 1}', '{"password": "[redacted]", "x": 1}'),
    ("passwd=qwe123 pwd=qwe123", "passwd=[redacted] pwd=[redacted]"),
    ("command=Password\\x3dqwe123\\x20x", "command=Password\\x3d[redacted]\\x20x"),
    ("Authorization: Basic SFRUUF9Vc2VyXzE6cXdlMTIz", "Authorization: [redacted]"),
    ("{'HTTP_AUTHORIZATION': 'Basic SFRUUF9Vc2VyXzE6cXdlMTIz', 'PATH_INFO': '/api'}",
     "{'HTTP_AUTHORIZATION': '[redacted]', 'PATH_INFO': '/api'}"),
    ("token Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "token Bearer [redacted]"),
    ("CallFinished to http://hook:qwe123@192.0.2.1:8080/done: refused",
     "CallFinished to http://hook:[redacted]@192.0.2.1:8080/done: refused"),
    # What must pass untouched: the API's own line, and ordinary words.
    ("api user=HTTP_User_1 addr=127.0.0.1 command=SendDTMF line=line1 call=SdwQD code=200 ms=5",
     "api user=HTTP_User_1 addr=127.0.0.1 command=SendDTMF line=line1 call=SdwQD code=200 ms=5"),
    ("a password needs at least 8 characters", "a password needs at least 8 characters"),
    ("http://127.0.0.1:9509/api", "http://127.0.0.1:9509/api"),
])
def test_redact(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


# Text made of what the patterns look for, in any case, among ordinary
# characters: the shortcut must never skip a text that one of them changes.
_FRAGMENTS = st.sampled_from([
    "password", "PassWd", "pwd", "Authorization", "basic ", "BEARER ", "digest ", "://",
    "http://u:p@h", "=", ":", "%3D", "\\x3d", "'", '"', " ", "&", "@", "/", "x", "0",
    "abcdefgh", "SFRUUF9Vc2VyXzE6", "\n"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=12).map("".join))
def test_the_shortcut_skips_only_texts_no_pattern_changes(text: str) -> None:
    """``redact`` skips its five patterns unless the text holds a word one
    of them needs (issue 17: the API's line per command paid for all five)."""
    full = text
    for pattern, replacement in logs._PATTERNS:
        full = pattern.sub(replacement, full)
    assert logs.redact(text) == full


@pytest.mark.parametrize(("value", "expected"), [
    ("HTTP_User_1", "HTTP_User_1"),
    ("a\r\nb", "a\\r\\nb"),
    ("x code=200", "x\\x20code\\x3d200"),
    ("C:\\path", "C:\\\\path"),  # a backslash of its own is not an escape
    ("\x1b[2K\x00\x7f", "\\x1b[2K\\x00\\x7f"),
    ("\u2028\x85", "\\u2028\\x85"),
    ("x" * 65, "x" * 64 + "..."),
    ("", ""),
])
def test_escape(value: str, expected: str) -> None:
    assert logs.escape(value) == expected


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks
    logging.captureWarnings(False)


def test_messages_arguments_and_tracebacks_are_scrubbed(restore_logging: None) -> None:
    out = io.StringIO()
    logs.setup("debug", out)
    log = logging.getLogger("gateway.test")
    log.info("request %s", {"Password": PASSWORD})
    try:
        raise ValueError(f"cannot open http://u:{PASSWORD}@h/x?Password={PASSWORD}")
    except ValueError:
        log.exception("failed with Authorization: Basic SFRUUF9Vc2VyXzE6cXdlMTIz")
    text = out.getvalue()
    assert PASSWORD not in text and "SFRUUF9Vc2VyXzE6cXdlMTIz" not in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: cannot open http://u:[redacted]@h/x?Password=[redacted]" in text


def test_every_message_is_one_line_and_a_traceback_is_indented(restore_logging: None) -> None:
    """Whatever a library or an exception puts in a message, each record starts
    at the margin and nothing else does."""
    out = io.StringIO()
    logs.setup("info", out)
    log = logging.getLogger("gateway.test")
    forged = "2001-02-03 04:05:06,789 INFO gateway.api: api user=x code=200"
    log.info("Exception on /a\r\n%s [GET]", forged)
    try:
        raise ValueError("bad url http://h/\n" + forged)
    except ValueError:
        log.exception("notify\u2028%s", forged)
    lines = out.getvalue().splitlines()
    at_margin = [line for line in lines if not line.startswith("    ")]
    assert len(at_margin) == 2 and all(re.match(r"\d{4}-", line) for line in at_margin)
    assert at_margin[0].endswith("Exception on /a\\r\\n" + forged + " [GET]")
    assert at_margin[1].endswith("notify\\u2028" + forged)
    assert "    Traceback (most recent call last):" in lines
    assert "    " + forged in lines  # the exception's second line: indented, not a record


def test_uncaught_exceptions_in_threads_go_through_the_filter(restore_logging: None) -> None:
    out = io.StringIO()
    logs.setup("info", out)

    def crash() -> None:
        raise RuntimeError(f"Password={PASSWORD}")

    thread = threading.Thread(target=crash, name="crasher")
    thread.start()
    thread.join()
    text = out.getvalue()
    assert "uncaught exception in thread crasher" in text
    assert "RuntimeError: Password=[redacted]" in text and PASSWORD not in text


def test_journal_gets_priorities_and_no_timestamps(
    restore_logging: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.setup("info", stream)
        log = logging.getLogger("gateway.test")
        log.info("line line1 open")
        log.warning("slow")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.error("broke", exc_info=True)
        stream.flush()
        stream.seek(0)
        lines = stream.read().splitlines()
    assert lines[:3] == ["<6>gateway.test: line line1 open", "<4>gateway.test: slow",
                         "<3>gateway.test: broke"]
    # Every line of the traceback keeps the priority (journald splits at
    # newlines), indented so that none passes for a record of its own.
    assert len(lines) > 4 and all(line.startswith("<3>    ") for line in lines[3:])
    assert lines[-1] == "<3>    ZeroDivisionError: division by zero"


def test_a_terminal_gets_timestamps(
    restore_logging: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # JOURNAL_STREAM inherited from a parent that was under systemd names another file.
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with (tmp_path / "out").open("w+") as stream:
        logs.setup("info", stream)
        logging.getLogger("gateway.test").info("hello")
        stream.seek(0)
        text = stream.read()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway.test: hello\n", text)


def test_no_password_in_any_log_line_of_the_real_server(tmp_path: Path) -> None:
    """Passwords every way a client or an integrator can send one; then grep the log."""
    wrong = "wrong-Secret-9"
    url_secret = "url-Secret-7"
    gw = GatewayProcess(tmp_path, simulated_lines("line1", time_scale=0.05),
                        args=("--log-level", "debug"))
    try:
        # In the query string, in a form body and in a Basic header.
        call_id = gw.call()
        assert "<Code>200</Code>" in gw.request("/api", data={
            "command": "SendDTMF", "CallId": call_id, "Party": "all", "Keys": "12",
            "Username": USER, "Password": PASSWORD})[1]
        assert "<Code>200</Code>" in gw.request(
            f"/api?command=SendDTMF&CallId={call_id}&Party=all&Keys=3",
            headers={"Authorization": basic(USER, PASSWORD)})[1]
        # Wrong passwords, a bad header, an unknown command.
        for params in ({"Username": USER, "Password": wrong},
                       {"Username": "nobody", "Password": wrong}):
            gw.request("/api?" + urllib.parse.urlencode({"command": "HangUp", **params}))
        gw.request("/api?command=HangUp", headers={"Authorization": basic(USER, wrong)})
        gw.request("/api?command=HangUp", headers={"Authorization": f"Basic {wrong}"})
        gw.request("/api?" + urllib.parse.urlencode({
            "command": f"Password={wrong}", "Username": USER, "Password": PASSWORD}))
        # A notification URL with credentials, to a name the notification
        # policy refuses once it is resolved: its failure is logged with the
        # URL's scheme, host, port and path only.
        gw.api(command="HangUp", CallId=call_id)
        finished = f"http://hook:{url_secret}@localhost:9/finished?Password={url_secret}"
        second = re.search(r"<CallId>(\w+)</CallId>", gw.api(
            command="Call", Dialed="2", FinishedUrl=finished))
        assert second
        gw.api(command="HangUp", CallId=second.group(1))
        gw.wait_for_output("CallFinished to http://localhost:9/finished: refused")
    finally:
        assert gw.stop() == 0
    output = gw.output
    secrets = [PASSWORD, wrong, url_secret, basic(USER, PASSWORD).split()[1],
               basic(USER, wrong).split()[1]]
    leaks = [(s, line) for line in output.splitlines() for s in secrets if s in line]
    assert leaks == []
    assert re.search(r"api user=HTTP_User_1 addr=127\.0\.0\.1 command=SendDTMF line=line1 "
                     r"call=\w+ code=200 ms=\d+", output)
    # A command name the API does not know is logged as "other".
    assert "command=other" in output
