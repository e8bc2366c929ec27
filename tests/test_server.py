"""The real server process under waitress, on a free loopback port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth import save_user
from tests.support import MULTIMON, decode_wav, needs_multimon

SEED_REQUEST = ("http://127.0.0.1:9509/api?command=SendDTMF&CallId=SdwQD&Party=caller&Keys=01234"
                "&Username=HTTP_User_1&Password=qwe123")
SEED_RESPONSE = (
    '<?xml version="1.0"?>\n'
    '<Response xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
    "  <Code>200</Code>\n"
    "  <Message>Command successfully executed</Message>\n"
    "</Response>\n"
)


class Server:
    def __init__(self, tmp_path: Path, config: str) -> None:
        self.dir = tmp_path
        (tmp_path / "gateway.toml").write_text(config)
        save_user(tmp_path / "users.toml", "HTTP_User_1", "qwe123")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "gateway.toml"),
             "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        self.output: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.output.append(line)
            found = re.search(r"serving (http://127\.0\.0\.1:\d+)/api", line)
            if found:
                self.base = found.group(1)
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError("server did not start: " + "".join(self.output))

    def get(self, url: str) -> str:
        with urllib.request.urlopen(url.replace("http://127.0.0.1:9509", self.base),
                                    timeout=30) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/xml")
            body: bytes = r.read()
            return body.decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.output.append(rest or "")
        return self.proc.returncode


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path, '[[line]]\nname = "line1"\ndriver = "simulated"\n'
                         'record_dir = "rec"\ncall_timing = { dial_tone_ms = 100, '
                         'answer_wait_ms = 100 }\n')
    yield s
    s.stop()


@needs_multimon
def test_seed_request_verbatim_against_the_real_server(server: Server) -> None:
    call = server.get(f"{server.base}/api?command=Call&Dialed=5551234&Username=HTTP_User_1"
                      "&Password=qwe123")
    call_id = re.search(r"<CallId>(\w+)</CallId>", call)
    assert call_id, call
    # The seed's request, word for word, but for the host:port and its CallId.
    body = server.get(SEED_REQUEST.replace("SdwQD", call_id.group(1)))
    assert body == SEED_RESPONSE
    server.get(f"{server.base}/api?command=HangUp&CallId={call_id.group(1)}"
               "&Username=HTTP_User_1&Password=qwe123")
    assert decode_wav(server.dir / "rec" / f"{call_id.group(1)}.wav") == "01234"
    assert server.stop() == 0
    log = "".join(server.output)
    assert "qwe123" not in log
    assert "command=SendDTMF line=line1" in log and "code=200" in log


def test_sigterm_mid_sequence_finishes_and_hangs_up(server: Server) -> None:
    import threading

    call = server.get(f"{server.base}/api?command=Call&Dialed=1&Username=HTTP_User_1"
                      "&Password=qwe123")
    call_id = re.search(r"<CallId>(\w+)</CallId>", call).group(1)  # type: ignore[union-attr]
    answers: list[str] = []
    sender = threading.Thread(target=lambda: answers.append(server.get(
        f"{server.base}/api?command=SendDTMF&CallId={call_id}&Party=all&Keys=123456"
        "&Username=HTTP_User_1&Password=qwe123")))
    sender.start()
    time.sleep(0.5)  # in the middle of the 1.2 s sequence
    assert server.stop() == 0
    sender.join(10)
    log = "".join(server.output)
    assert "stopping on SIGTERM" in log
    assert f"call {call_id} on line1 ended: gateway stopped" in log
    assert "every line on hook" in log
    # The command in progress was let finish: its keys are whole in the recording.
    assert answers and "<Code>200</Code>" in answers[0]
    if MULTIMON:
        assert decode_wav(server.dir / "rec" / f"{call_id}.wav") == "123456"


def test_port_in_use_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    port = server.base.rsplit(":", 1)[1]
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--port", port],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_passwd_from_stdin_and_bad_inputs(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text("")

    def passwd(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "passwd", *args, "--config",
                               str(config)], input=stdin, capture_output=True, text=True,
                              timeout=60)

    ok = passwd("alice.ops", stdin="correct horse\n")
    assert ok.returncode == 0, ok.stderr
    users = (tmp_path / "users.toml").read_text()
    assert "correct horse" not in users and "scrypt$16384$8$1$" in users
    assert oct((tmp_path / "users.toml").stat().st_mode & 0o777) == "0o600"
    from gateway.auth import Users

    assert Users(tmp_path / "users.toml").verify("alice.ops", "correct horse") is not None
    short = passwd("bob", stdin="short\n")
    assert (short.returncode, short.stderr) == (
        2, "dtmf-gateway: error: a password needs at least 8 characters\n")
    bad = passwd("bad name", stdin="long enough\n")
    assert bad.returncode == 2 and "user name 'bad name'" in bad.stderr
