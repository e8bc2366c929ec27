"""The web console through Flask's test client: sign-in, CSRF, each action, the log."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from gateway.auth import User, save_user
from gateway.calls import Gateway
from gateway.commandlog import CommandLog, CommandRecord
from gateway.console.sessions import Sessions
from gateway.lines.simulated import SimulatedLine
from tests.conftest import PASSWORD, USER, call_api
from tests.support import decode_wav, needs_multimon

MakeApp = Callable[..., Flask]


def login_token(client: FlaskClient) -> str:
    page = client.get("/login")
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: FlaskClient, user: str = USER, password: str = PASSWORD,
            **extra: str) -> TestResponse:
    return client.post("/login", data={"login_token": login_token(client), "username": user,
                                       "password": password, **extra})


def csrf_of(client: FlaskClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text)
    assert found
    return found.group(1)


def flashes(client: FlaskClient, path: str = "/") -> list[str]:
    page = client.get(path).text
    found = re.findall(r'<p class="flash (?:ok|error)"[^>]*>([^<]*)</p>', page)
    return [html.unescape(text) for text in found]


@pytest.fixture
def console(client: FlaskClient) -> FlaskClient:
    """A client signed in as the seed's user."""
    assert sign_in(client).status_code == 302
    return client


def place(client: FlaskClient, dialed: str = "5551234") -> str:
    response = client.post("/call", data={"csrf": csrf_of(client), "dialed": dialed})
    found = re.search(r"/keypad\?call=(\w+)$", response.headers["Location"])
    assert found, (response.headers["Location"], flashes(client))
    return found.group(1)


def send(client: FlaskClient, call_id: str, keys: str, **fields: str) -> Any:
    data = {"csrf": csrf_of(client), "call": call_id, "party": "all", "duration": "60",
            "gap": "60", "keys": keys, **fields}
    response = client.post("/keys", data=data, headers={"Accept": "application/json"})
    assert response.status_code == 200
    return response.json


def recording_of(gateway: Gateway, call_id: str) -> Any:
    recorder = gateway.lines["line1"].recorder
    assert recorder is not None
    return recorder.path(call_id)


# -- signing in ----------------------------------------------------------------------


def test_signed_out_pages_go_to_the_form_and_the_rest_is_refused(client: FlaskClient) -> None:
    page = client.get("/keypad?call=abc")
    assert page.status_code == 302
    # Back to the page after signing in, but never with the query it was given.
    assert page.headers["Location"] == "/login?next=/keypad"
    assert client.get("/fragment/calls").status_code == 401
    assert client.get("/fragment/log").status_code == 401
    for path in ("/call", "/keys", "/hangup", "/logout"):
        assert client.post(path, data={"dialed": "1"}).status_code == 401
    assert client.get("/login").status_code == 200


def test_sign_in_sets_a_strict_httponly_session_cookie(client: FlaskClient) -> None:
    form_cookie = client.get("/login").headers["Set-Cookie"]
    assert "HttpOnly" in form_cookie and "SameSite=Strict" in form_cookie
    response = sign_in(client, next="/lines")
    assert response.status_code == 302 and response.headers["Location"] == "/lines"
    cookie = next(c for c in response.headers.getlist("Set-Cookie")
                  if c.startswith("dtmf_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert PASSWORD not in cookie and USER not in cookie
    page = client.get("/lines")
    assert page.status_code == 200 and USER in page.text


def test_next_cannot_leave_the_site(app: Flask) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = sign_in(app.test_client(), next=target)
        assert response.headers["Location"] == "/", target


def test_wrong_password_is_refused_and_not_logged(
        client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    # A password typed into the name field must not reach the log either.
    response = sign_in(client, user="hunter2-secret", password="wrong")
    assert response.status_code == 401
    assert "Wrong user name or password." in response.text
    assert client.get("/").status_code == 302
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "console login failed" in text and "hunter2" not in text and "wrong" not in text


def test_sign_in_without_the_form_token_is_refused(client: FlaskClient) -> None:
    response = client.post("/login", data={"username": USER, "password": PASSWORD})
    assert response.status_code == 400
    response = client.post("/login", data={"login_token": "forged", "username": USER,
                                           "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_the_lockout_is_the_apis(make_app: MakeApp) -> None:
    app = make_app(auth={"lockout_failures": 3, "lockout_seconds": 60})
    client = app.test_client()
    # Two failures through the API and one through the console lock the address...
    for _ in range(2):
        assert call_api(client, Username=USER, Password="bad", command="ListActiveCalls",
                        auth=False).code == 305
    assert sign_in(client, password="bad").status_code == 401
    # ...for both: the right password no longer helps.
    locked = sign_in(client)
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
    assert call_api(client, command="ListActiveCalls").code == 307


def test_a_console_success_wipes_no_failure(make_app: MakeApp) -> None:
    """A right password (here the same user's) used to clear the address's
    failures, so guesses between sign-ins were never locked out."""
    app = make_app(auth={"lockout_failures": 2, "lockout_seconds": 60})
    client = app.test_client()
    assert sign_in(client, password="bad").status_code == 401
    assert sign_in(client).status_code == 302
    assert sign_in(app.test_client(), password="bad").status_code == 401
    assert sign_in(app.test_client()).status_code == 429
    assert call_api(client, command="ListActiveCalls").code == 307


def test_a_denied_address_gets_nothing(make_app: MakeApp) -> None:
    client = make_app(server={"deny": ["127.0.0.0/8"]}).test_client()
    assert client.get("/login").status_code == 403
    assert sign_in_raw(client).status_code == 403
    assert client.get("/console-static/console.css").status_code == 403


def sign_in_raw(client: FlaskClient) -> TestResponse:
    return client.post("/login", data={"username": USER, "password": PASSWORD})


def test_sign_out_ends_the_session_on_the_server(app: Flask, console: FlaskClient) -> None:
    token = console.get_cookie("dtmf_console")
    assert token is not None
    response = console.post("/logout", data={"csrf": csrf_of(console)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    # A copy of the old cookie is worth nothing now.
    thief = app.test_client()
    thief.set_cookie("dtmf_console", token.value)
    assert thief.get("/").status_code == 302


def test_a_new_password_or_a_removed_user_ends_the_session(
        app: Flask, console: FlaskClient) -> None:
    config_users = app.extensions["dtmf_api"].users.path
    assert console.get("/").status_code == 200
    save_user(config_users, USER, "a new password")
    assert console.get("/").status_code == 302
    assert sign_in(console, password="a new password").status_code == 302
    config_users.write_text("")
    assert console.get("/").status_code == 302


def test_a_users_file_broken_by_hand_is_a_readable_error(app: Flask,
                                                          console: FlaskClient) -> None:
    app.extensions["dtmf_api"].users.path.write_text("[users.x\n")
    page = console.get("/")
    assert page.status_code == 500 and "cannot read its users file" in page.text
    assert call_api(console, command="ListActiveCalls").code == 800


# -- CSRF ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "not-the-token"])
def test_a_post_without_the_sessions_token_does_nothing(
        console: FlaskClient, gateway: Gateway, token: str | None) -> None:
    data = {"dialed": "5551234"}
    if token is not None:
        data["csrf"] = token
    response = console.post("/call", data=data)
    assert response.status_code == 400 and "nothing was done" in response.text
    assert gateway.active_calls() == []
    assert console.post("/logout", data=data).status_code == 400
    assert console.get("/").status_code == 200  # still signed in


def test_a_post_from_another_site_is_refused(console: FlaskClient, gateway: Gateway) -> None:
    response = console.post("/call", data={"csrf": csrf_of(console), "dialed": "1"},
                            headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert gateway.active_calls() == []


def test_the_token_of_one_session_is_no_good_in_another(app: Flask, console: FlaskClient,
                                                        gateway: Gateway) -> None:
    other = app.test_client()
    sign_in(other)
    response = other.post("/call", data={"csrf": csrf_of(console), "dialed": "1"})
    assert response.status_code == 400
    assert gateway.active_calls() == []


# -- actions -------------------------------------------------------------------------------


@needs_multimon
def test_place_send_and_hang_up(console: FlaskClient, gateway: Gateway) -> None:
    call_id = place(console)
    assert flashes(console, f"/keypad?call={call_id}") == [f"Call {call_id} is up on line1."]
    assert [c.call_id for c in gateway.active_calls()] == [call_id]
    assert send(console, call_id, "12") == {"ok": True, "code": 200, "call": call_id,
                                             "keys": "12",
                                             "message": "Command successfully executed"}
    # Without JavaScript: the keypad button's key, a redirect that keeps the choices.
    response = console.post("/keys", data={"csrf": csrf_of(console), "call": call_id,
                                           "party": "caller", "duration": "70", "gap": "80",
                                           "key": "#", "keys": "ignored"})
    assert response.headers["Location"] == (
        f"/keypad?call={call_id}&party=caller&duration=70&gap=80")
    assert flashes(console, response.headers["Location"]) == ["Sent #."]
    response = console.post("/hangup", data={"csrf": csrf_of(console), "call": call_id,
                                             "next": "/keypad"})
    assert response.headers["Location"] == "/keypad"
    assert flashes(console) == [f"Call {call_id} hung up."]
    assert gateway.active_calls() == []
    assert decode_wav(recording_of(gateway, call_id)) == "12#"


def test_errors_are_the_apis_codes_and_messages(console: FlaskClient, gateway: Gateway) -> None:
    call_id = place(console)
    assert send(console, call_id, "12x")["message"] == (
        "Missing or invalid parameter 'Keys' for command 'SendDTMF': invalid key 'x' at "
        "position 3")
    answer = send(console, call_id, "1", duration="5")
    assert (answer["ok"], answer["code"]) == (False, 302)
    assert answer["message"] == ("Missing or invalid parameter 'Duration' for command "
                                 "'SendDTMF': 5 ms is outside 40 to 2000 ms")
    assert send(console, "nope", "1")["message"] == "Call not found with ID 'nope'"
    console.post("/hangup", data={"csrf": csrf_of(console), "call": "nope"})
    assert flashes(console) == ["Not hung up. 601: Call not found with ID 'nope'"]
    console.post("/call", data={"csrf": csrf_of(console), "dialed": "55x"})
    assert flashes(console) == [
        "The call was not placed. 302: Missing or invalid parameter 'Dialed' for command "
        "'Call': invalid key 'x' at position 3"]
    # One line, busy with the first call: the API's "no free line".
    console.post("/call", data={"csrf": csrf_of(console), "dialed": "1"})
    assert flashes(console) == [
        "The call was not placed. 402: Call connect to '1' failed with result state "
        "'NoFreeLine'"]
    assert [c.call_id for c in gateway.active_calls()] == [call_id]


def test_a_line_fault_is_shown_on_the_keypad_and_the_lines_page(
        console: FlaskClient, gateway: Gateway) -> None:
    call_id = place(console)
    driver = gateway.lines["line1"].driver
    assert isinstance(driver, SimulatedLine)
    driver.fail_after_digits = 1
    answer = send(console, call_id, "123")
    assert answer["code"] == 801 and answer["message"].startswith("Line 'line1' fault: ")
    lines = console.get("/fragment/lines").text
    assert '<span class="fault">' in lines and "on-hook" in lines
    assert gateway.active_calls() == []


def test_permissions_are_the_users_api_commands(client: FlaskClient, gateway: Gateway) -> None:
    assert sign_in(client, user="listener", password="listen-only").status_code == 302
    keypad = client.get("/keypad").text
    assert "Your user may not send keys" in keypad and 'action="/keys"' not in keypad
    assert 'action="/call"' not in client.get("/").text
    client.post("/call", data={"csrf": csrf_of(client), "dialed": "1"})
    assert flashes(client) == ["The call was not placed. 306: User is not allowed to use API "
                               "in ACL"]
    assert gateway.active_calls() == []
    log = client.get("/fragment/log").text
    assert "306" in log and "listener" in log


def test_a_user_without_listactivecalls_sees_no_calls_or_log(
        app: Flask, client: FlaskClient, gateway: Gateway) -> None:
    save_user(app.extensions["dtmf_api"].users.path, "sender", "send-only-pw", ["SendDTMF"])
    assert sign_in(client, user="sender", password="send-only-pw").status_code == 302
    call_api(client, command="Call", Dialed="1")
    assert "may not list calls" in client.get("/fragment/calls").text
    assert "may not see the log" in client.get("/fragment/log").text
    # The keypad takes a typed CallId instead of offering the calls.
    call_id = gateway.active_calls()[0].call_id
    assert 'name="call" value=""' in client.get("/keypad").text
    assert send(client, call_id, "5")["ok"] is True


# -- pages -----------------------------------------------------------------------------------


def test_calls_page_and_fragment_list_the_registry(console: FlaskClient, gateway: Gateway,
                                                   client: FlaskClient) -> None:
    assert "No call is up." in console.get("/fragment/calls").text
    call_id = call_api(console, command="Call", Dialed="5551234").text("CallId")
    for path in ("/", "/fragment/calls", "/keypad"):
        text = console.get(path).text
        assert f'data-call="{call_id}"' in text and "InCall" in text and "5551234" in text, path
    assert f'<option value="{call_id}">' in console.get("/keypad").text
    assert f'<option value="{call_id}" selected>' in console.get(f"/keypad?call={call_id}").text


def test_lines_page(console: FlaskClient, gateway: Gateway) -> None:
    text = console.get("/lines").text
    assert 'data-line="line1"' in text and "simulated" in text and "on-hook" in text
    assert "0 waiting" in text and '<span class="ok">none</span>' in text
    call_id = place(console)
    text = console.get("/fragment/lines").text
    assert "off-hook" in text and call_id in text


def test_log_shows_api_and_console_commands_without_secrets(
        console: FlaskClient, gateway: Gateway) -> None:
    call_id = call_api(console, command="Call", Dialed="5551234").text("CallId")
    call_api(console, command="SendDTMF", CallId=call_id, Party="all", Keys="4711")
    for _ in range(3):
        call_api(console, command="ListActiveCalls")
    send(console, call_id, "9")
    call_api(console, Username=USER, Password="not-it", auth=False, command="HangUp")
    text = console.get("/log").text
    rows = re.findall(r"<tr[^>]*>\s*<td data-label=\"Time\">.*?</tr>", text, re.S)
    # Newest first: HangUp, SendDTMF, 3 x ListActiveCalls, SendDTMF, Call, the sign-in.
    assert len(rows) == 6
    assert "console 127.0.0.1" in rows[1] and "SendDTMF" in rows[1] and call_id in rows[1]
    assert "ListActiveCalls <span class=\"count\">×3</span>" in rows[2]
    assert "api 127.0.0.1" in rows[3] and "200" in rows[3]
    assert "305" in rows[0] and "HangUp" in rows[0]
    assert "Login" in rows[-1]
    for secret in (PASSWORD, "not-it", "4711"):
        assert secret not in text


def test_security_headers(console: FlaskClient) -> None:
    response = console.get("/")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # No inline script or style: the policy would block them.
    assert "<script>" not in response.text and "style=" not in response.text
    for asset in ("console.css", "console.js", "icon.svg"):
        assert console.get(f"/console-static/{asset}").status_code == 200


def test_the_api_is_unchanged_beside_the_console(client: FlaskClient) -> None:
    assert call_api(client, command="ListActiveCalls").code == 200
    assert client.get("/api").content_type.startswith("application/xml")


# -- the pieces --------------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_are_bounded_per_user() -> None:
    now = [0.0]
    sessions = Sessions(idle_s=100, per_user=2, clock=lambda: now[0])
    user, other = User("u", "hash"), User("admin", "hash2")
    a, _ = sessions.create(user)
    now[0] = 60
    assert sessions.get(a, touch=False) is not None
    now[0] = 120  # 120 s since a was last used: polling (touch=False) did not count
    assert sessions.get(a) is None
    admin, _ = sessions.create(other)
    b, _ = sessions.create(user)
    now[0] = 130
    c, _ = sessions.create(user)
    now[0] = 140
    assert sessions.get(b) is not None
    d, _ = sessions.create(user)  # u has two: its longest unused (c) goes
    assert sessions.get(c) is None and sessions.get(b) is not None and sessions.get(d)
    # However often u signs in, admin's session stays.
    for _ in range(50):
        sessions.create(user)
    assert sessions.get(admin) is not None
    assert len(sessions) == 3


def test_command_log_is_bounded_and_folds_repeated_reads() -> None:
    log = CommandLog(size=3)

    def rec(command: str, code: int = 200) -> CommandRecord:
        return CommandRecord(datetime.now(), "api", "u", "10.0.0.1", command, "-", "-", code)

    for _ in range(5):
        log.add(rec("ListActiveCalls"))
    log.add(rec("SendDTMF"))
    log.add(rec("SendDTMF"))
    log.add(rec("ListActiveCalls", 305))
    rows = log.recent()
    assert [(r.command, r.code, r.count) for r in rows] == [
        ("ListActiveCalls", 305, 1), ("SendDTMF", 200, 1), ("SendDTMF", 200, 1)]
    assert log.recent(1) == rows[:1]
    log.add(rec("x" * 5000))
    assert log.recent(1)[0].command == "x" * 64


def test_refused_requests_are_counted_apart_and_evict_no_user_row() -> None:
    log = CommandLog(size=3, refused_size=2)

    def rec(command: str, code: int = 200, address: str = "10.0.0.1") -> CommandRecord:
        return CommandRecord(datetime.now(), "api", "u", address, command, "-", "-", code)

    log.add(rec("Call"))
    log.add(rec("HangUp"))
    for n in range(100):
        log.add_refused(rec("ListActiveCalls", 304, f"10.0.1.{n}"))
    for _ in range(30):
        log.add_refused(rec("HangUp", 305, "10.0.0.9"))
    rows = log.recent()
    assert [(r.command, r.code, r.address, r.count) for r in rows] == [
        ("HangUp", 305, "10.0.0.9", 30), ("ListActiveCalls", 304, "10.0.1.99", 1),
        ("HangUp", 200, "10.0.0.1", 1), ("Call", 200, "10.0.0.1", 1)]
