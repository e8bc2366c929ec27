"""The Flask application: ``create_app(config)`` builds it, nothing runs at import."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from gateway import console
from gateway.api import health, spec, views
from gateway.api.commands import ApiState
from gateway.auth import MIN_PASSWORD_LENGTH, AddressPolicy, Lockout, Users
from gateway.calls import Gateway
from gateway.config import Config

log = logging.getLogger(__name__)


def create_app(config: Config, gateway: Gateway | None = None) -> Flask:
    """Build the app on ``gateway`` (made from ``config`` and opened when not given).

    The caller owns the gateway's life: ``app.extensions["dtmf_gateway"].close()``.
    """
    if config.auth.min_password_length < MIN_PASSWORD_LENGTH:
        log.warning("auth.min_password_length is %d: passwords shorter than %d characters "
                    "are accepted (meant only to keep an existing client's password)",
                    config.auth.min_password_length, MIN_PASSWORD_LENGTH)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_request_bytes
    if gateway is None:
        gateway = Gateway(config)
        gateway.open()
    app.extensions["dtmf_gateway"] = gateway
    policy = AddressPolicy(config.server.allow, config.server.deny)
    app.extensions["dtmf_api"] = ApiState(
        gateway=gateway,
        users=Users(config.users_path),
        policy=policy,
        lockout=Lockout(config.auth.lockout_failures, config.auth.lockout_seconds),
    )
    app.register_blueprint(views.bp)
    app.wsgi_app = views.ApiFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(_xe_compatibility)
    app.register_blueprint(spec.bp)
    console.init_app(app)
    health.init_app(app, gateway, config.health, policy)
    return app


def _xe_compatibility() -> Response | None:
    """``/`` with a ``command`` parameter is an API request: Ozeki's older "XE"
    clients send their commands there. Answered as ``/api`` answers, GET and
    POST alike, before the console (whose sign-in redirect would otherwise
    carry the query, password and all, in its ``Location``)."""
    if request.path != "/" or request.method not in ("GET", "HEAD", "POST"):
        return None
    names = list(request.args)
    if request.method == "POST":
        try:
            names.extend(request.form)
        except RequestEntityTooLarge:
            return views.api()  # which answers it with the API's own code
    if any(name.lower() == "command" for name in names):
        return views.api()
    return None
