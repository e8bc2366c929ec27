"""The web console against a hostile LAN (issue 13), through the real server:
redirects that go only to the console's own pages and never carry a query,
sessions that one user cannot evict for everyone, a command log that
anonymous requests cannot flush, and Ozeki XE clients' commands at ``/``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.browser import Browser
from tests.live import PASSWORD, USER, LiveServer

LINE = ('[[line]]\nname = "line1"\ndriver = "simulated"\nrecord_dir = "rec"\n'
        "time_scale = 0.0\ncall_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }\n")
LOW, LOW_PASSWORD = "listener", "listen-only"
PAGES = {"/", "/keypad", "/lines", "/log"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path, "[auth]\nlockout_failures = 50\n" + LINE,
                   users={LOW: (LOW_PASSWORD, ["ListActiveCalls"])})
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.served_output


# Each as it stands in the query string of /login or in a form's field.
HOSTILE_NEXT = [
    "/%09/evil.example/phish",  # a tab, which browsers drop: //evil.example/phish
    "/%0a/evil.example",  # a newline: used to be HTTP 500 and a traceback
    "/%0d%0aSet-Cookie:%20x=1",
    "//evil.example/",
    "/%5Cevil.example",
    "https://evil.example/",
    "/%2F/evil.example",
    "%20//evil.example",
    "/keypad%09/../..//evil.example",
    "javascript:alert(1)",
    "/api%3Fcommand%3DHangUp",
    "/logout",
]


def test_a_sign_in_sends_the_browser_only_to_the_consoles_own_pages(
        server: LiveServer) -> None:
    for target in HOSTILE_NEXT:
        # Both ways the target can arrive: in the form the login page shows,
        # and sent straight to the form.
        shown = Browser(server).sign_in(next_query=target)
        assert (shown.status, shown.header("Location")) == (302, "/"), target
        browser = Browser(server)
        page = browser.send("GET", "/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.body)
        assert token
        posted = browser.send("POST", "/login", {
            "login_token": token.group(1), "username": USER, "password": PASSWORD,
            "next": urllib.parse.unquote(target)})
        assert (posted.status, posted.header("Location")) == (302, "/"), target
        # Signed in, /login?next=... goes the same way.
        again = browser.send("GET", f"/login?next={target}")
        assert (again.status, again.header("Location")) == (302, "/"), target


def test_hang_up_goes_back_only_to_the_consoles_own_pages(server: LiveServer) -> None:
    browser = Browser(server)
    assert browser.sign_in().status == 302
    for target in HOSTILE_NEXT:
        reply = browser.send("POST", "/hangup", {"csrf": browser.csrf(), "call": "nosuch",
                                                 "next": urllib.parse.unquote(target)})
        assert (reply.status, reply.header("Location")) == (302, "/"), target


def test_the_consoles_own_pages_are_kept_without_their_query(server: LiveServer) -> None:
    browser = Browser(server)
    for target, back in (("/keypad", "/keypad"), ("/lines", "/lines"), ("/log", "/log"),
                         ("/keypad%3Fcall%3Dabc%26Password%3Dhunter2", "/keypad")):
        reply = Browser(server).sign_in(next_query=target)
        assert reply.header("Location") == back, target
    assert browser.sign_in().header("Location") == "/"
    reply = browser.send("POST", "/hangup", {"csrf": browser.csrf(), "call": "nosuch",
                                             "next": "/keypad"})
    assert reply.header("Location") == "/keypad"


def test_no_redirect_carries_a_query_it_was_given(server: LiveServer) -> None:
    anonymous = Browser(server)
    for path, location in (("/?Username=u&Password=hunter2secret", "/login?next=/"),
                           ("/keypad?call=abc&Password=hunter2secret", "/login?next=/keypad"),
                           ("/lines?next=//evil.example", "/login?next=/lines"),
                           ("/log?x=%0d%0a", "/login?next=/log")):
        reply = anonymous.send("GET", path)
        assert (reply.status, reply.header("Location")) == (302, location), path


def test_signing_in_again_and_again_signs_nobody_else_out(server: LiveServer) -> None:
    """256 sign-ins of a low-privilege user used to evict the admin's session."""
    admin = Browser(server)
    assert admin.sign_in().status == 302
    first = Browser(server, "127.0.0.2")
    assert first.sign_in(LOW, LOW_PASSWORD).status == 302
    for _ in range(300):
        assert Browser(server, "127.0.0.2").sign_in(LOW, LOW_PASSWORD).status == 302
    assert admin.send("GET", "/lines").status == 200
    # The low user's own oldest session is what made room.
    assert first.send("GET", "/lines").header("Location") == "/login?next=/lines"


def test_anonymous_requests_do_not_push_out_what_users_did(server: LiveServer) -> None:
    """200 requests without credentials used to push every real entry out of
    the console's command log."""
    call = server.api({"command": "Call", "Dialed": "5551234"})
    assert call.code == 200
    call_id = call.text("CallId")
    assert server.api({"command": "HangUp", "CallId": call_id}).code == 200
    for n in range(150):
        assert Browser(server, f"127.0.3.{n + 1}").send(
            "GET", "/api?command=ListActiveCalls").code() == 304
    for n in range(150):
        assert Browser(server, "127.0.0.3").send(
            "GET", f"/api?command=HangUp&CallId=x{n}").code() == 304
    admin = Browser(server)
    assert admin.sign_in().status == 302
    rows = re.findall(r"<tr[^>]*>\s*<td data-label=\"Time\">.*?</tr>",
                      admin.send("GET", "/log").body, re.S)
    mine = [r for r in rows if f">{USER}<" in r]
    assert any("Call<" in r and call_id in r for r in mine), rows
    assert any("HangUp" in r and call_id in r for r in mine), rows
    # The refused ones, counted: one row for the address that sent 150.
    assert any("127.0.0.3" in r and "×150" in r and "304" in r for r in rows), rows
    assert len(rows) < 100


def test_xe_clients_commands_at_the_root_are_api_requests(server: LiveServer) -> None:
    """``GET /?command=...`` used to answer 302 to /login with the query,
    password included, in Location."""
    client = Browser(server)
    auth = f"Username={USER}&Password={PASSWORD}"
    for reply in (client.send("GET", f"/?command=ListActiveCalls&{auth}"),
                  client.send("GET", f"/?Command=listactivecalls&{auth}"),
                  client.send("POST", "/", {"command": "ListActiveCalls", "Username": USER,
                                            "Password": PASSWORD})):
        assert reply.status == 200 and reply.header("Location") is None
        assert (reply.header("Content-Type") or "").startswith("application/xml")
        assert reply.code() == 200
    placed = client.send("GET", f"/?command=Call&Dialed=1&{auth}")
    call_id = ElementTree.fromstring(placed.body).findtext("CallId")
    assert placed.code() == 200 and call_id
    hung = client.send("POST", "/", {"command": "HangUp", "CallId": call_id,
                                     "Username": USER, "Password": PASSWORD})
    assert hung.code() == 200
    # Refusals are the API's too: no credentials 304, a wrong password 305.
    assert client.send("GET", "/?command=ListActiveCalls").code() == 304
    wrong = client.send("GET", "/?command=ListActiveCalls&Username=x&Password=hunter2secret")
    assert wrong.code() == 305 and wrong.header("Location") is None
    assert client.send("GET", "/?command=Teleport&" + auth).code() == 301
    assert "hunter2secret" not in server.output
