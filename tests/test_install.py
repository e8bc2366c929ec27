"""deploy/install.sh in its staging mode: the files, their modes, and running it again."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from gateway.config import from_mapping, load

REPO = Path(__file__).parent.parent
INSTALL = REPO / "deploy" / "install.sh"
SYSTEM_COMMANDS = ("apt-get", "apt-cache", "dpkg-query", "useradd", "userdel", "usermod",
                   "groupadd", "getent", "systemctl", "runuser", "python3", "pip")


@pytest.fixture
def fake_system(tmp_path: Path) -> Path:
    """A PATH where every command that changes the system only records that it ran."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name in SYSTEM_COMMANDS:
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/ran"\nexit 1\n')
        script.chmod(0o755)
    return tmp_path / "ran"


def install(root: Path | None, *args: str, env: dict[str, str] | None = None,
            fake: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installer staged into ``root`` (None: only through ``env``'s DESTDIR)."""
    environ = {**os.environ, **(env or {})}
    assert root is not None or environ.get("DESTDIR"), "never install into this machine"
    if fake is not None:
        environ["PATH"] = f"{fake.parent / 'fake-bin'}:{environ['PATH']}"
    command = [str(INSTALL), *(["--root", str(root)] if root is not None else []), *args]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=60,
                           cwd=fake.parent if fake is not None else None)


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root``: its mode and its content (or link target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = "/" + str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = (oct(st.st_mode & 0o7777), "dir")
        else:
            out[rel] = (oct(st.st_mode & 0o7777), hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture
def staged(tmp_path: Path, fake_system: Path) -> Path:
    root = tmp_path / "root"
    result = install(root, fake=fake_system)
    assert result.returncode == 0, result.stderr
    return root


EXPECTED_MODES = {
    "/etc/dtmf-gateway": "0o750",
    "/etc/dtmf-gateway/gateway.toml": "0o640",
    "/etc/default/dtmf-gateway": "0o644",
    "/etc/tmpfiles.d/dtmf-gateway.conf": "0o644",
    "/etc/systemd/system/dtmf-gateway.service": "0o644",
    "/var/lib/dtmf-gateway": "0o750",
    "/var/lib/dtmf-gateway/recordings": "0o750",
    "/opt/dtmf-gateway/share/doc/dtmf-gateway/README.md": "0o644",
    "/opt/dtmf-gateway/share/doc/dtmf-gateway/gateway.example.toml": "0o644",
    "/opt/dtmf-gateway/share/doc/dtmf-gateway/firmware-notes/README.md": "0o644",
}


def test_staging_installs_every_file_with_its_mode(staged: Path, fake_system: Path) -> None:
    files = tree(staged)
    assert {path: files[path][0] for path in EXPECTED_MODES} == EXPECTED_MODES
    assert files["/usr/local/bin/dtmf-gateway"] == ("link", "/opt/dtmf-gateway/bin/dtmf-gateway")
    unit = staged / "etc/systemd/system/dtmf-gateway.service"
    assert unit.read_bytes() == (REPO / "systemd" / "dtmf-gateway.service").read_bytes()
    # Staged, nothing outside the root was touched: no system command ran.
    assert not fake_system.exists()


def test_staging_shows_the_system_commands_it_would_run(tmp_path: Path, fake_system: Path) -> None:
    result = install(tmp_path / "root", fake=fake_system)
    would = [line.removeprefix("would run: ") for line in result.stdout.splitlines()
             if line.startswith("would run: ")]
    assert ("env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv "
            "python3-dev gcc libasound2-dev alsa-utils espeak-ng") in would
    assert ("useradd --system --user-group --home-dir /var/lib/dtmf-gateway --no-create-home "
            "--shell /usr/sbin/nologin --comment dtmf-gateway\\ service dtmf-gateway") in would
    assert "groupadd --system gpio" in would
    assert "python3 -m venv /opt/dtmf-gateway" in would
    assert would[-3:] == ["systemctl daemon-reload", "systemctl enable dtmf-gateway.service",
                          "systemctl restart dtmf-gateway.service"]


def test_the_config_is_the_example_with_state_paths(staged: Path) -> None:
    config = load(staged / "etc/dtmf-gateway/gateway.toml")
    # Paths inside the target system, where the service may write.
    assert config.users_path == Path("/var/lib/dtmf-gateway/users.toml")
    assert config.lines[0].options.record_dir == "/var/lib/dtmf-gateway/recordings"
    default = from_mapping({})
    assert (config.server, config.tones, config.health) == (
        default.server, default.tones, default.health)


def test_running_again_changes_nothing(staged: Path, fake_system: Path) -> None:
    before = tree(staged)
    config = staged / "etc/dtmf-gateway/gateway.toml"
    stamp = config.stat().st_mtime_ns
    time.sleep(0.01)
    again = install(staged, fake=fake_system)
    assert again.returncode == 0, again.stderr
    assert tree(staged) == before
    assert config.stat().st_mtime_ns == stamp
    assert "kept /etc/dtmf-gateway/gateway.toml" in again.stdout


def test_an_existing_config_is_never_overwritten(staged: Path, fake_system: Path) -> None:
    config = staged / "etc/dtmf-gateway/gateway.toml"
    mine = '[server]\nhost = "0.0.0.0"\n\n[[line]]\nname = "hat"\ndriver = "alsa"\n'
    config.write_text(mine)
    config.chmod(0o600)
    defaults = staged / "etc/default/dtmf-gateway"
    defaults.write_text("GPIOZERO_PIN_FACTORY=mock\n")
    tmpfiles = staged / "etc/tmpfiles.d/dtmf-gateway.conf"
    tmpfiles.write_text("e /var/lib/dtmf-gateway/recordings - - - mM:90d\n")
    assert install(staged, fake=fake_system).returncode == 0
    assert config.read_text() == mine and stat.S_IMODE(config.stat().st_mode) == 0o600
    assert defaults.read_text() == "GPIOZERO_PIN_FACTORY=mock\n"
    assert tmpfiles.read_text().endswith("mM:90d\n")


def test_a_changed_unit_is_replaced(staged: Path, fake_system: Path) -> None:
    unit = staged / "etc/systemd/system/dtmf-gateway.service"
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    assert install(staged, fake=fake_system).returncode == 0
    assert unit.read_bytes() == (REPO / "systemd" / "dtmf-gateway.service").read_bytes()


def test_uninstall_keeps_config_and_state_and_purge_removes_them(
    staged: Path, fake_system: Path
) -> None:
    (staged / "var/lib/dtmf-gateway/users.toml").write_text("# users\n")
    result = install(staged, "--uninstall", fake=fake_system)
    assert result.returncode == 0, result.stderr
    assert "would run: systemctl disable --now dtmf-gateway.service" in result.stdout
    left = set(tree(staged))
    for gone in ("/opt/dtmf-gateway", "/etc/systemd/system/dtmf-gateway.service",
                 "/usr/local/bin/dtmf-gateway"):
        assert gone not in left
    for kept in ("/etc/dtmf-gateway/gateway.toml", "/var/lib/dtmf-gateway/users.toml",
                 "/etc/default/dtmf-gateway", "/etc/tmpfiles.d/dtmf-gateway.conf"):
        assert kept in left
    purge = install(staged, "--uninstall", "--purge", fake=fake_system)
    assert purge.returncode == 0, purge.stderr
    assert "would run: userdel dtmf-gateway" in purge.stdout
    assert not [p for p in tree(staged) if "dtmf-gateway" in p]
    assert not fake_system.exists()


def test_destdir_is_the_same_as_root(tmp_path: Path, staged: Path, fake_system: Path) -> None:
    other = tmp_path / "destdir"
    result = install(None, env={"DESTDIR": str(other)}, fake=fake_system)
    assert result.returncode == 0, result.stderr
    assert tree(other) == tree(staged)


@pytest.mark.parametrize(("args", "message"), [
    (("--frobnicate",), "unknown option --frobnicate"),
    (("--purge",), "--purge goes with --uninstall"),
    # An empty root must not turn staging into a real install.
    (("--root", ""), "the staging root is empty"),
])
def test_bad_options(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = install(tmp_path / "root", *args)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="no systemd-tmpfiles")
def test_the_tmpfiles_rule_deletes_old_recordings_only(staged: Path) -> None:
    state = staged / "var/lib/dtmf-gateway"
    old, new = state / "recordings/old.wav", state / "recordings/new.wav"
    users = state / "users.toml"
    for path in (old, new, users):
        path.write_bytes(b"x")
    month_and_more = time.time() - 40 * 86400
    for path in (old, users):
        os.utime(path, (month_and_more, month_and_more))
    result = subprocess.run(["systemd-tmpfiles", f"--root={staged}", "--clean",
                             "dtmf-gateway.conf"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (old.exists(), new.exists(), users.exists()) == (False, True, True)


@pytest.mark.skipif(shutil.which("shellcheck") is None and not os.environ.get("CI"),
                    reason="shellcheck is not installed (apt-get install shellcheck)")
def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", str(INSTALL), str(REPO / "deploy" / "dev.sh")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
