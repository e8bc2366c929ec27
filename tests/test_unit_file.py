"""systemd/dtmf-gateway.service: systemd's own checks, and agreement with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway import server

REPO = Path(__file__).parent.parent
UNIT = REPO / "systemd" / "dtmf-gateway.service"
INSTALL = REPO / "deploy" / "install.sh"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives() -> list[tuple[str, str, str]]:
    """(section, key, value) in order; keys may repeat, as systemd allows."""
    out, section = [], ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def values(key: str) -> list[str]:
    return [v for _, k, v in directives() if k == key]


def one(key: str) -> str:
    (value,) = values(key)
    return value


def seconds(text: str) -> float:
    found = re.fullmatch(r"(\d+)(s|min)?", text)
    assert found, text
    return float(found.group(1)) * (60 if found.group(2) == "min" else 1)


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a program that exists here (verify checks it)."""
    program = tmp_path / "dtmf-gateway"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    text = UNIT.read_text()
    assert "/opt/dtmf-gateway/bin/dtmf-gateway " in text
    unit = tmp_path / "dtmf-gateway.service"
    unit.write_text(text.replace("/opt/dtmf-gateway/bin/dtmf-gateway ", f"{program} "))
    return unit


@needs_analyze
def test_systemd_analyze_verify_is_silent(checkable_unit: Path) -> None:
    result = subprocess.run([str(ANALYZE), "verify", str(checkable_unit)],
                            capture_output=True, text=True, timeout=120)
    # verify exits 0 on an unknown key or a bad value, and only says so: any
    # word about our file is a defect.
    said = [line for line in (result.stdout + result.stderr).splitlines()
            if checkable_unit.name in line]
    assert result.returncode == 0 and said == [], result.stdout + result.stderr


@needs_analyze
def test_exposure_stays_low(checkable_unit: Path) -> None:
    result = subprocess.run([str(ANALYZE), "security", "--offline=yes", "--no-pager",
                             str(checkable_unit)], capture_output=True, text=True, timeout=120)
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip("systemd-analyze is older than 250 (no --offline)")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    # 1.5 now; what is left is the point of the service: devices and the network.
    assert float(found.group(1)) <= 2.0, result.stdout


def test_the_unit_is_a_hardened_notify_service() -> None:
    assert (one("Type"), one("Restart"), one("NotifyAccess")) == ("notify", "on-failure", "main")
    assert (one("User"), one("Group")) == ("dtmf-gateway", "dtmf-gateway")
    assert set(one("SupplementaryGroups").split()) == {"gpio", "audio", "dialout"}
    assert one("CapabilityBoundingSet") == ""
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes")]:
        assert one(key) == value, key
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert {v.split()[0] for v in values("DeviceAllow")} >= {
        "char-alsa", "char-gpiochip", "char-ttyACM", "char-ttyUSB"}
    assert "GPIOZERO_PIN_FACTORY=lgpio" in values("Environment")


def test_the_unit_agrees_with_the_installer_and_the_server() -> None:
    script = INSTALL.read_text()
    exec_start = one("ExecStart").split()
    assert exec_start[0] == "/opt/dtmf-gateway/bin/dtmf-gateway"
    assert exec_start[1:] == ["serve", "--config", "/etc/dtmf-gateway/gateway.toml",
                              "--cpus", "one"]
    assert "OPT=/opt/$NAME" in script and "ETC=/etc/$NAME" in script
    assert "STATE=/var/lib/$NAME" in script and "NAME=dtmf-gateway" in script
    assert one("StateDirectory").split()[0] == "dtmf-gateway"
    assert "/var/lib/dtmf-gateway" in one("ReadWritePaths").split()
    assert one("WorkingDirectory") == "/var/lib/dtmf-gateway"
    # lgpio's pipes go where the service may write.
    assert f"LG_WD=/run/{one('RuntimeDirectory')}" in values("Environment")
    # A stop waits for the running commands, the answers and the HTTP thread,
    # each bounded by STOP_TIMEOUT_S: systemd must not SIGKILL before that.
    assert seconds(one("TimeoutStopSec")) > 3 * server.STOP_TIMEOUT_S + 5
    # Pings go out every WatchdogSec/2; a probe that hangs takes at most 5 s of that.
    assert seconds(one("WatchdogSec")) / 2 > 5 + 5


def test_the_unit_keeps_the_gateway_to_one_core_and_one_thread_per_pool() -> None:
    """--cpus one sets the core of every thread itself: the one syscall of
    @resources it needs is allowed back, and no other. The thread-pool
    variables are the CLI's own (it sets them where they are unset)."""
    from gateway.cli import SINGLE_THREADED, build_parser

    args = build_parser("serve").parse_args(one("ExecStart").split()[1:])
    assert args.cpus == "one"
    filters = values("SystemCallFilter")
    assert filters[-1] == "sched_setaffinity"
    assert "@resources" in filters[-2].split()
    environment = dict(v.split("=", 1) for v in values("Environment"))
    assert {k: environment.get(k) for k in SINGLE_THREADED} == SINGLE_THREADED

