"""``GET /api/openapi.yaml``: the OpenAPI description of ``/api``, as shipped."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, abort, current_app, request

bp = Blueprint("openapi", __name__)


@bp.route("/api/openapi.yaml", methods=["GET"])
def openapi() -> Response:
    # The same address lists as /api: a denied client learns nothing here either.
    if not current_app.extensions["dtmf_api"].policy.permits(request.remote_addr or ""):
        abort(403)
    text = resources.files("gateway.api").joinpath("openapi.yaml").read_bytes()
    return Response(text, status=200, content_type="application/yaml; charset=utf-8")
