"""The console's pages, their live fragments, and its three actions.

Every action is an API command run through :func:`gateway.api.commands.execute`
with the form's fields under the API's parameter names, then counted, logged
and remembered by :func:`gateway.api.commands.record`, exactly as ``/api`` does.

CSRF: every POST carries the session's token in a hidden ``csrf`` field (or an
``X-CSRF-Token`` header), and a POST whose ``Origin`` is another site is
refused before that. The login form, which has no session yet, carries a
random token that must match a cookie of its own (double submit). The cookies
are ``HttpOnly`` and ``SameSite=Strict`` on top of that.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from gateway.api.commands import COMMANDS, ApiState, Outcome, Params, execute, record, state
from gateway.auth import LockedOut, User, check_login
from gateway.calls import Call, Gateway
from gateway.codes import Code
from gateway.commandlog import SIZE, CommandRecord
from gateway.console.sessions import Session, Sessions
from gateway.errors import ConfigError
from gateway.logs import escape

log = logging.getLogger("gateway.console")

bp = Blueprint("console", __name__, template_folder="templates", static_folder="static",
               static_url_path="/console-static")

COOKIE = "dtmf_console"
LOGIN_COOKIE = "dtmf_console_login"
PUBLIC = frozenset({"console.login", "console.static"})
#: The pages a sign-in or a form may send the browser back to ("next"): a
#: redirect goes to one of these, by its own path and never with a query, so
#: it can neither leave the site nor carry anything a client wrote.
PAGES = ("console.calls", "console.keypad", "console.lines", "console.command_log")
FRAGMENTS = frozenset({"console.calls_fragment", "console.lines_fragment",
                       "console.log_fragment"})

#: Strict enough that an injected script could neither run nor call out.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass
class Visitor:
    token: str
    session: Session
    user: User


def sessions() -> Sessions:
    found: Sessions = current_app.extensions["dtmf_console"]
    return found


def visitor() -> Visitor | None:
    found: Visitor | None = g.get("console_visitor")
    return found


def current() -> Visitor:
    """The signed-in visitor (every endpoint but login has one)."""
    found = visitor()
    assert found is not None
    return found


def _address() -> str:
    return request.remote_addr or ""


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _page_error(status: int, title: str, text: str) -> Response:
    if _wants_json():
        return make_response(jsonify(ok=False, code=status, message=text), status)
    return make_response(render_template("console/error.html", title=title, text=text), status)


def _load_visitor(api: ApiState) -> Visitor | None:
    token = request.cookies.get(COOKIE)
    # Live fragments poll every second; they must not keep an idle session alive.
    session = sessions().get(token, touch=request.endpoint not in FRAGMENTS)
    if token is None or session is None:
        return None
    user = api.users.get(session.user)
    if user is None or user.password_hash != session.password_hash:
        sessions().drop(token)
        return None
    return Visitor(token, session, user)


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not sent by every client; the CSRF token is the real check
    return urlsplit(origin).netloc == request.host


@bp.before_request
def guard() -> Response | None:
    api = state()
    if not api.policy.permits(_address()):
        return _page_error(403, "Forbidden", "The gateway is not open to this address.")
    if request.method == "POST" and not _same_origin():
        return _page_error(403, "Forbidden", "A form from another site was refused.")
    found = _load_visitor(api)
    g.console_visitor = found
    if request.endpoint in PUBLIC:
        return None
    if found is None:
        if request.method != "GET" or _wants_json() or request.endpoint in FRAGMENTS:
            return _page_error(401, "Signed out", "Your session has ended: sign in again.")
        if request.endpoint in PAGES:
            return redirect(url_for(".login", next=url_for(request.endpoint)))
        return redirect(url_for(".login"))
    if request.method == "POST":
        given = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
        if not hmac.compare_digest(given.encode(), found.session.csrf.encode()):
            return _page_error(400, "Form expired",
                               "The form was out of date and nothing was done: reload the page.")
    return None


@bp.errorhandler(ConfigError)
def users_file_broken(exc: ConfigError) -> Response:
    # The users file is edited by hand; say so instead of a bare 500, but keep
    # its path and contents to the log.
    log.error("console: %s", exc)  # the server's own file; the log handler keeps it one line
    return _page_error(500, "Users file unreadable",
                       "The gateway cannot read its users file; its log says why.")


@bp.after_request
def headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def page_context() -> dict[str, Any]:
    found = visitor()
    return {
        "user": found.user if found else None,
        "csrf": found.session.csrf if found else "",
        "may": (lambda command: found is not None and found.user.may(command)),
        "clock": _clock,
    }


def _clock(when: datetime) -> str:
    today = datetime.now().date()
    return when.strftime("%H:%M:%S" if when.date() == today else "%Y-%m-%d %H:%M:%S")


def _back_to(path: str | None, default: str) -> str:
    """The console page ``path`` names (by its path alone; a query is left
    behind), else ``default``."""
    wanted = (path or "").split("?", 1)[0]
    for endpoint in PAGES:
        own = url_for(endpoint)
        if wanted == own:
            return own
    return default


# -- signing in ---------------------------------------------------------------


def _login_page(error: str = "", status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = make_response(render_template(
        "console/login.html", login_token=token, error=error,
        next=_back_to(request.values.get("next"), ""), username=request.form.get("username", "")),
        status)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/login")
    return response


def _remember_login(api: ApiState, user: str | None, code: Code) -> None:
    entry = CommandRecord(datetime.now(), "console", user or "-", _address(), "Login", "-",
                          "-", int(code))
    if user is None:
        api.commands.add_refused(entry)
    else:
        api.commands.add(entry)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    if request.method == "GET":
        if visitor() is not None:
            return redirect(_back_to(request.args.get("next"), url_for(".calls")))
        return _login_page()
    api = state()
    address = _address()
    if api.lockout.locked(address):
        return _locked_out(api, "locked out after repeated failures")
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    given = request.form.get("login_token", "")
    if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
        return _login_page("The sign-in form was out of date: try again.", 400)
    # The password exactly as typed, as everywhere (see gateway.auth).
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    if not username or not password:
        return _login_page("Enter a user name and a password.", 400)
    try:
        user = check_login(api.users, api.lockout, address, username, password)
    except LockedOut as exc:
        return _locked_out(api, exc.reason)
    if user is None:
        # Not the name given: a password typed into the name field must not reach the log.
        log.info("console login failed addr=%s", escape(address))
        _remember_login(api, None, Code.AUTH_FAILED)
        return _login_page("Wrong user name or password.", 401)
    sessions().drop(request.cookies.get(COOKIE))
    token, _ = sessions().create(user)
    log.info("console login user=%s addr=%s", escape(user.name), escape(address))
    _remember_login(api, user.name, Code.OK)
    response = redirect(_back_to(request.form.get("next"), url_for(".calls")))
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _locked_out(api: ApiState, reason: str) -> Response:
    log.warning("console refused %s: %s", escape(_address()), reason)
    _remember_login(api, None, Code.FORBIDDEN_ADDRESS)
    return _login_page("Too many failed sign-ins from this address: wait a few minutes.", 429)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    sessions().drop(current().token)
    log.info("console logout user=%s addr=%s", escape(current().user.name), escape(_address()))
    response = redirect(url_for(".login"))
    response.delete_cookie(COOKIE, path="/")
    return response


# -- pages and their live fragments ------------------------------------------------


def _gateway() -> Gateway:
    return state().gateway


def _calls() -> list[Call] | None:
    """The active calls, or None when the user may not list them."""
    if not current().user.may("ListActiveCalls"):
        return None
    return _gateway().active_calls()


def _lines() -> list[dict[str, Any]]:
    return [{
        "name": snap.name, "driver": snap.driver, "hook": snap.hook, "fault": snap.fault,
        "depth": snap.queue_depth, "busy": snap.busy, "call": snap.call_id or "",
    } for snap in _gateway().snapshots()]


def _log() -> list[CommandRecord] | None:
    if not current().user.may("ListActiveCalls"):
        return None
    return state().commands.recent()


def _page(template: str, active: str, **context: Any) -> str:
    return render_template(template, active=active,
                           flashes=current().session.take_flashes(), **context)


@bp.route("/")
def calls() -> str:
    return _page("console/calls.html", "calls", calls=_calls())


@bp.route("/keypad")
def keypad() -> str:
    timing = _gateway().timing
    args = request.args
    return _page(
        "console/keypad.html", "keypad", calls=_calls(),
        chosen=args.get("call", ""), party=args.get("party", "all").lower(),
        duration=args.get("duration") or timing.duration_ms,
        gap=args.get("gap") or timing.gap_ms,
    )


@bp.route("/lines")
def lines() -> str:
    return _page("console/lines.html", "lines", lines=_lines())


@bp.route("/log")
def command_log() -> str:
    return _page("console/log.html", "log", records=_log(), rows=SIZE)


@bp.route("/fragment/calls")
def calls_fragment() -> str:
    return render_template("console/_calls.html", calls=_calls(), back=request.args.get("back"))


@bp.route("/fragment/lines")
def lines_fragment() -> str:
    return render_template("console/_lines.html", lines=_lines())


@bp.route("/fragment/log")
def log_fragment() -> str:
    return render_template("console/_log.html", records=_log())


# -- actions -----------------------------------------------------------------------


def run(command: str, fields: dict[str, str]) -> Outcome:
    """Run an API command for the signed-in user, as ``/api`` would."""
    started = time.monotonic()
    who = current().user
    _, handler = COMMANDS[command.lower()]
    if not who.may(command):
        outcome = Outcome(Code.FORBIDDEN_USER)
    else:
        outcome = execute(handler, Params(fields), command)
    record("console", who.name, _address(), command, outcome, time.monotonic() - started)
    return outcome


def _said(outcome: Outcome) -> str:
    return f"{int(outcome.code)}: {outcome.message}"


@bp.route("/call", methods=["POST"])
def place_call() -> Response:
    outcome = run("Call", {"Dialed": request.form.get("dialed", "")})
    session = current().session
    if outcome.code != Code.OK:
        session.flash("error", f"The call was not placed. {_said(outcome)}")
        return redirect(url_for(".calls"))
    session.flash("ok", f"Call {outcome.call} is up on {outcome.line}.")
    return redirect(url_for(".keypad", call=outcome.call))


@bp.route("/keys", methods=["POST"])
def send_keys() -> Response:
    form = request.form
    # The keypad's buttons are ``key``; the typed string is ``keys``.
    keys = form.get("key") or form.get("keys", "")
    fields = {"CallId": form.get("call", ""), "Party": form.get("party", ""), "Keys": keys,
              "Duration": form.get("duration", ""), "Gap": form.get("gap", "")}
    outcome = run("SendDTMF", fields)
    ok = outcome.code == Code.OK
    if _wants_json():
        return jsonify(ok=ok, code=int(outcome.code), message=outcome.message, keys=keys,
                       call=fields["CallId"])
    current().session.flash("ok" if ok else "error",
                            f"Sent {keys}." if ok else f"Not sent. {_said(outcome)}")
    return redirect(url_for(".keypad", call=fields["CallId"], party=fields["Party"],
                            duration=fields["Duration"], gap=fields["Gap"]))


@bp.route("/hangup", methods=["POST"])
def hang_up() -> Response:
    call_id = request.form.get("call", "")
    outcome = run("HangUp", {"CallId": call_id})
    if outcome.code == Code.OK:
        current().session.flash("ok", f"Call {call_id} hung up.")
    else:
        current().session.flash("error", f"Not hung up. {_said(outcome)}")
    return redirect(_back_to(request.form.get("next"), url_for(".calls")))
