"""Ozeki's published IVR example (the OzML-HTTP-IVR repository's
``incomingcall.php``, ``dtmf_received.php`` and ``members_area.php``) run
on an incoming call, with the far party's keys coming down the simulated
line as audio and heard by the line's own detectors.

The web application answers as the PHP pages do, byte for byte where it
matters: lower-case ``enteredUrl``/``digits``/``timeout``/``repeat`` on the
PIN prompt, a blank line before ``<?xml`` from ``dtmf_received.php``, the
members' menu with ``Timeout``/``Repeat`` in Ozeki's capitals and a
``BlindTransfer`` to 2000. Only the database is a table, and the GoTo goes
to the members' page (the published page sends it back to itself, a slip
that would ask for the PIN for ever).

The far party answers what it hears: it presses its keys once the line has
begun to say the prompt that asks for them (the simulated line logs each
Speak as it starts), so a loaded machine only slows the call down.
"""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.lines.simulated import SimulatedLine
from tests.conftest import simulated_line, wait_until

#: The example's ``account`` table: pincode, id, balance.
ACCOUNTS = {"4321": ("7", "Your balance is 42 dollars and 17 cents.")}


class IvrApp:
    """The three PHP pages on loopback; ``posts`` holds what each was sent."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str]]] = []
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                path, _, query = self.path.partition("?")
                form |= dict(urllib.parse.parse_qsl(query))  # PHP's $_REQUEST
                app.posts.append((path, form))
                page = {"/incomingcall.php": app.incoming_call,
                        "/dtmf_received.php": app.dtmf_received,
                        "/members_area.php": app.members_area}.get(path)
                if page is None:
                    self.send_error(404)
                    return
                data = page(form).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=UTF-8")  # PHP's default
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def incoming_call(self, form: dict[str, str]) -> str:
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<Response>
   <UserInput enteredUrl="{self.url}/dtmf_received.php" digits="4" timeout="10" repeat="true">
    \t<InitialCommands>
       \t\t<Speak>Please enter your 4 digits PIN code.</Speak>
\t\t</InitialCommands>
\t</UserInput>
</Response>"""

    def dtmf_received(self, form: dict[str, str]) -> str:
        account = ACCOUNTS.get(form.get("DtmfDigits", ""))
        if account is not None:
            response = f"<GoTo>{self.url}/members_area.php?accountid={account[0]}</GoTo>"
        else:
            response = (f"<UserInput enteredUrl='{self.url}/dtmf_received.php' digits='4' "
                        "timeout='10' repeat='true'><InitialCommands><Speak>"
                        "The PIN code you entered is invalid. Please give it again."
                        "Please enter your 4 digits PIN code again."
                        "</Speak></InitialCommands></UserInput>")
        return f"""
<?xml version="1.0" encoding="UTF-8"?>
<Response>
\t{response}
</Response>"""

    def members_area(self, form: dict[str, str]) -> str:
        balance = next(b for i, b in ACCOUNTS.values() if i == form["accountid"])
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<Response>
\t<UserInput Timeout="5" Repeat="true">
\t\t<InitialCommands>
\t\t\t<Speak>
\t\t\t\tThe pin code you entered is verified.
\t\t\t\tAccount balance, press 1.
\t\t\t\tTo call with our customer representative, press 2.
\t\t\t</Speak>
\t\t</InitialCommands>
\t\t<Inputs>
\t\t\t<Input Key="1">
\t\t\t\t<Speak>
\t\t\t\t\t{balance}
\t\t\t\t</Speak>
\t\t\t</Input>
\t\t\t<Input Key="2">
\t\t\t\t<BlindTransfer>2000</BlindTransfer>
\t\t\t</Input>
\t\t</Inputs>
\t</UserInput>
</Response>"""

    def pages(self) -> list[str]:
        return [path for path, _ in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ivr() -> Iterator[IvrApp]:
    app = IvrApp()
    yield app
    app.close()


class Caller:
    """A gateway whose one simulated line is rung by a caller who listens."""

    def __init__(self, app: Flask) -> None:
        self.gateway: Gateway = app.extensions["dtmf_gateway"]
        driver = self.gateway.lines["line1"].driver
        assert isinstance(driver, SimulatedLine) and driver.exchange is not None
        self.driver = driver
        self.exchange = driver.exchange
        self._spoken = 0

    def said(self) -> list[str]:
        return [what for _, what in self.driver.events if what.startswith("speak ")]

    def presses_on_hearing(self, words: str, keys: str) -> None:
        """Once the line begins a prompt with ``words`` in it (after the
        prompts already answered), press ``keys`` over it."""
        def heard() -> bool:
            new = self.said()[self._spoken:]
            for n, what in enumerate(new):
                if words in what:
                    self._spoken += n + 1
                    return True
            return False

        wait_until(heard)
        self.exchange.press(keys)

    def ended(self) -> Any:
        wait_until(lambda: bool(self.gateway.recent))
        (call,) = self.gateway.recent
        return call


@pytest.fixture
def caller(make_app: Callable[..., Flask], ivr: IvrApp) -> Caller:
    line = simulated_line(time_scale=0.05, exchange={"numbers": {
        "5550100": {"answer": "silence"}, "2000": {"rings": 1}}})
    return Caller(make_app([line], server={"incoming_url": f"{ivr.url}/incomingcall.php"}))


def test_a_wrong_pin_is_asked_again_and_the_right_one_hears_the_balance(
        caller: Caller, ivr: IvrApp) -> None:
    caller.driver.ring("5550100")
    caller.presses_on_hearing("Please enter your 4 digits PIN code.", "1234")
    caller.presses_on_hearing("is invalid", "4321")
    caller.presses_on_hearing("Account balance, press 1.", "1")
    call = caller.ended()
    assert call.keys.all == list("123443211")
    assert ivr.pages() == ["/incomingcall.php", "/dtmf_received.php", "/dtmf_received.php",
                           "/members_area.php"]
    entered = [form for path, form in ivr.posts if path == "/dtmf_received.php"]
    assert [f["DtmfDigits"] for f in entered] == ["1234", "4321"]
    assert {f["NotificationName"] for f in entered} == {"DtmfEntered"}
    assert {f["CallId"] for f in entered} == {call.call_id}
    assert ivr.posts[-1][1]["accountid"] == "7"
    assert "Your balance is 42 dollars and 17 cents." in caller.said()[-1]
    assert caller.driver.hook.value == "on-hook"


def test_two_hands_the_caller_to_the_representative(caller: Caller, ivr: IvrApp) -> None:
    caller.driver.ring("5550100")
    caller.presses_on_hearing("Please enter your 4 digits PIN code.", "4321")
    caller.presses_on_hearing("Account balance, press 1.", "2")
    call = caller.ended()
    assert call.keys.all == list("43212")
    # A blind transfer on an analog line: a hook flash, recall dial tone,
    # the number, and on hook (the exchange connects the two). The line is
    # a US one: its flash is the 600 ms US exchanges time a recall by.
    far = [e.describe() for e in caller.exchange.timeline]
    flash = far.index("flash 600 ms")
    assert far[flash + 1:flash + 4] == ["dial-tone", "dial-tone-end", "number 2000"], far
    events = [what for _, what in caller.driver.events]
    assert events[-1] == "on-hook" and "flash 600 ms" in events
    # The number goes out once the recall dial tone is heard.
    assert (events.index("flash 600 ms") < events.index("far end: dial-tone")
            < events.index("emit all 4 symbols 4 digits 100/100 ms"))
    assert call.end_reason == "transferred to 2000"
    assert not any("balance is" in what for what in caller.said())
