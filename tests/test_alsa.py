"""The alsa line on real ALSA (file PCMs with a null slave) and gpiozero mock pins.

Audio is checked by decoding what ALSA wrote with multimon-ng; the relay by the
mock pin's state history.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import ConfigError, build, from_mapping
from gateway.errors import LineError, LineFault, NotSupported
from gateway.keys import parse_keys
from gateway.lines import driver_spec
from gateway.lines.alsa import Aborted, AlsaLine, AlsaOptions, PcmGeometry, play
from gateway.lines.base import CallTiming, HookState, Party
from gateway.lines.gpio import GpioOptions, pin_factory
from gateway.tones import Timing, ToneEngine, TonePlan, ToneSettings
from tests.alsa_tap import AlsaTap, unplugging_consumer
from tests.conftest import wait_until
from tests.support import decode_raw, example_line_block, multimon_decode, needs_multimon

ALL_KEYS = "123A456B789C*0#D"
RELAY = 17
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)


# Every test here runs on gpiozero's mock pins, reset after each (conftest).
pytestmark = pytest.mark.usefixtures("mock_pins")


def relay_pin() -> Any:
    return pin_factory("mock").pin(RELAY)


def make_line(name: str = "line1", relay: bool = True, **options: Any) -> AlsaLine:
    """A line for the playback side: it hears nothing (test_alsa_capture.py hears)."""
    table: dict[str, Any] = {"device": "tap", "rate": 8000, "capture": {"enabled": False},
                             **options}
    if relay:
        table.setdefault("gpio", {"pin_factory": "mock", "hook_relay_pin": RELAY,
                                  "hook_settle_ms": 0})
    opts = build(AlsaOptions, table, f"line[{name}]")
    return AlsaLine(name, opts, ToneEngine(ToneSettings()))


def plan(keys: str, duration: int = 60, gap: int = 60) -> TonePlan:
    return TonePlan(parse_keys(keys), Timing(duration, gap))


# -- options -----------------------------------------------------------------------
def test_registered_and_built_from_a_line_table() -> None:
    spec = driver_spec("alsa")
    assert spec.driver is AlsaLine and spec.options is AlsaOptions
    opts = build(AlsaOptions, {
        "device": "plughw:CARD=sndrpihifiberry,DEV=0", "rate": 48000,
        "routing": {"channels": 2, "caller_channels": [0], "callee_channels": [1]},
        "gpio": {"hook_relay_pin": 17, "ring_detect_pin": 27},
        "call_timing": {"dial_tone_ms": 1500},
    }, "line[0]")
    assert opts.frames_per_period == 480 and opts.periods == 4  # 40 ms
    assert opts.gpio.ring_detect_pin == 27 and opts.call_timing.dial_tone_ms == 1500


def test_example_config_block_is_valid_and_documents_the_defaults() -> None:
    config = from_mapping(example_line_block("hat1"))
    (line,) = config.lines
    assert line.driver == "alsa"
    # Every other key is its default; country "" became [tones] country's, and
    # call_timing.flash_ms 0 that country's hook flash (600 ms in the US).
    assert line.options == AlsaOptions(
        device="plughw:CARD=sndrpihifiberry,DEV=0",
        gpio=GpioOptions(hook_relay_pin=16, ring_detect_pin=26), country="us",
        call_timing=CallTiming(flash_ms=600),
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rate": 11025}, "line\\[0\\].rate: 11025 is not one of"),
        ({"rate": 8000, "period_size": 160},
         "line\\[0\\].period_size: 4 periods of 160 frames .* 80 ms"),
        ({"periods": 1}, "periods: 1 is below the minimum 2"),
        ({"gpio": {"hook_relay_pin": 99}}, "line\\[0\\].gpio.hook_relay_pin: 99 is above"),
    ],
)
def test_bad_options_name_their_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(AlsaOptions, table, "line[0]")


def test_nothing_opened_at_construction(tap: AlsaTap) -> None:
    line = make_line()
    assert not tap.raw("tap").exists()
    assert line.control.hook_relay is None
    assert line.status()["hook"] == "on-hook"


# -- tones through ALSA --------------------------------------------------------------
@needs_multimon
@pytest.mark.parametrize("rate", [8000, 48000])
def test_mono_tones_decode_to_exactly_the_keys(tap: AlsaTap, rate: int) -> None:
    with make_line(rate=rate) as line:
        line.off_hook()
        line.emit(plan(ALL_KEYS, 70, 70))
        line.on_hook()
        status = line.status()
    assert status["buffer_ms"] == 40.0 and status["underruns"] == 0
    audio = tap.frames("tap")
    # Exactly the rendered plan left through ALSA: nothing lost, nothing added.
    expected = ToneEngine(ToneSettings(rate=rate)).render(plan(ALL_KEYS, 70, 70))
    assert np.array_equal(audio, expected)
    assert decode_raw(tap.raw("tap"), rate) == ALL_KEYS


@needs_multimon
def test_commands_follow_each_other_on_one_open_device(tap: AlsaTap) -> None:
    with make_line() as line:
        line.off_hook()
        for keys in ("12", "w", "34#"):
            line.emit(plan(keys))
        # Each command is on the "wire" when it returns: the file has it all.
        assert decode_raw(tap.raw("tap"), 8000) == "1234#"
        assert len(tap.frames("tap")) == 8000 * (5 * 0.12 + 0.5)


@needs_multimon
def test_stereo_party_routing(tap: AlsaTap) -> None:
    routing = {"channels": 2, "caller_channels": [0], "callee_channels": [1]}
    with make_line(routing=routing) as line:
        line.off_hook()
        line.emit(plan("123"), Party.CALLER)
        line.emit(plan("456"), Party.CALLEE)
        line.emit(plan("789"), Party.ALL)
    frames = tap.frames("tap", channels=2)
    assert decode_raw(tap.raw("tap"), 8000, channels=2, channel=0) == "123789"
    assert decode_raw(tap.raw("tap"), 8000, channels=2, channel=1) == "456789"
    third = len(frames) // 3
    # Silence, not just "no decode", where the other party's keys were.
    assert not frames[third : 2 * third, 0].any() and not frames[:third, 1].any()


# -- hook relay over a call ------------------------------------------------------------
def test_relay_only_energised_during_the_call(tap: AlsaTap) -> None:
    line = make_line()
    line.open()
    assert relay_pin().state is False
    line.off_hook()
    assert relay_pin().state is True and line.hook is HookState.OFF_HOOK
    line.emit(plan("5"))
    line.on_hook()
    line.close()
    line.close()  # twice is fine
    assert [s.state for s in relay_pin().states] == [False, True, False]


def test_tones_on_hook_are_a_fault_and_nothing_plays(tap: AlsaTap) -> None:
    with make_line() as line, pytest.raises(LineFault, match="on hook"):
        line.emit(plan("1"))
    assert tap.frames("tap").size == 0


def test_each_ring_reaches_the_ring_handler_once(tap: AlsaTap) -> None:
    gpio = {"pin_factory": "mock", "hook_relay_pin": RELAY, "ring_detect_pin": 27,
            "ring_min_ms": 40, "ring_guard_ms": 0}
    rang = threading.Event()
    calls: list[str | None] = []
    with make_line(gpio=gpio) as line:
        line.ring_handler = lambda caller_id: (calls.append(caller_id), rang.set())
        ring = pin_factory("mock").pin(27)
        for _ in range(2):  # two bursts of 20 Hz pulses, 100 ms apart
            for _ in range(5):
                ring.drive_low()
                time.sleep(0.015)
                ring.drive_high()
                time.sleep(0.035)
            time.sleep(0.1)
        assert rang.wait(2)
        # Each ring's handler runs on a thread of its own.
        wait_until(lambda: len(calls) >= 2, timeout=10)
        rings = line.control.cadence.rings
    # Ten pulses in two bursts: two rings (the call layer groups them into a call).
    assert calls == [None, None] and rings == 2


# -- faults ----------------------------------------------------------------------------
def test_device_that_does_not_exist(tap: AlsaTap) -> None:
    line = make_line(device="nosuch")
    with pytest.raises(LineFault, match=r"ALSA device 'nosuch': No such file or directory"):
        line.open()
    # open() is all or nothing: the relay pin is released, not left claimed.
    assert relay_pin().state is False and line.control.hook_relay is None
    # The device appears (a USB card plugged in): the next open works.
    tap.add("nosuch")
    with make_line(device="nosuch") as again:
        again.off_hook()
        again.emit(plan("7"))
    assert tap.frames("nosuch").size > 0


def test_alsa_libs_own_error_lines_go_to_the_debug_log(
    tap: AlsaTap, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.DEBUG, "gateway.lines.alsa"), pytest.raises(LineFault):
        make_line(device="nosuch", relay=False).open()
    assert "ALSA lib" not in capfd.readouterr().err
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alsa-lib ")]
    # alsa-lib's format, unexpanded: ctypes cannot read a C callback's variadic arguments.
    assert any(m.startswith("alsa-lib pcm.c:") and "Unknown PCM %s" in m for m in said), said


@needs_multimon
def test_device_failing_mid_sequence_then_back(tap: AlsaTap, tmp_path: Path) -> None:
    fifo = tmp_path / "unplugged.raw"
    os.mkfifo(fifo)
    tap.add("flaky", fifo)
    reader = unplugging_consumer(fifo, 4000)  # a quarter of a second of audio, then gone
    line = make_line(device="flaky")
    line.open()
    line.off_hook()
    with pytest.raises(LineFault, match=r"ALSA device 'flaky': Input/output error") as fault:
        line.emit(plan("123456789", 100, 100))
    reader.join(5)
    # Fail-safe: on hook, relay released, the fault visible.
    assert line.hook is HookState.ON_HOOK and relay_pin().state is False
    assert line.fault == str(fault.value)
    # The device comes back (a file again); the next call's command reopens it.
    fifo.unlink()
    line.off_hook()
    line.emit(plan("42"))
    line.close()
    assert decode_raw(fifo, 8000) == "42"


@needs_multimon
def test_a_fault_on_one_line_leaves_another_playing(tap: AlsaTap, tmp_path: Path) -> None:
    fifo = tmp_path / "dies.raw"
    os.mkfifo(fifo)
    tap.add("dies", fifo)
    unplugging_consumer(fifo, 2000)
    dying = make_line("a", relay=False, device="dies")
    healthy = make_line("b", device="tap")
    for line in (dying, healthy):
        line.open()
        line.off_hook()
    faults: list[BaseException] = []

    def doomed() -> None:
        try:
            dying.emit(plan("1234567890" * 3))
        except LineFault as exc:
            faults.append(exc)

    thread = threading.Thread(target=doomed)
    thread.start()
    healthy.emit(plan(ALL_KEYS))
    thread.join(10)
    # The fault is the dying device's, and only its line went on hook.
    assert len(faults) == 1 and "ALSA device 'dies'" in str(faults[0])
    assert dying.hook is HookState.ON_HOOK and dying.fault is not None and healthy.fault is None
    assert healthy.hook is HookState.OFF_HOOK and relay_pin().state is True
    healthy.close()
    dying.close()
    assert decode_raw(tap.raw("tap"), 8000) == ALL_KEYS


def test_fault_then_close_and_reopen_like_the_call_layer(tap: AlsaTap, tmp_path: Path) -> None:
    fifo = tmp_path / "gone.raw"
    os.mkfifo(fifo)
    tap.add("gone", fifo)
    unplugging_consumer(fifo, 100)
    line = make_line(device="gone")
    line.open()
    line.off_hook()
    with pytest.raises(LineFault):
        line.emit(plan("1234567", 100, 100))
    line.close()
    fifo.unlink()
    line.open()
    line.off_hook()
    line.emit(plan("9"))
    line.close()
    assert fifo.stat().st_size == 2 * 8000 * 0.12


def real_time_consumer(fifo: Path, bytes_per_s: int) -> tuple[threading.Event, list[int]]:
    """Drain ``fifo`` at a sound card's pace (until the returned event is set);
    the list holds the byte count of each read."""
    stop = threading.Event()
    reads: list[int] = []
    fd = os.open(fifo, os.O_RDWR)
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)

    def drain() -> None:
        try:
            while not stop.wait(0.05):
                reads.append(len(os.read(fd, bytes_per_s // 20)))
        finally:
            os.close(fd)

    threading.Thread(target=drain, daemon=True).start()
    return stop, reads


@pytest.mark.parametrize("stop", ["on_hook", "close"])
def test_shutdown_during_tones_stops_them_and_releases_the_line(
    tap: AlsaTap, tmp_path: Path, stop: str
) -> None:
    fifo = tmp_path / "paced.raw"
    os.mkfifo(fifo)
    tap.add("paced", fifo)
    done, reads = real_time_consumer(fifo, 16000)  # 8 kHz mono in real time
    line = make_line(device="paced")
    line.open()
    line.off_hook()
    raised: list[BaseException] = []

    def send() -> None:
        try:
            line.emit(plan("1234567890", 150, 150))  # 3 s of tones
        except LineError as exc:
            raised.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: line.status()["hook"] == "off-hook" and relay_pin().state, timeout=5)
    # Playing: the device has taken a few periods' worth (of 3 s of tones).
    wait_until(lambda: sum(reads) >= 4000, timeout=10)
    getattr(line, stop)()  # the shutdown path, from another thread
    sender.join(5)
    done.set()
    assert not sender.is_alive()
    # Interrupted, which is no hardware fault: the call layer does not fault the line.
    assert len(raised) == 1 and isinstance(raised[0], Aborted)
    assert not isinstance(raised[0], LineFault)
    assert str(raised[0]) == "the line went on hook while audio was playing"
    assert relay_pin().state is False and line.hook is HookState.ON_HOOK
    line.close()


def test_cut_output_ends_the_audio_playing_and_keeps_the_line(tap: AlsaTap,
                                                                tmp_path: Path) -> None:
    # A key over a menu's prompt: the prompt stops, the call goes on.
    fifo = tmp_path / "paced.raw"
    os.mkfifo(fifo)
    tap.add("paced", fifo)
    done, reads = real_time_consumer(fifo, 16000)  # 8 kHz mono in real time
    line = make_line(device="paced")
    line.open()
    line.off_hook()
    finished = threading.Event()
    sender = threading.Thread(target=lambda: (line.emit(plan("1234567890", 150, 150)),
                                              finished.set()))
    sender.start()
    wait_until(lambda: sum(reads) >= 4000, timeout=10)  # playing, 3 s of it ahead
    started = time.monotonic()
    line.cut_output()
    sender.join(5)
    assert finished.is_set() and time.monotonic() - started < 2  # ended, not raised
    assert line.hook is HookState.OFF_HOOK and relay_pin().state is True
    # The next audio plays whole: the cut was for what was playing.
    line.emit(plan("5", 60, 60))
    done.set()
    line.close()


# -- the write loop, on a stand-in PCM ------------------------------------------------
# Underruns and stalls need a device that plays in real time; these pin down
# what the loop does with pyalsaaudio's answers (frames taken, 0 when full,
# -EPIPE after an underrun it has already recovered).
class StandInPcm:
    RUNNING, XRUN = 3, 4

    def __init__(self, answers: list[int | None]) -> None:
        self.answers = answers  # None: take everything offered
        self.taken = bytearray()
        self.dropped = False

    def write(self, data: bytes | memoryview) -> int:
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            self.taken += bytes(data)
            return len(data) // 2
        if answer > 0:
            self.taken += bytes(data)[: answer * 2]
        return answer

    def state(self) -> int:
        return self.RUNNING

    def avail(self) -> int:
        return 320

    def drop(self) -> int:
        self.dropped = True
        return 0


GEOMETRY = PcmGeometry(rate=8000, channels=1, period_frames=80, buffer_frames=320)


def test_underrun_is_recovered_and_counted() -> None:
    data = np.arange(2000, dtype="<i2").tobytes()
    pcm = StandInPcm([100, -32, 0, -32, None])
    underruns = []
    play(pcm, data, GEOMETRY, running_state=StandInPcm.RUNNING,
         on_underrun=lambda: underruns.append(1))
    assert bytes(pcm.taken) == data and pcm.dropped
    assert len(underruns) == 2


def test_a_device_that_takes_nothing_is_a_fault_not_a_hang() -> None:
    pcm = StandInPcm([0] * 10_000)
    started = time.monotonic()
    with pytest.raises(LineFault, match=r"took no audio for 0\.5 s"):
        play(pcm, b"\0" * 8000, GEOMETRY, running_state=StandInPcm.RUNNING)
    assert time.monotonic() - started < 5


def test_on_hook_from_another_thread_stops_the_audio() -> None:
    pcm = StandInPcm([80, 0] * 1000)  # a real-time device: a period at a time
    seized = threading.Event()
    seized.set()
    threading.Timer(0.1, seized.clear).start()
    with pytest.raises(Aborted):
        play(pcm, b"\0" * 16000 * 10, GEOMETRY, running_state=StandInPcm.RUNNING,
             keep_going=seized.is_set)
    assert 0 < len(pcm.taken) < 16000 * 10


# -- speech ----------------------------------------------------------------------------
def espeak_frames(text: str, voice: str) -> int:
    out = subprocess.run(["espeak-ng", "--stdout", "--stdin", "-b", "1", "-v", voice,
                          "-s", "160"], input=text.encode(), capture_output=True, check=True)
    data = out.stdout
    start = data.index(b"data") + 8
    with wave.open(__import__("io").BytesIO(data)) as w:
        rate = w.getframerate()
    return round((len(data) - start) // 2 * 8000 / rate)


@needs_espeak
def test_speech_of_the_expected_length_at_the_dtmf_level(tap: AlsaTap) -> None:
    text = "Your gate code is ready."
    with make_line() as line:
        line.off_hook()
        line.speak(text, "en-US")
    audio = tap.frames("tap")
    # espeak-ng's own rendering of the text, at the line's rate, to the frame.
    assert len(audio) == espeak_frames(text, "en-us")
    assert len(audio) > 8000  # over a second of speech
    peak = int(np.abs(audio.astype(np.int32)).max())
    settings = ToneSettings()
    assert abs(peak - (settings.low_amplitude + settings.high_amplitude) * 32767) <= 1
    # Speech, not a tone or silence: energy spread over the voice band.
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    hz = np.fft.rfftfreq(len(audio), 1 / 8000)
    band = spectrum[(hz > 200) & (hz < 3400)]
    assert (band > band.max() / 100).mean() > 0.2


@needs_espeak
@needs_multimon
def test_speak_then_keys_decode_to_the_keys(tap: AlsaTap) -> None:
    with make_line() as line:
        line.off_hook()
        line.speak("Please hold while I open the gate.", "en")
        line.emit(plan("1234#", 100, 100))
    assert multimon_decode(tap.frames("tap"), 8000) == "1234#"


@needs_espeak
def test_speak_language_and_party(tap: AlsaTap) -> None:
    routing = {"channels": 2, "caller_channels": [0], "callee_channels": [1]}
    with make_line(routing=routing) as line:
        line.off_hook()
        line.speak("Guten Tag", "de-DE", Party.CALLEE)
    frames = tap.frames("tap", channels=2)
    assert not frames[:, 0].any() and frames[:, 1].any()
    assert len(frames) == espeak_frames("Guten Tag", "de")


@needs_espeak
def test_unknown_language_is_a_clear_error_and_the_line_stays_up(tap: AlsaTap) -> None:
    with make_line() as line:
        line.off_hook()
        with pytest.raises(NotSupported, match=r"no voice for language 'tlh-KL' \(it has .*en"):
            line.speak("nuqneH", "tlh-KL")
        assert line.hook is HookState.OFF_HOOK and relay_pin().state is True
        line.emit(plan("1"))


def test_missing_espeak_is_a_clear_error(tap: AlsaTap) -> None:
    with make_line(espeak="no-such-espeak-ng") as line:
        line.off_hook()
        with pytest.raises(NotSupported, match=r"'no-such-espeak-ng' is not installed .*apt-get"):
            line.speak("hello")
        assert line.hook is HookState.OFF_HOOK
