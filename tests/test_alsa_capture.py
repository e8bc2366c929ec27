"""The alsa line's capture: real ALSA (a file PCM's infile) for what it reads,
a stand-in PCM for what its read loop does with pyalsaaudio's answers."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import ConfigError, build
from gateway.errors import CallFailed, LineFault
from gateway.lines.alsa import AlsaLine, AlsaOptions
from gateway.lines.alsa_capture import AlsaCapture, CaptureOptions
from gateway.lines.gpio import pin_factory
from gateway.tones import Timing, ToneEngine, ToneSettings
from tests.alsa_line import FarEnd
from tests.alsa_tap import AlsaTap
from tests.sox_signals import needs_sox

RELAY = 17
pytestmark = pytest.mark.usefixtures("mock_pins")


def make_line(device: str = "hat", **options: Any) -> AlsaLine:
    table: dict[str, Any] = {"device": device, "rate": 8000,
                             "gpio": {"pin_factory": "mock", "hook_relay_pin": RELAY,
                                      "hook_settle_ms": 0}, **options}
    return AlsaLine("line1", build(AlsaOptions, table, "line[0]"), ToneEngine(ToneSettings()))


def relay_history() -> list[bool]:
    return [s.state for s in pin_factory("mock").pin(RELAY).states]


def duplex(tap: AlsaTap, infile: Path, name: str = "hat") -> None:
    """``name``: playback into a tap file, capture from ``infile``, as a card."""
    tap.add(f"{name}_out")
    tap.add_capture(f"{name}_in", infile)
    tap.add_duplex(name, f"{name}_out", f"{name}_in")


def alsa() -> Any:
    import alsaaudio

    return alsaaudio


# -- what it reads, through ALSA ------------------------------------------------------
def test_blocks_of_100_ms_of_exactly_what_the_line_carried(tap: AlsaTap, tmp_path: Path) -> None:
    frames = (np.arange(48000 * 2) % 30000 - 15000).astype("<i2")
    frames.tofile(tmp_path / "far.raw")
    tap.add_capture("far", tmp_path / "far.raw")
    source = AlsaCapture(alsa(), "far", 48000, CaptureOptions())
    try:
        blocks = [source.read() for _ in range(5)]
        assert [len(b) for b in blocks] == [4800] * 5
        assert np.array_equal(np.concatenate(blocks), frames[: 5 * 4800])
        assert source.position == pytest.approx(0.5)
    finally:
        source.close()
        source.close()  # twice is fine
    assert len(source.read()) == 0  # closed: the end of the stream


def test_a_stereo_capture_gives_the_line_channel_only(tap: AlsaTap, tmp_path: Path) -> None:
    left = np.arange(8000, dtype="<i2")
    right = -np.arange(8000, dtype="<i2")
    np.stack([left, right], axis=1).astype("<i2").tofile(tmp_path / "far.raw")
    tap.add_capture("far", tmp_path / "far.raw")
    source = AlsaCapture(alsa(), "far", 8000, CaptureOptions(channels=2, channel=1))
    try:
        assert np.array_equal(np.concatenate([source.read() for _ in range(3)]), right[:2400])
    finally:
        source.close()


@needs_sox
def test_a_capture_rate_of_its_own_is_heard_at_that_rate(tap: AlsaTap, tmp_path: Path) -> None:
    # Busy at 16 kHz while the line plays at 8 kHz: read as 8 kHz, every
    # tone would sound an octave low and nothing would be recognised.
    far = FarEnd(16000).tone((350.0, 440.0), 1.2).silence(1.0).tone(
        (480.0, 620.0), 20.0, (500, 500))
    duplex(tap, far.write(tmp_path / "far.raw"))
    line = make_line(capture={"rate": 16000})
    line.capture_speed = 8.0
    line.open()
    try:
        with pytest.raises(CallFailed) as failed:
            line.place_call("123", Timing(60, 60))
        assert failed.value.state == "Busy"
        assert line.status()["capture"] == {"device": "hat", "rate": 16000, "channel": 0,
                                            "buffer_ms": 100.0}
    finally:
        line.close()
    assert relay_history() == [False, True, False]


def test_a_missing_capture_device_never_seizes_the_line(tap: AlsaTap) -> None:
    tap.add("tap")
    line = make_line(device="tap", capture={"device": "nosuch"})
    line.open()
    with pytest.raises(LineFault) as fault:
        line.off_hook()
    assert str(fault.value) == ("ALSA capture device 'nosuch': No such file or directory "
                                "[nosuch] (on a card without an input, set "
                                "capture.enabled = false)")
    assert line.hook.value == "on-hook" and line.fault == str(fault.value)
    assert relay_history() == [False]  # the relay never closed
    line.close()


def test_a_line_that_does_not_hear_opens_no_capture(tap: AlsaTap) -> None:
    tap.add("tap")  # playback only: opening it for capture would read the null device
    line = make_line(device="tap", capture={"enabled": False})
    assert line.ears is None and not line.hears
    with line:
        line.off_hook()
        assert "capture" not in line.status()


# -- the read loop, on a stand-in PCM ----------------------------------------------------
# Overruns, stalls and device errors need a card; these pin down what the
# loop does with pyalsaaudio's answers: (frames, data), (0, b"") when nothing
# is there yet, (-EPIPE, b"") after an overrun (it prepares the stream again
# at the next read).
class StandInAlsa:
    PCM_CAPTURE, PCM_NONBLOCK, PCM_FORMAT_S16_LE = 1, 1, 2

    class ALSAAudioError(Exception):
        pass

    def __init__(self, answers: list[Any], period: int = 80) -> None:
        self.answers = answers
        self.period = period
        self.closed = False

    def PCM(self, **_: Any) -> StandInAlsa:
        return self

    def info(self) -> dict[str, Any]:
        return {"rate": 8000, "channels": 1, "format_name": "S16_LE",
                "period_size": self.period, "buffer_size": self.period * 10}

    def read(self) -> tuple[int, bytes]:
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer()
        if answer > 0:
            return answer, np.full(answer, 7, dtype="<i2").tobytes()
        return answer, b""

    def close(self) -> None:
        self.closed = True


def test_an_overrun_is_counted_and_what_it_lost_kept_as_silence() -> None:
    overruns: list[int] = []

    def late() -> int:
        time.sleep(0.05)  # the reader came back 50 ms late: the card had overrun
        return -errno.EPIPE

    stand_in = StandInAlsa([80] * 4 + [late] + [80] * 20)
    source = AlsaCapture(stand_in, "card", 8000, CaptureOptions(),
                         on_overrun=lambda: overruns.append(1))
    block = source.read()
    assert source.overruns == 1 and overruns == [1]
    # 320 frames before, then silence for at least the 50 ms the card was
    # not read (and less than the test's own worst delay), then data again.
    zeros = np.flatnonzero(block == 0)
    assert 400 <= len(zeros) < 400 + 8000
    assert zeros[0] == 320 and np.array_equal(zeros, np.arange(320, 320 + len(zeros)))
    assert len(block) >= 800 and source.frames == len(block)


def test_a_card_that_delivers_nothing_is_a_fault_not_a_hang() -> None:
    source = AlsaCapture(StandInAlsa([80] + [0] * 100_000), "card", 8000, CaptureOptions())
    started = time.monotonic()
    with pytest.raises(LineFault, match=r"ALSA capture device 'card': no audio for 0\.5 s"):
        source.read()
    assert time.monotonic() - started < 5


def test_an_alsa_error_is_a_fault_naming_the_device() -> None:
    stand_in = StandInAlsa([80, StandInAlsa.ALSAAudioError("No such device [card]")])
    source = AlsaCapture(stand_in, "card", 8000, CaptureOptions())
    with pytest.raises(LineFault, match=r"^ALSA capture device 'card': No such device \[card\]$"):
        source.read()


def test_close_from_another_thread_ends_a_read_within_a_period() -> None:
    stand_in = StandInAlsa([0] * 100_000)  # a card that has nothing yet
    source = AlsaCapture(stand_in, "card", 8000, CaptureOptions())
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(len(source.read())))
    reader.start()
    threading.Timer(0.1, source.close).start()
    reader.join(5)
    assert got == [0] and stand_in.closed


# -- options ------------------------------------------------------------------------------
@pytest.mark.parametrize(("table", "message"), [
    ({"capture": {"rate": 11025}}, r"capture.rate: 11025 is not 0 \(the playback rate\)"),
    ({"capture": {"channels": 2, "channel": 2}},
     "capture.channel: 2 does not exist on a 2-channel capture"),
    ({"capture": {"periods": 64}}, r"capture.periods: 64 periods of 80 frames .* 640 ms"),
    ({"rate": 48000, "capture": {"periods": 51}}, r"capture.periods: .* 510 ms"),
    ({"country": "xx"}, "country: 'xx' is not one of"),
])
def test_bad_capture_options_name_their_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(AlsaOptions, {"rate": 8000, **table}, "line[0]")


def test_capture_defaults() -> None:
    opts = AlsaOptions(device="plughw:CARD=x,DEV=0", rate=48000)
    assert opts.capture == CaptureOptions(enabled=True, device="", rate=0, channels=1,
                                          channel=0, period_size=None, periods=10)
    # The HAT's own capture side, at the playback's rate, 10 ms periods, 100 ms buffer.
    assert (opts.capture_device, opts.capture_rate) == ("plughw:CARD=x,DEV=0", 48000)
    assert opts.capture.frames_per_period(48000) == 480
