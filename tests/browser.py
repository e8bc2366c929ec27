"""A browser's part for the console and the API through the real server: its
cookies, the forms' tokens, and requests from a chosen loopback address."""

from __future__ import annotations

import html
import re
import urllib.parse
from xml.etree import ElementTree

from tests.live import PASSWORD, USER, LiveServer, SourceConnection


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None

    def code(self) -> int:
        """The API's Code, from an XML answer."""
        return int(ElementTree.fromstring(self.body).findtext("Code") or 0)


class Browser:
    """A browser's part for the console: its cookies and the forms' tokens."""

    def __init__(self, server: LiveServer, source: str = "127.0.0.1") -> None:
        self.server = server
        self.source = source
        self.cookies: dict[str, str] = {}

    def send(self, method: str, path: str, form: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        """``path`` goes on the wire as it is (already percent-encoded)."""
        conn = SourceConnection(self.server.port, self.source)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.getheaders(), response.read().decode())
        finally:
            conn.close()
        for name, value in reply.headers:
            if name.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, cookie = pair.partition("=")
                if cookie and "max-age=0" not in value.lower():
                    self.cookies[key] = cookie
                else:
                    self.cookies.pop(key, None)
        return reply

    def sign_in(self, user: str = USER, password: str = PASSWORD,
                next_query: str = "") -> Reply:
        """The form at ``/login?next=...`` filled in and sent, as a browser would."""
        page = self.send("GET", "/login" + (f"?next={next_query}" if next_query else ""))
        assert page.status == 200, page.body
        token = re.search(r'name="login_token" value="([^"]+)"', page.body)
        assert token
        form = {"login_token": token.group(1), "username": user, "password": password}
        shown = re.search(r'name="next" value="([^"]*)"', page.body)
        if shown:
            form["next"] = html.unescape(shown.group(1))
        return self.send("POST", "/login", form)

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.send("GET", "/").body)
        assert found
        return found.group(1)
