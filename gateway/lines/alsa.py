"""An audio line: tones and speech out of an ALSA device, hook and ring on GPIO.

The sound card (an audio HAT such as a HiFiBerry DAC+ADC or a WM8960 board)
feeds a DAA/FXO module that couples it to the phone line; a relay on GPIO
takes the line off hook and an optocoupler on GPIO reports ringing
(:mod:`gateway.lines.gpio`).

It hears the line too: from off hook to on hook the card's capture side (or
``capture.device``) is read into the line's :class:`~gateway.lines.hearing.Ears`
(:mod:`gateway.lines.alsa_capture`): call-progress tones, speech and
silence, the far end's keys; with a loop-current sense on GPIO, the far end
hanging up. The gateway's own keys are marked on the capture's timeline as
they are played, so their echo is not taken for the far end's.

Latency: the ALSA buffer is a few short periods (40 ms by default), so a tone
starts within that of the command, and each command waits until its last
sample has left the buffer, so success means the audio is on the line.

The PCM is opened non-blocking and every wait is bounded: a card whose clock
stopped (an I2S codec that lost its master clock, a USB card mid-unplug) is a
:class:`~gateway.errors.LineFault` after a fraction of a second, not a hung
worker. Underruns (``EPIPE``) are counted and recovered; any other ALSA error
ends the command with the ALSA error text, the line on hook and the PCM
closed, so the next command opens the device afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gateway.detect.countries import COUNTRIES
from gateway.errors import LineFault, LineInterrupted
from gateway.lines.alsa_capture import AlsaCapture, CaptureOptions
from gateway.lines.base import CallTiming, HookState, LineDriver, Party, Routing
from gateway.lines.gpio import GpioOptions, LineControl
from gateway.lines.hearing import CaptureLoop, Ears, Hears, LoopBreak
from gateway.speech import Synthesiser
from gateway.tones import SAMPLE_RATES, Samples, Timing, ToneEngine, TonePlan, route

log = logging.getLogger(__name__)

#: The most audio the ALSA buffer may hold: the first tone starts no later.
MAX_BUFFER_MS = 40
#: A device that takes no audio for this long (or 8 buffers, if longer) has stopped.
STALL_S = 0.5
SAMPLE_BYTES = 2  # S16_LE


@dataclass
class AlsaOptions:
    """``[[line]]`` keys for ``driver = "alsa"``."""

    #: ALSA PCM name as ``aplay -L`` lists it, e.g. "plughw:CARD=sndrpihifiberry,DEV=0".
    device: str = "default"
    rate: int = 48000
    #: Frames per ALSA period; default 10 ms at ``rate``.
    period_size: int | None = field(default=None, metadata={"min": 16, "max": 8192})
    periods: int = field(default=4, metadata={"min": 2, "max": 8})
    routing: Routing = field(default_factory=Routing)
    gpio: GpioOptions = field(default_factory=GpioOptions)
    call_timing: CallTiming = field(default_factory=CallTiming)
    #: The synthesiser for OzML Speak: a name on PATH or a path.
    espeak: str = "espeak-ng"
    speech_wpm: int = field(default=160, metadata={"min": 80, "max": 450})
    #: Whose call-progress tones the line hears; "" is ``[tones] country``.
    country: str = field(default="", metadata={"choices": ("", *sorted(COUNTRIES))})
    capture: CaptureOptions = field(default_factory=CaptureOptions)

    def __post_init__(self) -> None:
        if self.rate not in SAMPLE_RATES:
            raise ValueError(f"rate: {self.rate} is not one of {', '.join(map(str, SAMPLE_RATES))}")
        buffer_ms = self.frames_per_period * self.periods * 1000 / self.rate
        if buffer_ms > MAX_BUFFER_MS:
            raise ValueError(
                f"period_size: {self.periods} periods of {self.frames_per_period} frames at "
                f"{self.rate} Hz buffer {buffer_ms:g} ms; at most {MAX_BUFFER_MS} ms, or the "
                "first tone starts late"
            )
        try:
            self.capture.check_buffer(self.capture_rate)
        except ValueError as exc:
            raise ValueError(f"capture.{exc}") from None

    @property
    def frames_per_period(self) -> int:
        return self.period_size if self.period_size is not None else self.rate // 100

    @property
    def capture_rate(self) -> int:
        return self.capture.rate or self.rate

    @property
    def capture_device(self) -> str:
        return self.capture.device or self.device


_error_handler_lock = threading.Lock()
_error_handler: Any = None  # the ctypes callback: alive for as long as alsa-lib may call it


def _alsa_lib_errors_to_log() -> None:
    """alsa-lib's own error lines to this module's log (debug), not to stderr.

    alsa-lib prints an ``ALSA lib ...`` line to stderr for each step of a PCM
    name it cannot resolve (eight for a missing ``default``), before
    pyalsaaudio raises the one error that matters, which names the device.
    pyalsaaudio does not expose ``snd_lib_error_set_handler``, so it is set
    here once, on the libasound that pyalsaaudio uses.
    """
    global _error_handler
    with _error_handler_lock:
        if _error_handler is not None:
            return
        import ctypes

        try:
            # The soname pyalsaaudio links against: dlopen hands back that same library.
            set_handler = ctypes.CDLL("libasound.so.2").snd_lib_error_set_handler
        except (OSError, AttributeError) as exc:
            log.debug("alsa-lib's error lines stay on stderr: %s", exc)
            _error_handler = False
            return

        # void (*)(const char *file, int line, const char *function, int err,
        # const char *fmt, ...): the arguments after fmt are not read (ctypes
        # has no variadic callbacks), so the format is logged unexpanded.
        def handler(file: bytes | None, line: int, function: bytes | None, err: int,
                    fmt: bytes | None) -> None:
            with contextlib.suppress(Exception):  # an exception must not cross into C
                log.debug("alsa-lib %s:%d (%s): %s%s", _text(file), line, _text(function),
                          _text(fmt), f" ({os.strerror(abs(err))})" if err else "")

        prototype = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_char_p)
        _error_handler = prototype(handler)
        set_handler(_error_handler)


def _text(raw: bytes | None) -> str:
    return raw.decode(errors="replace") if raw else "?"


class PcmLike(Protocol):
    """What :func:`play` needs of an ``alsaaudio.PCM``."""

    def write(self, data: bytes | memoryview) -> int: ...
    def state(self) -> int: ...
    def avail(self) -> int: ...
    def drop(self) -> int: ...


@dataclass(frozen=True)
class PcmGeometry:
    rate: int
    channels: int
    period_frames: int
    buffer_frames: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * SAMPLE_BYTES

    @property
    def period_s(self) -> float:
        return self.period_frames / self.rate

    @property
    def buffer_s(self) -> float:
        return self.buffer_frames / self.rate


class Aborted(LineInterrupted):
    """The line went on hook (a hang-up, shutdown, a signal) while audio was playing."""


def play(
    pcm: PcmLike,
    data: bytes,
    geometry: PcmGeometry,
    *,
    running_state: int,
    keep_going: Callable[[], bool] = lambda: True,
    on_underrun: Callable[[], None] = lambda: None,
) -> None:
    """Write ``data`` to a non-blocking PCM and wait until it has played out.

    Raises LineFault when the device stops taking audio, Aborted when
    ``keep_going()`` turns false; ALSA's own errors propagate to the caller.
    """
    view = memoryview(data)
    total = len(data) // geometry.frame_bytes
    done = 0
    stall_s = max(STALL_S, 8 * geometry.buffer_s)
    progress = time.monotonic()
    while done < total:
        if not keep_going():
            raise Aborted("the line went on hook while audio was playing")
        start = done * geometry.frame_bytes
        written = pcm.write(view[start : start + geometry.buffer_frames * geometry.frame_bytes])
        now = time.monotonic()
        if written > 0:
            done += written
            progress = now
            continue
        if written < 0:
            # -EPIPE: an underrun; pyalsaaudio has prepared the stream again and
            # nothing of this chunk was written, so the same chunk goes again.
            on_underrun()
        if now - progress > stall_s:
            raise LineFault(f"the device took no audio for {stall_s:g} s (stalled)")
        if written == 0:
            # Buffer full: a period frees up in one period's time.
            time.sleep(geometry.period_s)
    # The bounded equivalent of snd_pcm_drain(): the buffer empties in at most
    # its own length of time once the device is running.
    deadline = time.monotonic() + geometry.buffer_s + stall_s
    while pcm.state() == running_state:
        avail = pcm.avail()
        if avail < 0 or avail >= geometry.buffer_frames:
            break
        if not keep_going():
            raise Aborted("the line went on hook while audio was playing")
        if time.monotonic() > deadline:
            raise LineFault("the device stopped playing with audio in its buffer (stalled)")
        time.sleep(min(geometry.period_s, (geometry.buffer_frames - avail) / geometry.rate))
    # Stop cleanly (SETUP state): the next write starts a fresh stream instead
    # of reporting the underrun that ends every sequence.
    pcm.drop()


class AlsaLine(LineDriver):
    """``driver = "alsa"``: an audio HAT (or any ALSA device) on a DAA, GPIO for hook
    and ring; it hears the line through the card's capture side."""

    driver_name = "alsa"

    def __init__(self, name: str, options: AlsaOptions, engine: ToneEngine) -> None:
        super().__init__(name)
        self.options = options
        self.call_timing = options.call_timing
        # The card's rate, whatever the gateway's [tones] rate: level, twist and
        # ramp come from the engine the call layer built.
        self.engine = ToneEngine(dataclasses.replace(engine.settings, rate=options.rate))
        self.control = LineControl(name, options.gpio, on_ring=lambda: self._ring(None),
                                   ring_timeout_ms=options.call_timing.ring_timeout_ms,
                                   on_loop_break=self._loop_break, line_clock=self._line_time)
        self.synthesiser = Synthesiser(options.espeak, options.speech_wpm)
        self.underruns = 0
        self.overruns = 0
        self.geometry: PcmGeometry | None = None
        self._pcm: Any = None
        self._alsa: Any = None
        self._opened = False
        # One writer on the PCM; close() takes it after on_hook() stops the writer.
        self._pcm_lock = threading.Lock()
        # Set by cut_output() from another thread: the audio playing stops, the
        # command ends as if done (the line stays off hook).
        self._cut = threading.Event()
        hears = Hears.NOTHING
        if options.capture.enabled:
            hears |= Hears.TONES | Hears.VOICE | Hears.KEYS
        if options.gpio.loop_current_pin is not None:
            hears |= Hears.LOOP
        if hears:
            self.ears = Ears(name, hears, options.country or "us", options.capture_rate,
                             cpc_ms=options.gpio.cpc_ms)
        self._capture: CaptureLoop | None = None
        if options.capture.enabled and self.ears is not None:
            self._capture = CaptureLoop(name, self._open_capture, self.ears)
        self._source: AlsaCapture | None = None
        self._off_hook_at = time.monotonic()
        self._dialling = False

    @property
    def capture_speed(self) -> float:
        """How many times real time a capture that delivers faster (a file
        PCM: tests, the bench) is read; a sound card delivers in real time."""
        return self._capture.speed if self._capture is not None else 1.0

    @capture_speed.setter
    def capture_speed(self, speed: float) -> None:
        if self._capture is None or not speed > 0:
            raise ValueError("capture_speed: needs a capture, and a speed above 0")
        self._capture.speed = speed
        self.wall_factor = 1.0 / speed

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        self.control.open()
        try:
            with self._pcm_lock:
                self._open_pcm()
        except BaseException:
            self.control.close()
            raise
        self._hook = HookState.ON_HOOK
        self._opened = True

    def close(self) -> None:
        self.on_hook()
        with self._pcm_lock:
            self._close_pcm()
        self.control.close()
        self._opened = False

    def _alsa_module(self) -> Any:
        if self._alsa is None:
            try:
                import alsaaudio
            except ImportError as exc:
                raise LineFault(
                    "pyalsaaudio is not installed "
                    "(pip install 'dtmf-gateway[alsa]'; it needs libasound2-dev to build)"
                ) from exc
            self._alsa = alsaaudio
            _alsa_lib_errors_to_log()
        return self._alsa

    def _open_pcm(self) -> None:
        if self._pcm is not None:
            return
        opts = self.options
        alsa = self._alsa_module()
        channels = opts.routing.channels
        try:
            pcm = alsa.PCM(
                type=alsa.PCM_PLAYBACK,
                mode=alsa.PCM_NONBLOCK,
                device=opts.device,
                rate=opts.rate,
                channels=channels,
                format=alsa.PCM_FORMAT_S16_LE,
                periodsize=opts.frames_per_period,
                periods=opts.periods,
            )
        except alsa.ALSAAudioError as exc:
            raise LineFault(f"ALSA device {opts.device!r}: {exc}") from exc
        info = pcm.info()
        got = (info["rate"], info["channels"], info["format_name"])
        if got != (opts.rate, channels, "S16_LE"):
            pcm.close()
            # pyalsaaudio takes whatever hw params the device settles on; a
            # hw: device does no conversion, so say what would work.
            raise LineFault(
                f"ALSA device {opts.device!r} plays {got[0]} Hz, "
                f"{got[1]} channel(s), {got[2]}, not {opts.rate} Hz, {channels} channel(s), "
                "S16_LE: use its plughw: name, or set rate and routing.channels to what it plays"
            )
        self.geometry = PcmGeometry(opts.rate, channels, int(info["period_size"]),
                                    int(info["buffer_size"]))
        if self.geometry.buffer_s * 1000 > MAX_BUFFER_MS + 1:
            log.warning("line %s: %s gave a %.0f ms buffer (asked for %d ms)", self.name,
                        opts.device, self.geometry.buffer_s * 1000,
                        opts.frames_per_period * opts.periods * 1000 // opts.rate)
        self._pcm = pcm

    def _close_pcm(self) -> None:
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            try:
                pcm.close()
            except Exception as exc:
                log.warning("line %s: closing %s: %s", self.name, self.options.device, exc)

    def _open_capture(self) -> AlsaCapture:
        opts = self.options
        self._source = AlsaCapture(self._alsa_module(), opts.capture_device, opts.capture_rate,
                                   opts.capture, on_overrun=self._overrun)
        return self._source

    # -- hook ------------------------------------------------------------------
    def off_hook(self) -> None:
        if not self._opened:
            raise LineFault("the line is not open")
        self._hook = HookState.OFF_HOOK
        try:
            # Hearing first: a capture device that is missing never seizes the line.
            self._off_hook_at = time.monotonic()
            if self._capture is not None:
                self._capture.start()
            elif self.ears is not None:
                self.ears.start()
            self.control.off_hook()
        except BaseException as exc:
            self.on_hook()
            if isinstance(exc, LineFault):
                self.fault = str(exc)
            raise

    def on_hook(self) -> None:
        self._hook = HookState.ON_HOOK
        self.control.on_hook()
        if self._capture is not None:
            self._capture.stop()
        elif self.ears is not None:
            self.ears.stop()
        self._source = None

    def place_call(
        self, dialed: str, timing: Timing, call_timing: CallTiming | None = None,
        *, no_answer_s: float | None = None,
    ) -> None:
        self._dialling = True
        try:
            super().place_call(dialed, timing, call_timing, no_answer_s=no_answer_s)
        finally:
            self._dialling = False

    # -- hearing -----------------------------------------------------------------
    def _line_time(self) -> float:
        """The line's time now: the capture's position, else seconds since off hook."""
        source = self._source
        return source.position if source is not None else time.monotonic() - self._off_hook_at

    def _loop_break(self, event: LoopBreak) -> None:
        ears = self.ears
        if ears is not None:
            ears.heard([event])

    def _mark_own_keys(self, plan: TonePlan) -> float | None:
        """The plan's keys, about to be played, on the capture's timeline;
        the line time by which all of the plan's echo is heard.

        The first sample played now is heard back no earlier than the
        capture's position (less the listener's ECHO_LEAD_S) and no later
        than what the capture buffer may hold unread plus what the playback
        buffer holds before it; the listener adds its echo tail.
        """
        ears, source, geometry = self.ears, self._source, self.geometry
        if ears is None or source is None or not ears.hears & Hears.KEYS:
            return None
        start = source.position
        lag = source.lag_s + (geometry.buffer_s if geometry is not None else 0.0)
        for key, on_s, off_s in plan.key_times():
            ears.own_key(key, start + on_s, start + off_s + lag)
        return start + plan.seconds + lag

    def _hear_until(self, line_s: float) -> None:
        """Wait until the capture has been heard up to ``line_s``: after our
        own dialling, so that the set-up counts the far end's answer from
        the end of its echo, not from when the last sample left the card
        (the capture's timeline lags by its buffer and a block)."""
        ears = self.ears
        if ears is None:
            return
        deadline = time.monotonic() + max(0.0, line_s - ears.time) * self.wall_factor + 1.0
        # A capture that stopped delivering is its own fault (CaptureLoop says so).
        while (ears.time < line_s and self._hook is HookState.OFF_HOOK
               and time.monotonic() < deadline):
            time.sleep(0.01)

    def _overrun(self) -> None:
        self.overruns += 1
        log.warning("line %s: overrun on %s (%d so far)", self.name,
                    self.options.capture_device, self.overruns)

    # -- signalling ------------------------------------------------------------
    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        self._require_off_hook("tones")
        heard_by = self._play(self.engine.render(plan), party, plan)
        if self._dialling and heard_by is not None:
            self._hear_until(heard_by)

    def speak(self, text: str, language: str | None = None, party: Party = Party.ALL) -> None:
        self._require_off_hook("speech")
        self._play(self.synthesiser.render(text, language, self.engine.settings), party)

    @property
    def audio_rate(self) -> int:
        return self.engine.settings.rate

    def play_audio(self, samples: Samples, party: Party = Party.ALL) -> None:
        self._require_off_hook("audio")
        self._play(samples, party)

    def cut_output(self) -> None:
        self._cut.set()

    def flash(self, ms: int) -> None:
        self._require_off_hook("a hook flash")
        self.control.flash(ms)

    def _require_off_hook(self, what: str) -> None:
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault(f"the line is on hook: {what} would reach nobody")

    def _play(self, mono: Samples, party: Party, plan: TonePlan | None = None) -> float | None:
        routing = self.options.routing
        frames = route(mono, routing.channels, routing.channels_for(party))
        data = np.ascontiguousarray(frames, dtype="<i2").tobytes()
        # Faults name the line first: the API reports them as that line's.
        where = f"ALSA device {self.options.device!r}"
        with self._pcm_lock:
            self._cut.clear()  # a cut before this audio began does not stop it
            try:
                self._open_pcm()  # after a fault: the device may be back
                assert self.geometry is not None
                heard_by = self._mark_own_keys(plan) if plan is not None else None
                try:
                    play(self._pcm, data, self.geometry,
                         running_state=self._alsa.PCM_STATE_RUNNING,
                         keep_going=lambda: (self._hook is HookState.OFF_HOOK
                                             and not self._cut.is_set()),
                         on_underrun=self._underrun)
                except Aborted:
                    if self._hook is not HookState.OFF_HOOK:
                        raise
                    # Cut short on purpose (a key over a menu's prompt): what
                    # is still buffered is dropped, and the command is done.
                    with contextlib.suppress(self._alsa.ALSAAudioError):
                        self._pcm.drop()
                    return heard_by
                except self._alsa.ALSAAudioError as exc:
                    raise LineFault(f"{where}: {exc}") from exc
                except LineFault as exc:
                    raise LineFault(f"{where}: {exc}") from exc
            except BaseException as exc:
                # Whatever went wrong, the line does not stay seized on a
                # device in an unknown state; the next command reopens it.
                self.on_hook()
                self._close_pcm()
                if isinstance(exc, LineFault):
                    self.fault = str(exc)
                raise
        return heard_by

    def _underrun(self) -> None:
        self.underruns += 1
        log.warning("line %s: underrun on %s (%d so far)", self.name, self.options.device,
                    self.underruns)

    # -- health ------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        out = super().status()
        out["device"] = self.options.device
        geometry = self.geometry
        if geometry is not None:
            out["rate"] = geometry.rate
            out["channels"] = geometry.channels
            out["buffer_ms"] = round(geometry.buffer_s * 1000, 1)
        out["underruns"] = self.underruns
        out["overruns"] = self.overruns
        source = self._source
        if self._capture is not None:
            capture: dict[str, object] = {
                "device": self.options.capture_device, "rate": self.options.capture_rate,
                "channel": self.options.capture.channel}
            if source is not None:
                capture["buffer_ms"] = round(source.lag_s * 1000, 1)
            out["capture"] = capture
        out.update(self.control.status())
        return out
