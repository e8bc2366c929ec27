"""The web console in headless Chromium against the real server process.

Debian's ``chromium`` driven by Playwright (never a downloaded browser). A
screenshot of every page, at a desktop and a phone width, is saved to
``$DTMF_CONSOLE_SCREENSHOTS`` (default: ``dtmf-gateway-console-screenshots``
in the system temp directory).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service_process import GatewayProcess
from tests.support import MULTIMON, decode_wav

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright

    # Generous: a loaded 2-core CI machine, and live parts refresh once a second.
    expect.set_options(timeout=15_000)
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    (CHROMIUM is None or sync_playwright is None) and not os.environ.get("CI"),
    reason="needs Debian's chromium and Playwright (apt-get install chromium; "
           "pip install -e '.[test]')",
)

USER, PASSWORD = "HTTP_User_1", "qwe123"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # CI containers give /dev/shm 64 MB, too little for a renderer.
                 "--disable-dev-shm-usage"]
VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
              "is_mobile": True, "has_touch": True},
}
CONFIG = """\
[[line]]
name = "line1"
driver = "simulated"
record_dir = "rec"
time_scale = 0.2
call_timing = { dial_tone_ms = 100, answer_wait_ms = 100 }
"""


def screenshots() -> Path:
    path = Path(os.environ.get("DTMF_CONSOLE_SCREENSHOTS")
                or Path(tempfile.gettempdir()) / "dtmf-gateway-console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert sync_playwright is not None and CHROMIUM is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GatewayProcess]:
    s = GatewayProcess(tmp_path, CONFIG)
    yield s
    s.stop()


def api(server: GatewayProcess, **params: str) -> str:
    query = urllib.parse.urlencode({"Username": USER, "Password": PASSWORD, **params})
    with urllib.request.urlopen(f"{server.base}/api?{query}", timeout=30) as answer:
        body: bytes = answer.read()
    return body.decode()


class Console:
    """One browser tab on the console, failing on any script or policy error."""

    def __init__(self, page: Page, base: str, width: str) -> None:
        self.page = page
        self.base = base
        self.width = width
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.set_default_timeout(15000)

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, name: str) -> None:
        """Save the page, and check it fits the screen's width."""
        self.page.screenshot(path=screenshots() / f"{self.width}-{name}.png", full_page=True)
        overflow = self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} is {overflow} px wider than the {self.width} screen"


@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_sign_in_place_a_call_press_keys_and_hang_up(browser: Browser, server: GatewayProcess,
                                                     width: str) -> None:
    context = browser.new_context(**VIEWPORTS[width])
    tab = Console(context.new_page(), server.base, width)
    page = tab.page

    # Signed out, every page leads to the sign-in form.
    tab.go("/keypad")
    expect(page).to_have_url(re.compile(r"/login\?next=/keypad$"))
    tab.shot("login")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server.base + "/keypad")
    cookie = next(c for c in context.cookies() if c["name"] == "dtmf_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # Place a call from the form: the console lands on the call's keypad.
    page.get_by_role("link", name="Calls").click()
    expect(page.get_by_text("No call is up.")).to_be_visible()
    tab.shot("calls-empty")
    page.get_by_label("Dialed").fill("5551234")
    page.get_by_role("button", name="Place a call").click()
    expect(page).to_have_url(re.compile(r"/keypad\?call=\w+$"))
    call_id = page.url.rsplit("=", 1)[1]
    expect(page.get_by_role("status").first).to_have_text(f"Call {call_id} is up on line1.")
    expect(page.locator("select[name=call]")).to_have_value(call_id)

    # Keys pressed faster than the line sends them go out in order.
    pad = page.get_by_role("group", name="Keypad")
    for key in "159#":
        pad.get_by_role("button", name=key, exact=True).click()
    expect(page.locator("#sent")).to_have_text("159#")
    expect(page.locator("#keypad-result")).to_have_text("Sent #.")
    page.get_by_label("Keys").fill("*0")
    page.get_by_label("Keys").press("Enter")
    expect(page.locator("#sent")).to_have_text("159#*0")
    # A refusal is shown as the API's code and message.
    page.get_by_label("Keys").fill("12x")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#keypad-result")).to_have_text(
        "Not sent. 302: Missing or invalid parameter 'Keys' for command 'SendDTMF': "
        "invalid key 'x' at position 3")
    expect(page.locator(f'tr[data-call="{call_id}"]')).to_contain_text("InCall")
    tab.shot("keypad")

    page.get_by_role("link", name="Lines").click()
    row = page.locator('tr[data-line="line1"]')
    expect(row).to_contain_text("off-hook")
    expect(row).to_contain_text(call_id)
    tab.shot("lines-in-call")

    page.get_by_role("link", name="Log").click()
    newest = page.locator("tbody tr").first
    expect(newest).to_contain_text("SendDTMF")
    expect(newest).to_contain_text("302")
    # Keys pressed while others were on the line went out as one request: 2 to 5 rows.
    sent_rows = page.locator("tbody tr", has_text=re.compile(r"SendDTMF.*200", re.S))
    expect(sent_rows.nth(1)).to_contain_text("console")
    assert sent_rows.count() <= 5
    tab.shot("log")

    # Hang up from the keypad.
    page.get_by_role("link", name="Keypad").click()
    page.get_by_role("button", name="Hang up this call").click()
    expect(page.get_by_role("status").first).to_have_text(f"Call {call_id} hung up.")
    if MULTIMON:
        assert decode_wav(server.dir / "rec" / f"{call_id}.wav") == "159#*0"

    # Live: what an API client does shows up without reloading the page.
    page.get_by_role("link", name="Calls").click()
    expect(page.get_by_text("No call is up.")).to_be_visible()
    other = re.search(r"<CallId>(\w+)</CallId>", api(server, command="Call", Dialed="777"))
    assert other
    other_row = page.locator(f'tr[data-call="{other.group(1)}"]')
    expect(other_row).to_contain_text("777")
    tab.shot("calls")
    page.get_by_role("link", name="Log").click()
    api(server, command="SendDTMF", CallId=other.group(1), Party="all", Keys="42")
    expect(page.locator("tbody tr").first).to_contain_text(
        re.compile(rf"api 127\.0\.0\.1\s+SendDTMF\s+line1\s+{other.group(1)}\s+200"))
    # ... and the call table's own hang-up button ends it.
    page.get_by_role("link", name="Calls").click()
    other_row.get_by_role("button", name="Hang up").click()
    expect(page.get_by_text("No call is up.")).to_be_visible()
    if MULTIMON:
        assert decode_wav(server.dir / "rec" / f"{other.group(1)}.wav") == "42"

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(server.base + "/login")
    tab.go("/")
    expect(page).to_have_url(re.compile(r"/login"))
    # A poll in flight while signing out is answered 401 (and handled): not an error.
    assert [e for e in tab.errors if "status of 401" not in e] == []
    context.close()


def test_without_javascript_every_action_is_a_plain_form(browser: Browser,
                                                           server: GatewayProcess) -> None:
    context = browser.new_context(java_script_enabled=False, **VIEWPORTS["desktop"])
    tab = Console(context.new_page(), server.base, "nojs")
    page = tab.page
    tab.go("/")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Dialed").fill("42")
    page.get_by_role("button", name="Place a call").click()
    expect(page).to_have_url(re.compile(r"/keypad\?call=\w+$"))
    call_id = page.url.rsplit("=", 1)[1]
    page.get_by_label("Party").select_option("caller")
    page.get_by_role("group", name="Keypad").get_by_role("button", name="7").click()
    expect(page.get_by_role("status").first).to_have_text("Sent 7.")
    # The page came back with the same call and party chosen.
    expect(page.get_by_label("Party")).to_have_value("caller")
    page.get_by_label("Keys").fill("*8")
    page.get_by_label("Keys").press("Enter")  # the default button sends the typed keys
    expect(page.get_by_role("status").first).to_have_text("Sent *8.")
    page.get_by_role("button", name="Hang up this call").click()
    expect(page.get_by_role("status").first).to_have_text(f"Call {call_id} hung up.")
    if MULTIMON:
        assert decode_wav(server.dir / "rec" / f"{call_id}.wav") == "7*8"
    assert tab.errors == []
    context.close()
