"""The Flask application: ``create_app(config)`` builds it, nothing runs at import."""

from __future__ import annotations

from flask import Flask

from gateway import console
from gateway.api import health, spec
from gateway.api.commands import ApiState
from gateway.api.views import bp
from gateway.auth import AddressPolicy, Lockout, Users
from gateway.calls import Gateway
from gateway.config import Config


def create_app(config: Config, gateway: Gateway | None = None) -> Flask:
    """Build the app on ``gateway`` (made from ``config`` and opened when not given).

    The caller owns the gateway's life: ``app.extensions["dtmf_gateway"].close()``.
    """
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
    app.register_blueprint(bp)
    app.register_blueprint(spec.bp)
    console.init_app(app)
    health.init_app(app, gateway, config.health, policy)
    return app
