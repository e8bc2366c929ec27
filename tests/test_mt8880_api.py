"""SendDTMF through the HTTP API to an mt8880 line on the simulated chip.

The line is configured as a user would (``simulate = true``); the keys are
decoded with multimon-ng from the chip's TONE output while the hook relay was
closed, and the tone and gap times are those the chip saw on its bus.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from gateway.calls import Gateway
from gateway.config import from_mapping
from gateway.lines.mt8880 import MT8880Line
from gateway.lines.mt8880_sim import ChipRecorder, Fault, MT8880Simulator
from gateway.selftest import run as selftest
from tests.conftest import Answer, call_api
from tests.support import decode_wav, needs_multimon
from tests.test_mt8880 import LONG_S, bus_cycle_s, check_timing

KEYS = "0123456789*#ABCD"


def mt8880_line(name: str = "m1", **options: Any) -> dict[str, Any]:
    return {"name": name, "driver": "mt8880", "simulate": True, "power_up_ms": 5,
            "record_dir": "recordings",
            "gpio": {"hook_relay_pin": 17, "ring_detect_pin": 27, "hook_settle_ms": 0},
            "call_timing": {"dial_tone_ms": 0, "answer_wait_ms": 0}, **options}


def driver_of(app: Flask, name: str = "m1") -> MT8880Line:
    gateway: Gateway = app.extensions["dtmf_gateway"]
    driver = gateway.lines[name].driver
    assert isinstance(driver, MT8880Line)
    return driver


def recorder_of(app: Flask, name: str = "m1") -> ChipRecorder:
    gateway: Gateway = app.extensions["dtmf_gateway"]
    recorder = gateway.lines[name].recorder
    assert isinstance(recorder, ChipRecorder)
    return recorder


def chip_of(app: Flask, name: str = "m1") -> MT8880Simulator:
    """The simulated chip the line was assembled with (its recorder renders it)."""
    return recorder_of(app, name).simulator


def api(app: Flask, **params: str) -> Answer:
    return call_api(app.test_client(), **params)


@needs_multimon
@pytest.mark.parametrize("burst", [False, True])
def test_senddtmf_reaches_the_line_as_exactly_the_keys(make_app: Callable[..., Flask],
                                                        burst: bool) -> None:
    app = make_app([mt8880_line(burst=burst)])
    call = api(app, command="Call", Dialed="7")
    assert call.code == 200, call
    call_id = call.text("CallId")
    driver = driver_of(app)
    sim = chip_of(app)
    sent = api(app, command="SendDTMF", CallId=call_id, Keys=KEYS, Party="all",
               Duration="60", Gap="70")
    assert (sent.code, sent.message) == (200, "Command successfully executed")
    assert api(app, command="HangUp", CallId=call_id).code == 200
    assert driver.hook.value == "on-hook"
    # The recording starts when the call connects: the dialled 7 is not in it.
    assert decode_wav(recorder_of(app).path(call_id)) == KEYS
    segments = [s for s in sim.tone_segments(line_only=True)][-len(KEYS):]
    assert "".join(s.key for s in segments) == KEYS
    tones = [s.end - s.start for s in segments]
    gaps = [b.start - a.end for a, b in itertools.pairwise(segments)]
    if burst:
        # The chip's own timing; Duration and Gap do not apply in burst mode.
        assert all(abs(t - 0.051) < 1e-6 for t in tones), tones
        assert all(0.051 <= g <= 0.051 + 0.002 + LONG_S for g in gaps), gaps
    else:
        # The stated tolerance of tests/test_mt8880.py.
        check_timing(tones, 0.060, bus_cycle_s(sim))
        check_timing(gaps, 0.070, bus_cycle_s(sim))
    assert not sim.violations


def test_chip_dying_mid_call_is_801_on_hook_and_next_call_works(
        make_app: Callable[..., Flask]) -> None:
    app = make_app([mt8880_line(burst=True)])
    call_id = api(app, command="Call", Dialed="1").text("CallId")
    driver = driver_of(app)
    chip = chip_of(app)
    chip.set_fault(Fault.ABSENT)
    answer = api(app, command="SendDTMF", CallId=call_id, Keys="123", Party="all")
    assert answer.code == 801
    assert answer.message.startswith("Line 'm1' fault: MT8880 did not answer")
    assert driver.hook.value == "on-hook"
    assert api(app, command="ListActiveCalls").root.findall("ActiveCalls/Call") == []
    # The chip is put back (it powers up uninitialised): the next call opens
    # the line afresh, which initialises it again.
    chip.set_fault(Fault.NONE)
    assert not chip.initialised
    again = api(app, command="Call", Dialed="1")
    assert again.code == 200
    assert chip.initialised
    assert api(app, command="SendDTMF", CallId=again.text("CallId"), Keys="9",
               Party="all").code == 200
    assert not chip.violations


def test_dead_chip_refuses_the_call_without_seizing_the_line(
        make_app: Callable[..., Flask]) -> None:
    app = make_app([mt8880_line()])
    driver = driver_of(app)
    chip_of(app).set_fault(Fault.STUCK_STATUS, 0b0000)
    answer = api(app, command="Call", Dialed="1")
    assert answer.code != 200 and "did not answer" in answer.message
    assert driver.hook.value == "on-hook"
    assert chip_of(app)._off_hook == []  # the relay never closed


def test_selftest_passes_on_the_simulated_chip(tmp_path: Any) -> None:
    config = from_mapping({"line": [mt8880_line()], "tones": {"duration_ms": 40,
                                                             "gap_ms": 50}}, base_dir=tmp_path)
    out = io.StringIO()
    assert selftest(config, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "m1 (mt8880)" in text and "m1: PASS" in text
    assert "mode=non-burst" in text and "simulated=True" in text and "last_burst_ms=" in text
    assert "chip=proven chip_check=a probe burst on hook" in text


def test_healthz_shows_whether_the_chip_is_proven(make_app: Callable[..., Flask]) -> None:
    import json

    app = make_app([mt8880_line(), mt8880_line("m2", gpio={})])
    api(app, command="ListActiveCalls")  # the lines are open once the gateway answers
    lines = json.loads(app.test_client().get("/healthz").data)["lines"]
    assert (lines["m1"]["chip"], lines["m2"]["chip"]) == ("proven", "unproven")
    assert "no read-back of the chip stays off the line" in lines["m2"]["chip_check"]


def test_selftest_says_plainly_when_nothing_can_prove_the_chip(tmp_path: Any) -> None:
    line = mt8880_line(gpio={})  # no hook relay, non-burst mode
    config = from_mapping({"line": [line]}, base_dir=tmp_path)
    out = io.StringIO()
    selftest(config, out=out)
    text = out.getvalue()
    assert "chip=unproven chip_check=nothing: in non-burst mode without a hook relay" in text


def test_selftest_reports_an_absent_chip(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.lines import mt8880_sim

    real = mt8880_sim.MT8880Simulator.for_options

    def absent(*args: Any, **kwargs: Any) -> mt8880_sim.MT8880Simulator:
        sim = real(*args, **kwargs)
        sim.set_fault(Fault.ABSENT)
        return sim

    monkeypatch.setattr(mt8880_sim.MT8880Simulator, "for_options", absent)
    config = from_mapping({"line": [mt8880_line()]}, base_dir=tmp_path)
    out = io.StringIO()
    assert selftest(config, out=out) == 1
    text = out.getvalue()
    assert "FAIL  open" in text and "did not answer" in text and "m1: FAIL" in text


def test_onhook_command_opens_and_releases_an_mt8880_line(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    path = tmp_path / "gateway.toml"
    path.write_text('[[line]]\nname = "m1"\ndriver = "mt8880"\nsimulate = true\n'
                    "power_up_ms = 5\ngpio = { hook_relay_pin = 17 }\n")
    assert main(["onhook", "--config", str(path)]) == 0
    assert "m1: on hook" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["onhook", "selftest"])
def test_a_machine_without_gpio_gets_one_clear_line(
        tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: str) -> None:
    import warnings

    from gpiozero import Device

    from gateway.cli import main

    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            Device.ensure_pin_factory()
        except Exception:
            pass
        else:
            pytest.skip("this machine has a GPIO library")
    path = tmp_path / "gateway.toml"
    path.write_text('[[line]]\nname = "m1"\ndriver = "mt8880"\ngpio = { hook_relay_pin = 17 }\n')
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        assert main([command, "--config", str(path)]) == 1
    # gpiozero's four PinFactoryFallback warnings stay in the debug log.
    assert escaped == []
    captured = capsys.readouterr()
    said = [line for line in (captured.out + captured.err).splitlines()
            if "pin library" in line]
    assert len(said) == 1 and "GPIO: no pin library could be loaded" in said[0]
    assert "Falling back" not in captured.err
