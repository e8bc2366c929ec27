"""``/api``: Ozeki's HTTP API.

``GET /api?command=NAME&...`` and ``POST /api`` (form-urlencoded) are the
same. Parameter names and ``Party`` values are matched case-insensitively.
Every answer is HTTP 200 with an XML body; what happened is its ``Code``.

:class:`ApiFastPath` answers ``/api`` before Flask builds its request
context, routing and response around the view; both run :func:`answer`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Request, Response, current_app, request, send_from_directory
from werkzeug.exceptions import InternalServerError, RequestEntityTooLarge

from gateway.api.commands import COMMANDS, Outcome, Params, execute, outcome_of, record, state
from gateway.api.responses import render
from gateway.auth import LockedOut, User, check_login
from gateway.codes import Code, message
from gateway.errors import ApiError
from gateway.logs import escape

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("gateway.api")

CONTENT_TYPE = "application/xml; charset=utf-8"

bp = Blueprint("api", __name__)


def credentials(params: Params, source: Request) -> tuple[str, str] | None:
    """The user name and password, from the parameters or Basic authentication.
    The password exactly as sent (see gateway.auth); the name without the
    whitespace no user name can hold."""
    username = (params.exact("Username", "") or "").strip()
    password = params.exact("Password", "") or ""
    if username and password:
        return username, password
    header = source.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if sep and user.strip():
            return user.strip(), secret
    return None


def authenticate(params: Params, address: str, command: str, source: Request) -> User:
    api = state()
    if not api.policy.permits(address):
        raise ApiError(Code.FORBIDDEN_ADDRESS)
    try:
        if api.lockout.locked(address):
            raise LockedOut("locked out after repeated failures")
        given = credentials(params, source)
        if given is None:
            raise ApiError(Code.AUTH_REQUIRED)
        user = check_login(api.users, api.lockout, address, *given)
    except LockedOut as exc:
        log.warning("api refused %s: %s", escape(address), exc.reason)
        raise ApiError(Code.FORBIDDEN_ADDRESS) from None
    if user is None:
        raise ApiError(Code.AUTH_FAILED)
    if not user.may(command):
        raise ApiError(Code.FORBIDDEN_USER)
    return user


@bp.route("/api", methods=["GET", "POST"])
def api() -> Response:
    return xml(answer(request))


def answer(source: Request) -> str:
    """The XML answer to one API request (``source``), which it runs, counts
    and logs. Needs the app's context, not a request's."""
    started = time.monotonic()
    address = source.remote_addr or ""
    command: str = ""
    user: str | None = None
    try:
        try:
            params = Params(source=source)
        except RequestEntityTooLarge:
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            raise ApiError(Code.PARSE_ERROR, message(
                Code.PARSE_ERROR, f"request larger than {limit} bytes")) from None
        raw = params.get("command", "") or ""
        name, handler = COMMANDS.get(raw.lower(), (raw, None))
        command = name
        user = authenticate(params, address, name, source).name
        if handler is None:
            raise ApiError(Code.NOT_IMPLEMENTED, message(Code.NOT_IMPLEMENTED, raw))
        outcome = execute(handler, params, command)
    except Exception as exc:
        # Access refused, or e.g. a users file broken by hand while running:
        # still an Ozeki answer.
        outcome = outcome_of(exc, command)
    record("api", user, address, command, outcome, time.monotonic() - started)
    return render(outcome.code, outcome.text,
                  extra=outcome.extra if outcome.code == Code.OK else "")


#: What a Record command names its files: the CallId, a dash, a number.
RECORDING_NAME = re.compile(r"[A-Za-z0-9]{1,32}-[0-9]{1,6}\.wav")


@bp.route("/recordings/<name>", methods=["GET"])
def recording(name: str) -> Response:
    """A Record command's file, for a user who may run Record (the API's
    credentials and address lists, as for any command)."""
    address = request.remote_addr or ""
    try:
        params = Params(source=request)
        user = authenticate(params, address, "Record", request)
    except ApiError as exc:
        outcome = outcome_of(exc, "Record")
        return xml(render(outcome.code, outcome.text))
    folder = state().gateway.record_dir
    if not RECORDING_NAME.fullmatch(name) or not (folder / name).is_file():
        log.info("recording user=%s addr=%s code=404", escape(user.name), address)
        return Response("no such recording\n", status=404, content_type="text/plain")
    log.info("recording user=%s addr=%s name=%s", escape(user.name), address, name)
    return send_from_directory(folder, name, mimetype="audio/wav", max_age=0)


def xml(body: str) -> Response:
    return Response(body, status=200, content_type=CONTENT_TYPE)


class ApiFastPath:
    """WSGI in front of the Flask app: GET, HEAD and POST at ``/api`` answered
    with :func:`answer`, in the app's context and on Flask's own request class
    (its form limits included), without the request context, routing, hooks
    and response object Flask wraps around a view, which cost as much CPU as
    the command. The answer is the same to the byte, headers included; every
    other path and method goes on to ``wsgi_app``."""

    def __init__(self, app: Flask, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if environ.get("PATH_INFO") != "/api" or method not in ("GET", "HEAD", "POST"):
            return self.wsgi_app(environ, start_response)
        try:
            with self.app.app_context():
                body = answer(self.app.request_class(environ)).encode()
        except Exception:
            # What Flask does with a view that raises: the log, and a bare 500.
            log.exception("api: the answer failed")
            return InternalServerError()(environ, start_response)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE),
                                  ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]


__all__ = ["Outcome", "bp"]
