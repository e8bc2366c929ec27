"""``/healthz`` and ``/metrics``: no password, but ``[health]`` decides who may look.

``/healthz`` is JSON: version, uptime and every line's driver status, hook,
fault and queue depth; HTTP 503 while a line is faulted. ``/metrics`` is the
gateway's Prometheus registry (text format, or OpenMetrics on request), with the line
states and the process's own figures (memory, file descriptors) added at
scrape time. Either answers 404 when set "off", and 403 to a client that
``server.allow``/``deny`` refuses or, when set "loopback", to any other
machine.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import ProcessCollector
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from gateway import __version__, health
from gateway.auth import AddressPolicy, client_ip
from gateway.calls import Gateway
from gateway.config import HealthConfig

bp = Blueprint("health", __name__)


@dataclass
class HealthState:
    gateway: Gateway
    settings: HealthConfig
    policy: AddressPolicy
    started: float


class LineCollector(Collector):
    """Line states, read when Prometheus scrapes (nothing to keep in step)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dtmf_gateway_line_up",
                               "1 while the line has no hardware fault", labels=["line", "driver"])
        off_hook = GaugeMetricFamily("dtmf_gateway_line_off_hook",
                                     "1 while the line is seized", labels=["line"])
        in_call = GaugeMetricFamily("dtmf_gateway_line_in_call",
                                    "1 while the line has a call", labels=["line"])
        for snap in self.gateway.snapshots():
            up.add_metric([snap.name, snap.driver], 0.0 if snap.fault else 1.0)
            off_hook.add_metric([snap.name], 1.0 if snap.hook == "off-hook" else 0.0)
            in_call.add_metric([snap.name], 0.0 if snap.call_id is None else 1.0)
        build = InfoMetricFamily("dtmf_gateway_build", "The running version")
        build.add_metric([], {"version": __version__})
        yield from (up, off_hook, in_call, build)


#: Registries already given the collectors (two apps may share one gateway).
_equipped: weakref.WeakSet[object] = weakref.WeakSet()


def init_app(app: Flask, gateway: Gateway, settings: HealthConfig, policy: AddressPolicy) -> None:
    app.extensions["dtmf_health"] = HealthState(gateway, settings, policy, time.monotonic())
    registry = gateway.metrics.registry
    if registry not in _equipped:
        registry.register(LineCollector(gateway))
        ProcessCollector(registry=registry)
        _equipped.add(registry)
    app.register_blueprint(bp)


def _state() -> HealthState:
    state: HealthState = current_app.extensions["dtmf_health"]
    return state


def _admit(access: str) -> None:
    """End the request unless ``access`` ("on", "loopback", "off") lets this client in."""
    if access == "off":
        abort(404)
    address = request.remote_addr or ""
    if access == "loopback" and not _is_loopback(address):
        abort(403)
    if not _state().policy.permits(address):
        abort(403)


def _is_loopback(address: str) -> bool:
    ip = client_ip(address)
    return ip is not None and ip.is_loopback


@bp.route("/healthz", methods=["GET"])
def healthz() -> Response:
    state = _state()
    _admit(state.settings.healthz)
    healthy, body = health.report(state.gateway, state.started)
    return Response(
        json.dumps(body, indent=1, default=str) + "\n",
        status=200 if healthy else 503,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    state = _state()
    _admit(state.settings.metrics)
    # The classic text format, or OpenMetrics when the scraper asks for it.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(state.gateway.metrics.registry), content_type=content_type,
                    headers={"Cache-Control": "no-store"})
