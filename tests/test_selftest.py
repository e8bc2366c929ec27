"""``dtmf-gateway selftest`` on an alsa line (ALSA file PCM, mock relay) and a simulated line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import LineFault
from gateway.lines.base import LineDriver, Party
from gateway.lines.gpio import pin_factory
from gateway.selftest import DEFAULT_KEYS, check_line
from gateway.tones import TonePlan
from tests.alsa_tap import AlsaTap, unplugging_consumer
from tests.support import decode_raw, needs_multimon

RELAY = 17


# Every test here runs on gpiozero's mock pins, reset after each (conftest).
pytestmark = pytest.mark.usefixtures("mock_pins")


def write_config(tmp_path: Path, device: str = "tap") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[tones]
duration_ms = 60
gap_ms = 60

[[line]]
name = "hat"
driver = "alsa"
device = "{device}"
rate = 8000
call_timing = {{ dial_tone_ms = 0 }}
capture = {{ enabled = false }}

[line.gpio]
pin_factory = "mock"
hook_relay_pin = {RELAY}
hook_settle_ms = 0

[[line]]
name = "sim"
driver = "simulated"
time_scale = 0.0
record_dir = "rec"
""")
    return path


@needs_multimon
def test_all_lines_pass(tap: AlsaTap, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["selftest", "--config", str(write_config(tmp_path))])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "hat (alsa)\n  PASS  open" in out and "device=tap" in out and "buffer_ms=40.0" in out
    assert "hat: PASS" in out and "sim: PASS" in out and "FAIL" not in out
    assert out.rstrip().endswith("2 line(s): 2 passed")
    # The sequence really went out through ALSA, and the relay clicked twice.
    assert decode_raw(tap.raw("tap"), 8000) == DEFAULT_KEYS
    states = [s.state for s in pin_factory("mock").pin(RELAY).states]
    assert states == [False, True, False, True, False]


def test_a_missing_device_fails_its_line_only(
    tap: AlsaTap, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["selftest", "--config", str(write_config(tmp_path, device="nosuch"))])
    out = capsys.readouterr().out
    assert status == 1
    assert ("  FAIL  open            LineFault: ALSA device 'nosuch': "
            "No such file or directory [nosuch]") in out
    assert "hat: FAIL" in out and "sim: PASS" in out
    assert out.rstrip().endswith("2 line(s): 1 passed, 1 failed (hat)")
    assert pin_factory("mock").pin(RELAY).state is False


def test_device_dying_during_the_tones(
    tap: AlsaTap, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "dying.raw"
    os.mkfifo(fifo)
    tap.add("dying", fifo)

    unplugging_consumer(fifo, 100)
    status = main(["selftest", "--config", str(write_config(tmp_path, device="dying")),
                   "--line", "hat"])
    out = capsys.readouterr().out
    assert status == 1
    assert ("  FAIL  tones           LineFault: ALSA device 'dying': "
            "Input/output error") in out
    assert "  PASS  close" in out and "sim" not in out
    states = [s.state for s in pin_factory("mock").pin(RELAY).states]
    assert states == [False, True, False, True, False]


def test_unknown_line_is_a_usage_error(
    tap: AlsaTap, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["selftest", "--config", str(write_config(tmp_path)), "--line", "nope"])
    assert status == 2
    assert "no line 'nope' in the configuration (lines: hat, sim)" in capsys.readouterr().err


def test_bad_keys_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--keys", "12X"]) == 2
    assert "invalid key 'X' at position 3" in capsys.readouterr().err


class StuckRelay(LineDriver):
    """A driver whose off_hook does nothing: what a wiring fault looks like to software."""

    driver_name = "stuck"

    def __init__(self) -> None:
        super().__init__("stuck")
        self.closed = 0

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1

    def off_hook(self) -> None:
        pass

    def on_hook(self) -> None:
        pass

    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        raise LineFault("should not be reached")


def test_a_hook_that_does_not_change_fails_and_stops_there() -> None:
    driver = StuckRelay()
    report = check_line(driver, TonePlan(()), wait=lambda s: None)
    assert not report.passed
    assert [(s.name, s.ok) for s in report.steps] == [
        ("open", True), ("off hook", False), ("close", True)]
    assert report.steps[1].detail == "the driver reports on-hook"
    assert driver.closed == 1


@pytest.mark.parametrize("command", ["onhook", "selftest"])
@pytest.mark.parametrize(("device", "asoundrc"), [
    # No such card in the system's own configuration.
    ("hw:CARD=nosuch,DEV=0", None),
    # A machine without a sound card: even "default" resolves to nothing.
    ("default", "# no devices\n"),
])
def test_a_missing_device_is_one_clear_line_without_alsa_libs_own(
    tmp_path: Path, command: str, device: str, asoundrc: str | None
) -> None:
    """alsa-lib writes its own ``ALSA lib ...`` lines to stderr unless told
    otherwise: the one line naming the line and the device is all a user sees."""
    config = tmp_path / "g.toml"
    config.write_text(f'[[line]]\nname = "hat"\ndriver = "alsa"\ndevice = "{device}"\n')
    env = dict(os.environ)
    env.pop("ALSA_CONFIG_PATH", None)
    if asoundrc is not None:
        (tmp_path / "asoundrc").write_text(asoundrc)
        env["ALSA_CONFIG_PATH"] = str(tmp_path / "asoundrc")
    result = subprocess.run([sys.executable, "-m", "gateway", command, "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "ALSA lib" not in result.stdout + result.stderr, result.stderr
    said = f"ALSA device '{device}': "
    if command == "onhook":
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(
            f"hat: did not open ({said}"), result.stderr
    else:
        assert result.stderr == ""
        assert f"  FAIL  open            LineFault: {said}" in result.stdout
