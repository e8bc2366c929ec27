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
from gateway.lines.mt8880_sim import Fault
from gateway.selftest import run as selftest
from tests.conftest import Answer, call_api
from tests.support import decode_wav, needs_multimon
from tests.test_mt8880 import LONG_S, MEDIAN_S, SHORT_S

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
    sim = driver.simulator
    assert sim is not None
    sent = api(app, command="SendDTMF", CallId=call_id, Keys=KEYS, Party="all",
               Duration="60", Gap="70")
    assert (sent.code, sent.message) == (200, "Command successfully executed")
    assert api(app, command="HangUp", CallId=call_id).code == 200
    assert driver.hook.value == "on-hook"
    # The recording starts when the call connects: the dialled 7 is not in it.
    assert decode_wav(driver.recording_path(call_id)) == KEYS
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
        for measured, wanted in [(tones, 0.060), (gaps, 0.070)]:
            assert all(wanted - SHORT_S <= m <= wanted + LONG_S for m in measured), measured
            assert abs(sorted(measured)[len(measured) // 2] - wanted) <= MEDIAN_S, measured
    assert not sim.violations


def test_chip_dying_mid_call_is_801_on_hook_and_next_call_works(
        make_app: Callable[..., Flask]) -> None:
    app = make_app([mt8880_line(burst=True)])
    call_id = api(app, command="Call", Dialed="1").text("CallId")
    driver = driver_of(app)
    assert driver.simulator is not None
    first_chip = driver.simulator
    first_chip.set_fault(Fault.ABSENT)
    answer = api(app, command="SendDTMF", CallId=call_id, Keys="123", Party="all")
    assert answer.code == 801
    assert answer.message.startswith("Line 'm1' fault: line 'm1': MT8880 did not answer")
    assert driver.hook.value == "on-hook"
    # The relay pin went back to released.
    assert driver.simulator is first_chip
    assert api(app, command="ListActiveCalls").root.findall("ActiveCalls/Call") == []
    # The next call opens the line afresh (a new simulated chip answers).
    again = api(app, command="Call", Dialed="1")
    assert again.code == 200
    assert driver.simulator is not first_chip
    assert api(app, command="SendDTMF", CallId=again.text("CallId"), Keys="9",
               Party="all").code == 200


def test_dead_chip_refuses_the_call_without_seizing_the_line(
        make_app: Callable[..., Flask]) -> None:
    app = make_app([mt8880_line()])
    driver = driver_of(app)
    assert driver.simulator is not None
    driver.simulator.set_fault(Fault.STUCK_STATUS, 0b0000)
    answer = api(app, command="Call", Dialed="1")
    assert answer.code != 200 and "did not answer" in answer.message
    assert driver.hook.value == "on-hook"
    assert driver.simulator._off_hook == []  # the relay never closed


def test_selftest_passes_on_the_simulated_chip(tmp_path: Any) -> None:
    config = from_mapping({"line": [mt8880_line()], "tones": {"duration_ms": 40,
                                                             "gap_ms": 50}}, base_dir=tmp_path)
    out = io.StringIO()
    assert selftest(config, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "m1 (mt8880)" in text and "m1: PASS" in text
    assert "mode=non-burst" in text and "simulated=True" in text and "last_burst_ms=" in text


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
