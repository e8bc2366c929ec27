"""deploy/dev.sh, the README's two commands, against a stand-in system and venv.

Every command it runs that would install or change something (dpkg-query,
apt-get, the venv's python, ruff, mypy) is a script that records how it was
called, so what ``run`` and ``test`` install is read off the record.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_process import GatewayProcess
from tests.support import seed_example

REPO = Path(__file__).parent.parent
DEV = REPO / "deploy" / "dev.sh"

RECORDER = '#!/bin/sh\necho "{name} $*" >> "{log}"\n{then}\n'


@pytest.fixture
def system(tmp_path: Path) -> Path:
    """A PATH and a venv whose commands only record that they ran; the record's path."""
    log = tmp_path / "ran"
    fake_bin = tmp_path / "bin"
    venv_bin = tmp_path / "venv" / "bin"
    for directory in (fake_bin, venv_bin):
        directory.mkdir(parents=True)
    commands = {
        # Every package is installed: nothing for apt-get to do.
        fake_bin / "dpkg-query": "echo 'install ok installed'",
        fake_bin / "apt-get": "exit 1",
        venv_bin / "python": "exit 0",
        venv_bin / "ruff": "exit 0",
        venv_bin / "mypy": "exit 0",
    }
    for path, then in commands.items():
        path.write_text(RECORDER.format(name=path.name, log=log, then=then))
        path.chmod(0o755)
    return log


def dev(system: Path, *args: str) -> list[str]:
    """Run dev.sh with the stand-ins; the commands it ran, in order."""
    env = {**os.environ, "VENV": str(system.parent / "venv"),
           "PATH": f"{system.parent / 'bin'}:{os.environ['PATH']}"}
    system.write_text("")
    result = subprocess.run([str(DEV), *args], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return system.read_text().splitlines()


def test_run_installs_what_serving_needs_and_only_once(system: Path) -> None:
    ran = dev(system, "run")
    # Only python3-venv of the system's packages; the checkout without its test extras.
    assert [c for c in ran if c.startswith("dpkg-query")] == [
        "dpkg-query -W -f=${Status} python3-venv"]
    assert [c for c in ran if c.startswith("python")] == [
        "python -m pip install -q --upgrade pip",
        "python -m pip install -q -e .",
        "python -m gateway.quickstart",
    ]
    # Nothing changed: the next start serves at once.
    assert [c for c in dev(system, "run", "--port", "0") if c.startswith("python")] == [
        "python -m gateway.quickstart --port 0"]


def test_run_installs_again_when_pyproject_changes(system: Path) -> None:
    dev(system, "run")
    # As if pyproject.toml had changed since: its hash is not the one installed.
    (system.parent / "venv" / ".dev-installed-run").write_text("0" * 64 + "\n")
    assert "python -m pip install -q -e ." in dev(system, "run")


def test_test_installs_everything_the_tests_need(system: Path) -> None:
    ran = dev(system, "test", "-k", "tones")
    queried = {c.rsplit(" ", 1)[1] for c in ran if c.startswith("dpkg-query")}
    assert {"multimon-ng", "sox", "espeak-ng", "libasound2-dev", "shellcheck",
            "chromium"} <= queried
    assert "python -m pip install -q -e .[test]" in ran
    assert ran[-3:] == ["ruff check gateway tests bench", "mypy gateway",
                        "python -m pytest -q -p no:cacheprovider -k tones"]
    # After the tests' install, serving needs nothing more.
    assert [c for c in dev(system, "run") if c.startswith("python")] == [
        "python -m gateway.quickstart"]


def test_a_venv_set_up_to_serve_gets_the_test_extras_for_the_tests(system: Path) -> None:
    dev(system, "run")
    assert "python -m pip install -q -e .[test]" in dev(system, "test")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_quickstarts_curl_pair_prints_the_seeds_answer_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two lines ``run`` prints, pasted into a shell as they are, against
    the server it would start."""
    import gateway.quickstart

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gateway.quickstart, "cli_main", lambda argv: 0)
    assert gateway.quickstart.main([]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"^ *(ID=\$\(curl .*?\n.*?\n *curl .*?)$", printed, re.M | re.S)
    assert found, printed
    # The server of the var/gateway.toml just made, with its user, on a free port.
    gw = GatewayProcess(tmp_path / "var", (tmp_path / "var" / "gateway.toml").read_text())
    try:
        pair = found.group(1).replace("http://127.0.0.1:9509", gw.base)
        result = subprocess.run(["bash", "-c", pair], capture_output=True, text=True,
                                timeout=60)
    finally:
        assert gw.stop() == 0
    assert (result.returncode, result.stderr) == (0, "")
    assert " ".join(result.stdout.split()) == seed_example()[1]


def test_the_readmes_slow_test_command_goes_through_the_venv(system: Path) -> None:
    """A fresh clone has no venv on PATH: the command must set one up itself,
    and what it hands to pytest must select the slow tests."""
    (command,) = re.findall(r"^    (.*-m slow.*)$", (REPO / "README.md").read_text(), re.M)
    program, subcommand, *pytest_args = command.split()
    assert (program, subcommand) == ("deploy/dev.sh", "test")
    assert dev(system, subcommand, *pytest_args)[-1] == (
        f"python -m pytest -q -p no:cacheprovider {' '.join(pytest_args)}")
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                "-p", "no:cacheprovider", *pytest_args], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert collected.returncode == 0, collected.stdout
    found = re.search(r"^(\d+)/\d+ tests collected", collected.stdout, re.M)
    assert found and int(found.group(1)) >= 2, collected.stdout
