"""Hostile input through the API: XML attacks in OzML, oversized and malformed
requests, made-up command names. Each is answered with a documented code in
well-formed XML, and none grows the gateway's memory.

(The basic cases are in test_api.py and test_ozml.py; these go further.)
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import generate_latest

from gateway.calls import Gateway
from tests.conftest import PASSWORD, USER, Answer, call_api
from tests.live import LiveServer

Api = Callable[..., Answer]

# -- OzML: the XML attacks, through the Call command's ResponseOzML ---------------

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE Response ['
    '<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
    '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">'
    ']><Response><Speak>&f;</Speak></Response>'
)
QUADRATIC_BLOWUP = (
    '<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY x "' + "x" * 10000 + '">]>'
    "<Response><Speak>" + "&x;" * 1000 + "</Speak></Response>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    "<Response><Speak>&x;</Speak></Response>"
)
EXTERNAL_DTD = (
    '<?xml version="1.0"?><!DOCTYPE Response SYSTEM "http://127.0.0.1:9/evil.dtd">'
    "<Response><Hangup/></Response>"
)
PARAMETER_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p">%p;]>'
    "<Response/>"
)
XINCLUDE = (
    '<Response xmlns:xi="http://www.w3.org/2001/XInclude">'
    '<Speak><xi:include href="file:///etc/passwd" parse="text"/></Speak></Response>'
)
# As deep as fits under the 256 KiB document limit: expat and ElementTree
# build it without recursion, so it is just an unknown command.
DEEP_NESTING = "<Response>" + "<a>" * 35_000 + "</a>" * 35_000 + "</Response>"


@pytest.mark.parametrize(
    ("document", "code", "detail"),
    [
        (BILLION_LAUGHS, 300, "unsafe XML refused"),
        (QUADRATIC_BLOWUP, 300, "unsafe XML refused"),
        (EXTERNAL_ENTITY, 300, "unsafe XML refused"),
        (EXTERNAL_DTD, 300, "unsafe XML refused"),
        (PARAMETER_ENTITY, 300, "unsafe XML refused"),
        # This parser does no XInclude: the include is an empty Speak, nothing read.
        (XINCLUDE, 200, ""),
        (DEEP_NESTING, 301, "'a'"),
        ("<Response><Speak>" + "a" * 300_000 + "</Speak></Response>", 300, "larger than"),
        ("<Response>" + "<Hangup/>" * 1000 + "</Response>", 300, "more than 256 commands"),
        ("<Response><SendDTMF Keys='" + "1" * 129 + "'/></Response>", 302, "maximum 128"),
        ("\ufeff<Response><Hangup/></Response>", 200, ""),
        ("<Response>\x00</Response>", 300, ""),
    ],
    ids=["billion-laughs", "quadratic-blowup", "external-entity", "external-dtd",
         "parameter-entity", "xinclude", "deep-nesting", "huge-text", "many-commands",
         "long-keys", "bom", "nul"],
)
def test_ozml_attacks_are_refused_before_anything_is_dialled(
    make_app: Callable[..., Flask], document: str, code: int, detail: str
) -> None:
    # A limit large enough for the documents: the OzML checks are what is tested.
    app = make_app(server={"max_request_bytes": 4 * 1024 * 1024})
    client = app.test_client()
    answer = call_api(client, "POST", command="Call", Dialed="1", ResponseOzML=document)
    assert answer.code == code, answer
    assert detail in answer.message
    gateway: Gateway = app.extensions["dtmf_gateway"]
    if code != 200:
        # Refused before anything was dialled: no call, the line on hook.
        assert gateway.active_calls() == []
        assert gateway.lines["line1"].driver.hook.value == "on-hook"
    # /etc/passwd never reaches the answer, whatever happened.
    assert b"root:" not in answer.body


# -- oversized requests -----------------------------------------------------------


@pytest.fixture
def small(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app(server={"max_request_bytes": 2048}).test_client()


def test_oversized_query_string_through_get(small: FlaskClient) -> None:
    # A GET has no body: the limit is waitress's header limit in the real
    # server (see test_limits_hold_in_the_real_server); here the keys' own
    # 128-key limit answers it.
    answer = call_api(small, command="SendDTMF", Keys="1" * 5000, Party="all")
    assert answer.code == 302 and "more than the maximum 128" in answer.message


def test_oversized_multipart_body_is_refused(small: FlaskClient) -> None:
    response = small.post("/api", data={"command": "ListActiveCalls", "Username": USER,
                                        "Password": PASSWORD, "f": "x" * 10_000},
                          content_type="multipart/form-data")
    assert Answer(response.data).code == 300


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("limits"),
                        '[server]\nmax_request_bytes = 4096\n[[line]]\nname = "line1"\n'
                        'driver = "simulated"\nrecord_dir = "rec"\ntime_scale = 0.0\n')
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.output


def raw_request(port: int, data: bytes) -> bytes:
    """Send ``data`` as is and read the answer until the server closes.

    A server that refuses early closes with part of ``data`` unread, which
    the kernel may report as a reset after the answer: the answer counts.
    """
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks)


def test_limits_hold_in_the_real_server(limited: LiveServer) -> None:
    auth = f"Username={USER}&Password={PASSWORD}".encode()
    # A body over server.max_request_bytes is refused by waitress on its
    # Content-Length, before a byte of it is read or Flask sees the request.
    answer = raw_request(limited.port, b"POST /api HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 10000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    body = b"command=ListActiveCalls&" + auth + b"&pad=" + b"x" * 3000
    answer = raw_request(limited.port, b"POST /api HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                         b"Connection: close\r\n\r\n" + body)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"<Code>200</Code>" in answer, answer[:300]
    # Headers over the header limit (at least 8 KiB): refused the same way.
    huge = b"GET /api?command=ListActiveCalls&" + auth + b"&pad=" + b"x" * 20_000
    answer = raw_request(limited.port, huge + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.split(b" ", 2)[1] == b"431", answer[:200]
    # A body that claims more than it sends does not hold a thread forever:
    # the server still answers everyone else.
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as slow:
        slow.sendall(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\ncommand=")
        assert limited.api({"command": "ListActiveCalls"}).code == 200
    # Chunked bodies count against the same limit.
    chunk = b"x" * 3000
    answer = raw_request(limited.port, b"POST /api HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
                         + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert limited.api({"command": "ListActiveCalls"}).code == 200


# -- malformed parameters ------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "codes"),
    [
        # The same parameter twice with one value is harmless; with two it is ambiguous.
        ("command=ListActiveCalls&command=ListActiveCalls", {200}),
        ("command=SendDTMF&Keys=1&keys=2&Party=all", {302}),
        ("command=SendDTMF&Keys=1&Party=all&Party=caller", {302}),
        # Credentials given twice with different values are not guessed at.
        (f"command=ListActiveCalls&Username={USER}&Username=other", {302, 304, 305}),
        # Bytes that are not UTF-8, anywhere.
        ("command=ListActiveCalls&%FF%FE=1", {200}),
        ("command=SendDTMF&Keys=1&Party=%C0%AF", {302}),
        ("command=Call&Dialed=%ED%A0%80", {302}),
        # Control characters and XML's forbidden characters, echoed in messages.
        ("command=HangUp&CallId=%01%02%03%0B%0C", {601}),
        ("command=HangUp&CallId=%EF%BF%BE%EF%BF%BF", {601}),
        ("command=SendDTMF&Keys=1%0D%0A2&Party=all", {302}),
        ("command=List%00ActiveCalls", {301}),
        ("command=%0D%0AX-Injected:%201", {301}),
        # No value, no name, no '='.
        ("command=SendDTMF&Keys=&Party=all", {302}),
        ("command=SendDTMF&=1&&&Keys", {302}),
        ("command", {301}),
        # Numbers that are not what they seem.
        ("command=SendDTMF&Keys=1&Party=all&Duration=1e3", {302}),
        ("command=SendDTMF&Keys=1&Party=all&Duration=%EF%BC%94%EF%BC%90", {302, 601}),
        ("command=SendDTMF&Keys=1&Party=all&Gap=99999999999999999999999", {302}),
        ("command=Call&Dialed=1&RingTime=nan", {302}),
        ("command=Call&Dialed=1&RingTime=inf", {302}),
        ("command=Call&Dialed=1&Url=file:///etc/passwd", {302}),
        ("command=Call&Dialed=1&Url=http://%5B::1", {302}),
    ],
)
def test_malformed_parameters_get_a_proper_code(client: FlaskClient, query: str,
                                                codes: set[int]) -> None:
    auth = "" if "Username=" in query else f"&Username={USER}&Password={PASSWORD}"
    response = client.get(f"/api?{query}{auth}")
    assert response.status_code == 200
    answer = Answer(response.data)  # well-formed XML, or this raises
    assert answer.code in codes, (query, answer)
    assert b"Traceback" not in response.data
    assert "X-Injected" not in response.headers


def test_form_in_an_unexpected_encoding(client: FlaskClient) -> None:
    body = f"command=SendDTMF&Keys=1&Party=%FF&Username={USER}&Password={PASSWORD}"
    for content_type in ("application/x-www-form-urlencoded; charset=latin-1",
                         "application/x-www-form-urlencoded; charset=nonsense",
                         "text/plain", "application/json"):
        response = client.post("/api", data=body.encode(), content_type=content_type)
        assert Answer(response.data).code in (302, 304, 601), content_type


def test_basic_auth_garbage_is_304(client: FlaskClient) -> None:
    for header in ("Basic", "Basic !!!", "Basic " + "A" * 10_000, "Basic /w==", "Bearer x",
                   "Basic " + __import__("base64").b64encode(b"\xff\xfe:\x00").decode()):
        response = client.get("/api?command=ListActiveCalls",
                              headers={"Authorization": header})
        assert Answer(response.data).code in (304, 305), header


# -- made-up command names ------------------------------------------------------------


def test_made_up_commands_do_not_grow_the_metrics(client: FlaskClient, gateway: Gateway) -> None:
    """Every unknown command name used to become a metrics label of its own:
    a client without a password could grow the gateway's memory (and /metrics)
    without bound."""
    client.get("/api?command=ListActiveCalls")
    before = len(generate_latest(gateway.metrics.registry))
    for i in range(300):
        client.get(f"/api?command=made-up-{i}")
        client.get(f"/api?command=made-up-{i}&Username={USER}&Password={PASSWORD}")
    after = len(generate_latest(gateway.metrics.registry))
    assert after - before < 2000, after - before
    # The names the API knows are still labels of their own.
    text = generate_latest(gateway.metrics.registry).decode()
    assert 'command="ListActiveCalls"' in text and 'command="other"' in text


def test_answers_never_echo_markup(api: Api) -> None:
    answer = api(command="HangUp", CallId="</Message><Code>200</Code><x>")
    assert answer.code == 601
    assert answer.message == "Call not found with ID '</Message><Code>200</Code><x>'"
    assert len(answer.root.findall("Code")) == 1


def test_config_paths_stay_out_of_answers(api: Api, tmp_path: Path) -> None:
    answer = api(command="Call", Dialed="1", ResponseOzML="<Response><Play/></Response>")
    assert str(tmp_path) not in answer.message
