"""The web console at ``/``: lines, live calls, a keypad and the command log.

Server-rendered pages with a little vanilla JavaScript (live refresh and a
keypad that sends without reloading); everything it serves is in this
package, so it works on a LAN with no internet. It signs in with the API's
users, lock-out and address lists, and its actions run the API's own
commands (:func:`gateway.api.commands.execute`), so they answer with the same
codes.
"""

from __future__ import annotations

from flask import Flask

from gateway.console.sessions import Sessions
from gateway.console.views import bp


def init_app(app: Flask) -> None:
    """Serve the console on ``app`` (which must already carry the API state)."""
    app.extensions["dtmf_console"] = Sessions()
    app.register_blueprint(bp)
