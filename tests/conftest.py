"""Fixtures: a gateway on simulated lines, a user, and an API helper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.auth import save_user
from gateway.calls import Gateway
from gateway.config import Config, from_mapping
from tests.alsa_tap import AlsaTap
from tests.support import Receiver

USER, PASSWORD = "HTTP_User_1", "qwe123"  # the seed's example credentials


def simulated_line(name: str = "line1", time_scale: float = 0.05, **options: Any) -> dict[str, Any]:
    return {"name": name, "driver": "simulated", "time_scale": time_scale,
            "record_dir": "recordings",
            "call_timing": {"dial_tone_ms": 200, "answer_wait_ms": 200}, **options}


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """A config in ``tmp_path`` with a users file holding the seed's user."""

    def make(lines: list[dict[str, Any]] | None = None, **sections: Any) -> Config:
        # Receivers listen on loopback, which the notification policy closes.
        server = {"notify_allow": ["127.0.0.1/32"], **sections.pop("server", {})}
        data: dict[str, Any] = {"line": lines or [simulated_line()], "server": server,
                                **sections}
        config = from_mapping(data, base_dir=tmp_path)
        if not config.users_path.exists():
            save_user(config.users_path, USER, PASSWORD)
            save_user(config.users_path, "listener", "listen-only", ["ListActiveCalls"])
        return config

    return make


@pytest.fixture
def make_app(make_config: Callable[..., Config]) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(lines: list[dict[str, Any]] | None = None, **sections: Any) -> Flask:
        app = create_app(make_config(lines, **sections))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["dtmf_gateway"].close(5)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def gateway(app: Flask) -> Gateway:
    gw: Gateway = app.extensions["dtmf_gateway"]
    return gw


@pytest.fixture
def tap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaTap:
    """An ALSA ``file`` PCM named "tap" (see tests/alsa_tap.py), kept beside,
    not inside, the gateway's own files (users.toml, recordings)."""
    (tmp_path / "alsa").mkdir()
    t = AlsaTap(tmp_path / "alsa", monkeypatch)
    t.add("tap")
    return t


@pytest.fixture
def mock_pins() -> Iterator[Any]:
    """The process's shared gpiozero MockFactory, reset after the test."""
    from gateway.lines.gpio import pin_factory

    factory = pin_factory("mock")
    yield factory
    factory.reset()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class Answer:
    """A parsed API answer."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.root = ElementTree.fromstring(body)
        self.code = int(self.root.findtext("Code") or 0)
        self.message = self.root.findtext("Message") or ""

    def __repr__(self) -> str:
        return f"Answer({self.code}, {self.message!r})"

    def text(self, tag: str) -> str:
        return self.root.findtext(tag) or ""


def call_api(client: FlaskClient, method: str = "GET", auth: bool = True, **params: str) -> Answer:
    if auth:
        params = {"Username": USER, "Password": PASSWORD, **params}
    if method == "GET":
        response = client.get("/api", query_string=params)
    else:
        response = client.post("/api", data=params)
    assert response.status_code == 200
    assert response.content_type.startswith("application/xml")
    return Answer(response.data)


@pytest.fixture
def api(client: FlaskClient) -> Callable[..., Answer]:
    def call(method: str = "GET", auth: bool = True, **params: str) -> Answer:
        return call_api(client, method, auth, **params)

    return call


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
