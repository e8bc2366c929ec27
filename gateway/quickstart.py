"""First run from a checkout: a config with one simulated line, a user with a
fresh password, a ready-to-paste curl command, then the server.

Everything goes in ``var/`` beside the checkout (ignored by git); running it
again keeps the config and makes a new password.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from gateway.auth import save_user
from gateway.cli import main as cli_main
from gateway.config import load

CONFIG = """\
# Made by `deploy/dev.sh run`: one simulated line recording to var/recordings.
[server]
host = "127.0.0.1"
port = 9509

[[line]]
name = "line1"
driver = "simulated"
record_dir = "recordings"
"""

USER = "HTTP_User_1"


def main(argv: list[str]) -> int:
    var = Path("var")
    var.mkdir(exist_ok=True)
    config_path = var / "gateway.toml"
    if not config_path.exists():
        config_path.write_text(CONFIG)
    config = load(config_path)
    password = secrets.token_urlsafe(12)
    save_user(config.users_path, USER, password)
    base = f"http://{config.server.host}:{config.server.port}/api"
    auth = f"Username={USER}&Password={password}"
    print(f"""
User {USER} has the password {password}. In another terminal, place a call and
send the seed's keys into it:

  ID=$(curl -s '{base}?command=Call&Dialed=5551234&{auth}' \\
       | sed -n 's:.*<CallId>\\(.*\\)</CallId>.*:\\1:p')
  curl -s "{base}?command=SendDTMF&CallId=$ID&Party=caller&Keys=01234&{auth}"

The call's audio is recorded to {config.lines[0].options.record_dir}/<CallId>.wav.
Stop the server with Ctrl-C.
""", flush=True)
    return cli_main(["serve", "--config", str(config_path), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
