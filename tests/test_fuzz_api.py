"""schemathesis against the real server process, driven by the OpenAPI
description the gateway ships and serves (``GET /api/openapi.yaml``).

Every answer to GET or POST must be HTTP 200 with well-formed XML whose
Code is a documented one, never 800 (internal error); other methods get
HTTP 405 with ``Allow``; the server must log no traceback. The default
run is short; the full one is marked ``slow``:

    python -m pytest -m slow tests/test_fuzz_api.py
"""

from __future__ import annotations

import base64
import collections
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from gateway.codes import Code
from tests.live import PASSWORD, USER, LiveServer
from tests.support import Receiver

METHODS = {"/api": {"GET", "HEAD", "POST"}, "/api/openapi.yaml": {"GET", "HEAD"}}
URL_PARAMETERS = {"url", "errorurl", "finishedurl"}
CONFIG = """
[server]
threads = 32
notify_allow = ["127.0.0.1/32"]   # the loopback receiver
[auth]
# Failures expire at once: random credentials must not lock the fuzzer out.
lockout_seconds = 0.0
[[line]]
name = "a"
driver = "simulated"
time_scale = 0.0
record_dir = "rec"
queue_size = 8
call_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }
[[line]]
name = "b"
driver = "simulated"
time_scale = 0.0
record_dir = "rec"
queue_size = 8
call_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz"), CONFIG)
    yield server
    assert server.stop() == 0
    output = server.output
    codes = collections.Counter(re.findall(r" code=(\d+) ", output))
    # Shown with -s: the figures RELIABILITY.md quotes.
    print(f"fuzz: {sum(codes.values())} requests answered; codes {sorted(codes.items())}")
    assert "Traceback" not in output, output[-5000:]
    assert "code=800" not in output, [ln for ln in output.splitlines() if "code=800" in ln]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.answers["/ozml"] = "<Response><SendDTMF Keys='1' Party='all'/></Response>"
    yield r
    r.close()


SPEC = Path(__file__).parent.parent / "gateway" / "api" / "openapi.yaml"
# The shipped file itself (the served copy is checked to be the same bytes);
# each case is sent to the live server's address.
schema = schemathesis.openapi.from_path(SPEC)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


def keep_on_loopback(values: Any, receiver: Receiver) -> None:
    """Notification URLs the fuzzer makes up would be posted to: point every
    one the gateway would accept at the loopback receiver instead."""
    if not isinstance(values, dict):
        return
    for name, value in list(values.items()):
        if isinstance(name, str) and name.lower() in URL_PARAMETERS and isinstance(value, str):
            parts = urllib.parse.urlsplit(value.strip())
            if parts.scheme.lower() in ("http", "https") or "://" in value:
                values[name] = f"{receiver.url}/ozml"


def header(response: Any, name: str) -> str:
    """A header of a schemathesis Response (lower-case names, lists of values)."""
    values = response.headers.get(name.lower()) or [""]
    return str(values[0])


def well_formed(response: Any, case: Any) -> None:
    # The request actually sent: some generated cases try another method.
    method = str(response.request.method).upper()
    if method not in METHODS[case.path]:
        # Ozeki's API is GET and POST; HTTP's answer to the rest is 405 (200
        # for OPTIONS), naming the methods there are.
        assert response.status_code == (200 if method == "OPTIONS" else 405)
        assert header(response, "Allow")
        return
    assert response.status_code == 200, (method, case.path, response.status_code)
    if method == "HEAD":
        return
    if case.path == "/api/openapi.yaml":
        assert response.content.startswith(b"openapi: 3.")
        return
    assert header(response, "Content-Type").startswith("application/xml")
    root = ElementTree.fromstring(response.content)
    assert root.tag == "Response"
    code = int(root.findtext("Code") or 0)
    assert code in set(Code) - {Code.INTERNAL_ERROR}, response.text
    assert root.findtext("Message")


def check_exchange(
    case: Any, live: LiveServer, receiver: Receiver, *, authenticated: bool
) -> None:
    keep_on_loopback(case.query, receiver)
    keep_on_loopback(case.body, receiver)
    headers: dict[str, str] = {}
    if authenticated:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        # Parameters win over the header: drop made-up ones so commands run.
        for values in (case.query, case.body):
            if isinstance(values, dict):
                for name in [n for n in values if str(n).lower() in ("username", "password")]:
                    del values[name]
    response = case.call(base_url=live.base, headers=headers, timeout=60)
    well_formed(response, case)
    if case.path == "/api":
        case.validate_response(response, checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.status_code_conformance,
            schemathesis.checks.content_type_conformance,
        ])


SHORT = settings(max_examples=40, deadline=None,
                 suppress_health_check=list(HealthCheck))
FULL = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@SHORT
def test_fuzz_with_credentials(case: Any, live: LiveServer, receiver: Receiver) -> None:
    check_exchange(case, live, receiver, authenticated=True)


@schema.parametrize()
@SHORT
def test_fuzz_as_anyone(case: Any, live: LiveServer, receiver: Receiver) -> None:
    check_exchange(case, live, receiver, authenticated=False)


@pytest.mark.slow
@schema.parametrize()
@FULL
def test_fuzz_with_credentials_full(case: Any, live: LiveServer, receiver: Receiver) -> None:
    check_exchange(case, live, receiver, authenticated=True)


@pytest.mark.slow
@schema.parametrize()
@FULL
def test_fuzz_as_anyone_full(case: Any, live: LiveServer, receiver: Receiver) -> None:
    check_exchange(case, live, receiver, authenticated=False)


def test_the_description_is_shipped_and_served(live: LiveServer) -> None:
    shipped = SPEC.read_bytes()
    served = requests.get(f"{live.base}/api/openapi.yaml", timeout=30)
    assert served.status_code == 200 and served.content == shipped
    assert served.headers["Content-Type"].startswith("application/yaml")
    # It is a valid OpenAPI 3 document (schemathesis validates what it loads)...
    loaded = schemathesis.openapi.from_url(f"{live.base}/api/openapi.yaml")
    assert loaded.raw_schema["paths"].keys() == {"/api", "/api/openapi.yaml"}
    # ...and describes every command the API runs.
    from gateway.api.commands import COMMANDS

    described = loaded.raw_schema["components"]["schemas"]["Command"]["enum"]
    assert sorted(described) == sorted(name for name, _ in COMMANDS.values())
