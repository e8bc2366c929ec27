"""A simulated ITU-T V.253 voice modem on a pseudo-terminal.

The driver opens the pty's slave side through pyserial exactly as it opens
``/dev/ttyACM0``, so everything between the driver and the wire is real: tty
line discipline, framing, echo, timing. The simulator answers on the master
side the way a Hayes-style voice modem does:

- command lines ``AT...<CR>``, echoed until ``ATE0``, answered
  ``<CR><LF>text<CR><LF>`` (V.250 verbose results);
- ``Z``, ``E``, ``H``, ``A``, ``D``, ``I`` and the harmless ``V1 Q0 L M X S &``;
  ``+FCLASS``, ``+VTD``, ``+VTS``, ``+VLS``, ``+VCID``, ``+GMI/+GMM/+GMR``;
  anything else, a malformed ``+VTS`` list, ``+VTS`` outside voice mode
  (``+FCLASS=8``) and a command line longer than its buffer are ``ERROR``,
  as on real modems;
- ``+VTS`` tones take their real time before ``OK``, and are recorded with
  their durations (:attr:`SimulatedModem.tones`) and rendered as audio by the
  tone engine (:meth:`SimulatedModem.render`; :class:`SimulatedModemRecorder`
  makes each call's WAV of it);
- closing the port (the last slave file descriptor) is the simulator's DTR
  drop: like a modem set to ``&D2`` it goes on hook.

- what its line side hears, as V.253 voice-mode event reports (``<DLE>``
  and a code) and unsolicited result codes: a far end (:class:`FarEnd`,
  per dialled number, from :attr:`SimulatedModem.far_end`) gives the dial
  its result and a timeline of what happens on the line after it (dial
  tone, ringback, busy, silence, quiet, a loop-current break, keys, the
  call dropped), which the modem reports at those moments while it is
  off hook; keys in the form its chipset uses (:attr:`SimulatedModem.dtmf_form`),
  and, with :attr:`SimulatedModem.hears_own_keys`, its own ``+VTS`` keys too,
  as a modem whose receiver hears its transmitter does.

Tests drive the failure modes: :meth:`~SimulatedModem.ring`,
:meth:`~SimulatedModem.hang` (stop answering), :meth:`~SimulatedModem.vanish`
(the USB modem is unplugged: the pty is closed and its stable name removed,
as udev removes a symlink) and :meth:`~SimulatedModem.reappear`.

The codes are typed in here from V.253 and the modem manuals, not taken
from the driver they test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import logging
import os
import select
import shutil
import tempfile
import threading
import time
import tty
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from gateway.keys import KEYS
from gateway.lines.recording import RenderedRecorder
from gateway.tones import Samples, ToneEngine

log = logging.getLogger(__name__)

HOOK_FLASH = "!"
VOICE_CLASS = 8
#: V.250 asks a DCE to take at least 40 characters after ``AT``; many take more.
DEFAULT_BUFFER = 40
#: Factory +VTD of the simulation (in 10 ms units); real modems differ.
FACTORY_VTD = 10
#: V.253's +VTS frequency range: 0 (no tone) or 200-3000 Hz; durations 0-255.
TONE_HZ = (200, 3000)
MAX_UNITS = 255

DLE = b"\x10"
#: V.253 simple event reports (DCE to DTE), by what the line side heard.
EVENT_CODES = {
    "dial": b"d",
    "busy": b"b",
    "ringback": b"r",
    "silence": b"s",
    "quiet": b"q",
    "loop": b"l",
}
#: Result codes a modem sends on its own when it drops a call.
DROP_RESULTS = ("NO CARRIER", "BUSY", "NO ANSWER")
#: Results of ``ATD`` in voice mode (V.250, V.253's VCON).
DIAL_RESULTS = ("VCON", "OK", "CONNECT", "BUSY", "NO DIALTONE", "NO DIAL TONE", "NO CARRIER",
                "NO ANSWER")
#: ``dtmf_form``: a key as ``<DLE>5`` alone, or bracketed ``<DLE>/ <DLE>5 ... <DLE>~``
#: (V.253; USRobotics 5637), with the key repeated while it lasts (Intel's chipsets).
DTMF_FORMS = ("plain", "bracketed")
#: The end of a bracketed key: ``~``, or DEL on Intel's chipsets.
DTMF_END = b"~"
#: A DTMF receiver needs this much of a key before it reports it.
DTMF_DETECT_S = 0.04
#: A bracketing modem repeats the key this often while it lasts.
DTMF_REPEAT_S = 0.1


@dataclass(frozen=True)
class FarEvent:
    """Something the modem's line side hears, ``at`` seconds after the modem
    went off hook to dial: one of :data:`EVENT_CODES`, a key (``"5"``,
    sounding ``ms``), or one of :data:`DROP_RESULTS` (the modem reports it
    and goes on hook: the call is gone)."""

    at: float
    what: str
    ms: int = 100

    def __post_init__(self) -> None:
        if not (self.what in EVENT_CODES or self.what in DROP_RESULTS
                or (len(self.what) == 1 and self.what in KEYS)):
            raise ValueError(f"{self.what!r} is not something a modem reports")
        if self.at < 0 or self.ms <= 0:
            raise ValueError("a far event needs at >= 0 and ms > 0")


@dataclass(frozen=True)
class FarEnd:
    """What dialling a number comes to: the dial's ``result`` after
    ``result_at`` seconds, and the line's ``events`` from going off hook on
    (those from before the result are reported during the dial)."""

    result: str = "VCON"
    result_at: float = 0.05
    events: tuple[FarEvent, ...] = ()

    def __post_init__(self) -> None:
        if self.result not in DIAL_RESULTS:
            raise ValueError(f"{self.result!r} is not a dial result")


class FarEndSource(Protocol):
    """Where the modem learns what a dialled number does. The simulated
    exchange will be one (its far end's timeline turned into these events);
    until then :class:`ScriptedFarEnds`."""

    def dialled(self, number: str) -> FarEnd | None:
        """The far end of ``number``; None: the modem's own defaults."""


@dataclass
class ScriptedFarEnds:
    """Far ends by dialled number (as the modem received it: commas for pauses)."""

    numbers: Mapping[str, FarEnd] = field(default_factory=dict)

    def dialled(self, number: str) -> FarEnd | None:
        return self.numbers.get(number)


class _Timeline:
    """Writes to the host due at given moments, from a thread of its own;
    :meth:`clear` drops those not yet due (the modem went on hook)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._count = 0
        self._running = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="modem-sim-line", daemon=True)
        self._thread.start()

    def at(self, when: float, action: Callable[[], None]) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._due, (when, self._count, action))
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._due.clear()

    def settle(self, until: float, timeout: float = 2.0) -> None:
        """Wait until what was due by ``until`` has been written, so that the
        host reads it in time order with what the modem writes next."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._running or (self._due and self._due[0][0] <= until)) and (
                    not self._stopping and time.monotonic() < deadline):
                self._cond.wait(0.01)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._due.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (
                        not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._due
                                    else self._due[0][0] - time.monotonic())
                if self._stopping:
                    return
                _, _, action = heapq.heappop(self._due)
                self._running = True
            try:
                action()
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class PlayedTone:
    """One element of an ``AT+VTS`` list as the modem played it."""

    #: ``time.monotonic()`` at which it started.
    at: float
    ms: int
    #: The DTMF key (or ``!`` for a hook flash); ``None`` for ``[f1,f2,dur]``.
    key: str | None = None
    frequencies: tuple[int, int] = (0, 0)
    #: The modem was off hook, so the tone reached the line.
    on_line: bool = True

    @property
    def is_silence(self) -> bool:
        return self.key is None and self.frequencies == (0, 0)


def _cut(tone: PlayedTone, at: float) -> PlayedTone:
    """``tone`` as far as it sounded before ``at``."""
    ms = min(tone.ms, max(0, round((at - tone.at) * 1000)))
    return tone if ms == tone.ms else dataclasses.replace(tone, ms=ms)


class _Syntax(Exception):
    """A command the modem answers with ERROR."""


class SimulatedModem:
    """A voice modem on a pty; :attr:`port` is the stable name to open.

    ``buffer`` is the command-line length (after ``AT``) the modem accepts;
    ``silence_tones=False`` makes it reject ``[0,0,dur]`` elements, as modems
    without general tone generation do.
    """

    def __init__(self, buffer: int = DEFAULT_BUFFER, silence_tones: bool = True) -> None:
        self.buffer = buffer
        self.silence_tones = silence_tones
        #: Final result of an ``ATD`` in voice mode (``BUSY``, ``NO DIALTONE``...)
        #: to a number :attr:`far_end` does not know.
        self.dial_result = "VCON"
        #: Seconds such a dial takes before its result.
        self.dial_seconds = 0.05
        #: What each dialled number does (None: every number as above).
        self.far_end: FarEndSource | None = None
        #: How keys the line side hears are reported (:data:`DTMF_FORMS`) ...
        self.dtmf_form = "plain"
        #: ... and what ends a bracketed one (``~``, or ``\x7f`` as Intel's do).
        self.dtmf_end = DTMF_END
        #: The modem's receiver hears its own ``+VTS`` keys and reports them.
        self.hears_own_keys = False
        #: ``(time.monotonic(), bytes)`` of every report sent to the host.
        self.reports: list[tuple[float, bytes]] = []
        self._line_side: _Timeline | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="modem-sim-"))
        self.port = str(self._dir / "ttyMODEM")
        self._lock = threading.Lock()  # state shared with the test thread
        self._io_lock = threading.Lock()  # the master fd
        self._master: int | None = None
        self._connected = False
        self._wake_r, self._wake_w = os.pipe()
        # Whoever started it and forgot to close it: the directory goes at exit.
        self._release = weakref.finalize(self, _release, self._dir, (self._wake_r, self._wake_w))
        self._interrupt = threading.Event()
        self._vanish_requested = False
        self._vanished = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pending: list[str] = []
        self._line = bytearray()
        self.commands: list[str] = []
        self.tones: list[PlayedTone] = []
        self.dialled: list[str] = []
        #: ``(time.monotonic(), off_hook)`` for every hook change, like a MockPin's history.
        self.hook_history: list[tuple[float, bool]] = []
        self.hung = False
        self._power_on()

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> SimulatedModem:
        self._open_pty()
        self._line_side = _Timeline()
        self._thread = threading.Thread(target=self._run, name="modem-sim", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the modem and remove its pty. Safe to call twice."""
        self._stopping = True
        self._interrupt.set()
        self._wake()
        if self._line_side is not None:
            self._line_side.close()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self._close_pty()
        self._release()
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> SimulatedModem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _power_on(self) -> None:
        self.echo = True
        self.fclass = 0
        self.vtd = FACTORY_VTD
        self._set_hook(False)

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw until pyserial configures it, so nothing is echoed or translated
        # by the line discipline behind the simulator's back.
        tty.setraw(slave)
        name = os.ttyname(slave)
        # Nobody holds the slave open: its last close is how DTR drop shows.
        os.close(slave)
        link = self._dir / "ttyMODEM.new"
        link.unlink(missing_ok=True)
        link.symlink_to(name)
        link.replace(self.port)
        with self._io_lock:
            self._master = master
            self._connected = False
        self._wake()

    def _close_pty(self) -> None:
        with self._io_lock:
            if self._master is not None:
                with contextlib.suppress(OSError):
                    os.close(self._master)
                self._master = None
            self._connected = False
        Path(self.port).unlink(missing_ok=True)

    # -- what tests do to the modem --------------------------------------------
    def ring(self) -> bool:
        """One ring burst: ``RING`` to the host. False when nobody has the port open."""
        if self.off_hook:
            return False
        return self._send_if_connected("RING")

    def hear(self, *events: FarEvent) -> None:
        """The line side hears ``events``, timed from now (a caller's keys in
        an answered incoming call); reported while the modem stays off hook."""
        self._schedule(events, time.monotonic())

    def interject(self, text: str) -> None:
        """Send ``text`` as an unsolicited line just before the next final result."""
        with self._lock:
            self._pending.append(text)

    def hang(self) -> None:
        """Stop answering (firmware hung): input is read and dropped, nothing echoes."""
        self.hung = True

    def recover(self) -> None:
        self.hung = False

    def vanish(self, timeout: float = 2.0) -> None:
        """The modem is unplugged: its pty and its stable name disappear."""
        self._vanished.clear()
        self._vanish_requested = True
        self._interrupt.set()
        self._wake()
        if not self._vanished.wait(timeout):
            raise TimeoutError("the simulated modem did not vanish")

    def reappear(self) -> None:
        """Plugged in again: a new pty behind the same stable name, freshly powered."""
        with self._lock:
            self._power_on()
            self.hung = False
            self._line.clear()
        self._interrupt.clear()
        self._open_pty()

    @property
    def off_hook(self) -> bool:
        return bool(self.hook_history) and self.hook_history[-1][1]

    def vts_commands(self) -> list[str]:
        """Every ``AT+VTS`` command line received, in order."""
        with self._lock:
            return [c for c in self.commands if c.upper().startswith("AT+VTS")]

    def mark(self) -> int:
        """A position in :attr:`tones`, for rendering what was played after it."""
        with self._lock:
            return len(self.tones)

    def render(self, engine: ToneEngine, since: int = 0,
               max_samples: int | None = None) -> Samples:
        """What reached the line (tones played off hook) as mono PCM, from its
        first tone and at most ``max_samples`` long.

        Elements of one ``+VTS`` command follow each other without a break;
        between commands the line was quiet for as long as really passed, so
        gaps and pauses the driver timed itself are in the audio too.
        """
        with self._lock:
            played = [t for t in self.tones[since:] if t.on_line]
        if not played:
            return np.zeros(0, dtype=np.int16)
        settings = engine.settings
        limit = max_samples if max_samples is not None else 2**62
        spans = []
        for tone in played:
            begin_ms = (tone.at - played[0].at) * 1000
            begin = settings.samples(begin_ms)
            if begin >= limit:
                break
            spans.append((begin, min(limit, settings.samples(begin_ms + tone.ms)), tone))
        out = np.zeros(max(end for _, end, _ in spans), dtype=np.int16)
        for begin, end, tone in spans:
            if end <= begin or tone.is_silence or tone.key == HOOK_FLASH:
                continue  # a hook flash breaks the loop: no audio
            if tone.key is not None:
                out[begin:end] = engine.burst(tone.key, end - begin)
            else:
                hz = tuple(float(f) for f in tone.frequencies if f)
                audio = engine.tone(hz, (end - begin) * 1000 / settings.rate)
                out[begin : begin + len(audio)] = audio[: end - begin]
        return out

    # -- the modem's own thread -----------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._stopping:
            if self._vanish_requested:
                self._close_pty()
                self._vanish_requested = False
                self._vanished.set()
                continue
            with self._io_lock:
                master = self._master
            watch = [self._wake_r] if master is None else [self._wake_r, master]
            ready, _, _ = select.select(watch, [], [], 0.5)
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
            if master is None or master not in ready:
                continue
            try:
                data = os.read(master, 1024)
            except OSError:
                data = b""
            if not data:
                # EIO: no process has the slave open (the host closed the port).
                self._host_closed()
                time.sleep(0.02)
                continue
            self._connected = True
            self._receive(data)

    def _host_closed(self) -> None:
        if self._connected:
            self._connected = False
            # &D2: the host dropped DTR, so hang up.
            self._set_hook(False)

    def _receive(self, data: bytes) -> None:
        if self.echo and not self.hung:
            self._write(data)
        for byte in data:
            if byte == 0x0D:  # S3, the command line terminator
                line = self._line.decode("ascii", "replace")
                self._line.clear()
                self._command_line(line)
            elif byte == 0x08:  # S5, backspace
                del self._line[-1:]
            elif byte != 0x0A:
                self._line.append(byte)

    def _write(self, data: bytes) -> None:
        with self._io_lock:
            if self._master is None:
                return
            with contextlib.suppress(OSError):
                os.write(self._master, data)

    def _send(self, text: str) -> None:
        self._write(b"\r\n" + text.encode("ascii") + b"\r\n")

    def _send_if_connected(self, text: str) -> bool:
        with self._io_lock:
            if self._master is None:
                return False
            polled = select.poll()
            polled.register(self._master, select.POLLOUT)
            if any(event & select.POLLHUP for _, event in polled.poll(0)):
                return False
        self._send(text)
        return True

    def _set_hook(self, off_hook: bool) -> None:
        history = self.hook_history
        if not history or history[-1][1] != off_hook:
            history.append((time.monotonic(), off_hook))
        if not off_hook and self._line_side is not None:
            # On hook the line side hears nothing more of that call.
            self._line_side.clear()

    # -- what the line side hears, reported ------------------------------------------
    def _schedule(self, events: tuple[FarEvent, ...] | list[FarEvent], began: float) -> None:
        for event in events:
            at = began + event.at
            if event.what in EVENT_CODES:
                self._report_at(at, DLE + EVENT_CODES[event.what])
            elif event.what in DROP_RESULTS:
                self._at(at, functools.partial(self._drop, event.what))
            else:
                self._key_at(at, event.what, event.ms / 1000)

    def _key_at(self, at: float, key: str, seconds: float) -> None:
        code = DLE + key.encode("ascii")
        detected = at + min(DTMF_DETECT_S, seconds)
        if self.dtmf_form == "plain":
            self._report_at(detected, code)
            return
        self._report_at(detected, DLE + b"/" + code)
        repeat = detected + DTMF_REPEAT_S
        while repeat < at + seconds:
            self._report_at(repeat, code)
            repeat += DTMF_REPEAT_S
        self._report_at(at + seconds, DLE + self.dtmf_end)

    def _at(self, when: float, action: Callable[[], None]) -> None:
        if self._line_side is not None:
            self._line_side.at(when, action)

    def _report_at(self, when: float, data: bytes) -> None:
        self._at(when, functools.partial(self._report, data))

    def _report(self, data: bytes) -> None:
        if not self.off_hook or self.hung:
            return
        with self._lock:
            self.reports.append((time.monotonic(), data))
        self._write(data)

    def _drop(self, text: str) -> None:
        if not self.off_hook or self.hung:
            return
        with self._lock:
            self.reports.append((time.monotonic(), text.encode("ascii")))
        self._send(text)
        self._set_hook(False)

    # -- command interpreter ------------------------------------------------------
    def _command_line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        with self._lock:
            self.commands.append(text)
        if self.hung or text[:2] not in ("AT", "at"):
            return  # V.250: a line not starting with AT is ignored
        info: list[str] = []
        try:
            result = self._execute(text[2:], info)
        except _Syntax:
            result = "ERROR"
        if self.hung or self._interrupt.is_set():
            return  # hung or unplugged while the command ran
        for text_line in info:
            self._send(text_line)
        with self._lock:
            pending, self._pending = self._pending, []
        for unsolicited in pending:
            self._send(unsolicited)
        self._send(result)

    def _execute(self, body: str, info: list[str]) -> str:
        if len(body) > self.buffer:
            raise _Syntax("command line overflow")
        result = "OK"
        pos = 0
        while pos < len(body):
            char = body[pos].upper()
            if char in " ;":
                pos += 1
            elif char == "D":
                return self._dial(body[pos + 1 :])
            elif char == "+":
                pos, result = self._extended(body, pos + 1, info)
            elif char == "&":
                if pos + 1 >= len(body) or not body[pos + 1].isalpha():
                    raise _Syntax("& needs a letter")
                pos = _number(body, pos + 2)[1]  # &F, &D2...: accepted, no effect here
            elif char == "S":
                pos = self._s_register(body, pos + 1, info)
            elif char in "EHZVQAILMX":
                value, pos = _number(body, pos + 1)
                result = self._basic(char, value, info)
            else:
                raise _Syntax(f"unknown command {char!r}")
        return result

    def _basic(self, char: str, value: int, info: list[str]) -> str:
        if char == "E":
            self.echo = _choice(value, (0, 1)) == 1
        elif char == "H":
            self._set_hook(_choice(value, (0, 1)) == 1)
        elif char == "Z":
            self._power_on()
        elif char == "V":
            _choice(value, (1,))  # the simulation speaks verbose results only
        elif char == "Q":
            _choice(value, (0,))
        elif char == "A":
            self._set_hook(True)
            return "VCON" if self.fclass == VOICE_CLASS else "NO CARRIER"
        elif char == "I":
            info.append("Simulated V.253 voice modem")
        return "OK"

    def _s_register(self, body: str, pos: int, info: list[str]) -> int:
        register, pos = _number(body, pos)
        if pos < len(body) and body[pos] == "?":
            info.append("000")
            return pos + 1
        if pos < len(body) and body[pos] == "=":
            value, pos = _number(body, pos + 1)
            if not 0 <= value <= 255:
                raise _Syntax("S-register value")
            return pos
        raise _Syntax(f"S{register} needs = or ?")

    def _extended(self, body: str, pos: int, info: list[str]) -> tuple[int, str]:
        end = pos
        while end < len(body) and body[end] not in "=?;":
            end += 1
        name = body[pos:end].upper()
        if end < len(body) and body[end : end + 2] == "=?":
            kind, value, end = "test", "", end + 2
        elif end < len(body) and body[end] == "?":
            kind, value, end = "read", "", end + 1
        elif end < len(body) and body[end] == "=":
            stop = body.find(";", end)
            stop = len(body) if stop < 0 else stop
            kind, value, end = "set", body[end + 1 : stop].strip(), stop
        else:
            kind, value = "action", ""
        return end, self._extended_command(name, kind, value, info)

    def _extended_command(self, name: str, kind: str, value: str, info: list[str]) -> str:
        if name in ("GMI", "GMM", "GMR") and kind == "action":
            info.append({"GMI": "gateway", "GMM": "modem_sim", "GMR": "1"}[name])
        elif name == "FCLASS":
            if kind == "read":
                info.append(str(self.fclass))
            elif kind == "test":
                info.append("0,1,8")
            elif kind == "set":
                self.fclass = _choice(_integer(value), (0, 1, VOICE_CLASS))
            else:
                raise _Syntax("+FCLASS needs a value")
        elif name == "VTD":
            if kind == "read":
                info.append(str(self.vtd))
            elif kind == "test":
                info.append(f"(0-{MAX_UNITS})")
            elif kind == "set":
                self.vtd = _units(value, default=self.vtd)
            else:
                raise _Syntax("+VTD needs a value")
        elif name == "VTS":
            if kind != "set" or self.fclass != VOICE_CLASS:
                raise _Syntax("+VTS only as a set command in voice mode")
            self._play(self._tone_list(value))
        elif name == "VLS" and self.fclass == VOICE_CLASS and kind == "set":
            # +VLS=0 is the line released; other values connect the line.
            self._set_hook(_choice(_integer(value), range(0, 16)) != 0)
        elif name == "VCID" and kind == "set":
            _choice(_integer(value), (0, 1, 2))
        else:
            raise _Syntax(f"+{name} {kind}")
        return "OK"

    def _tone_list(self, value: str) -> list[tuple[str | None, tuple[int, int], int]]:
        """V.253 +VTS list: ``X``, ``{X,dur}``, ``[f1,f2,dur]`` separated by commas."""
        elements: list[tuple[str | None, tuple[int, int], int]] = []
        pos = 0
        while True:
            if pos >= len(value):
                raise _Syntax("empty +VTS element")
            opener = value[pos]
            if opener in "[{":
                close = value.find("]" if opener == "[" else "}", pos)
                if close < 0:
                    raise _Syntax("unclosed +VTS element")
                fields = [f.strip() for f in value[pos + 1 : close].split(",")]
                pos = close + 1
                if opener == "{":
                    if len(fields) != 2 or fields[0].upper() not in KEYS + HOOK_FLASH:
                        raise _Syntax("{X,dur} element")
                    elements.append(
                        (fields[0].upper(), (0, 0), _units(fields[1], default=self.vtd))
                    )
                else:
                    if len(fields) > 3:
                        raise _Syntax("[f1,f2,dur] element")
                    fields += [""] * (3 - len(fields))
                    tone = (_frequency(fields[0]), _frequency(fields[1]))
                    if tone == (0, 0) and not self.silence_tones:
                        raise _Syntax("this modem has no silence element")
                    elements.append((None, tone, _units(fields[2], default=self.vtd)))
            elif opener.upper() in KEYS + HOOK_FLASH:
                elements.append((opener.upper(), (0, 0), self.vtd))
                pos += 1
            else:
                raise _Syntax(f"+VTS element {opener!r}")
            if pos == len(value):
                return elements
            if value[pos] != ",":
                raise _Syntax("+VTS elements are separated by commas")
            pos += 1

    def _play(self, elements: list[tuple[str | None, tuple[int, int], int]]) -> None:
        began = time.monotonic()
        offset = 0.0
        played: list[PlayedTone] = []
        for key, frequencies, units in elements:
            ms = units * 10
            played.append(PlayedTone(began + offset, ms, key, frequencies, self.off_hook))
            offset += ms / 1000
        with self._lock:
            self.tones.extend(played)
        if self.hears_own_keys:
            for tone in played:
                if tone.on_line and tone.key is not None and tone.key != HOOK_FLASH:
                    self._key_at(tone.at, tone.key, tone.ms / 1000)
        # The tones take their time before the modem answers. DTR is a wire,
        # not a command: a host that drops it (closes the port) hangs the
        # modem up at once (&D2), mid-tone, and what was left is never played.
        dropped = self._wait_unless_dtr_drops(offset)
        if dropped is not None:
            with self._lock:
                self.tones[:] = [_cut(t, dropped) for t in self.tones if t.at < dropped]
            self._host_closed()
        elif self._line_side is not None:
            # What the receiver heard of the tones reaches the host before the OK.
            self._line_side.settle(began + offset)

    def _wait_unless_dtr_drops(self, seconds: float) -> float | None:
        """Wait ``seconds``; the moment the host closed the port, if it did."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._interrupt.is_set():
                return None
            with self._io_lock:
                master = self._master
            if master is None:
                return None
            polled = select.poll()
            polled.register(master, select.POLLHUP)
            if polled.poll(min(left, 0.02) * 1000):
                return time.monotonic()

    def _dial(self, text: str) -> str:
        number = "".join(c for c in text.upper() if c in KEYS + ",")
        if any(c not in KEYS + ",TPW@!;" for c in text.upper().replace(" ", "")):
            raise _Syntax("dial string")
        with self._lock:
            self.dialled.append(number)
        began = time.monotonic()
        self._set_hook(True)
        far = self.far_end.dialled(number) if self.far_end is not None else None
        if far is None:
            far = FarEnd(self.dial_result, self.dial_seconds)
        if self.fclass != VOICE_CLASS:
            far = FarEnd("NO CARRIER", far.result_at)
        self._schedule(far.events, began)
        if self._wait_unless_dtr_drops(far.result_at) is not None:
            self._host_closed()
        elif self._line_side is not None:
            # What the line side heard during the dial reaches the host before its result.
            self._line_side.settle(began + far.result_at)
        if far.result not in ("OK", "VCON", "CONNECT"):
            self._set_hook(False)
        return far.result


class SimulatedModemRecorder(RenderedRecorder[int]):
    """Each call's ``<CallId>.wav``: what the simulated modem played between
    the call's start and end, rendered by the tone engine when it ends (at
    most ``max_seconds`` of it)."""

    def __init__(self, line: str, simulator: SimulatedModem, engine: ToneEngine,
                 directory: Path, max_seconds: float) -> None:
        super().__init__(line, directory, engine.settings.rate, max_seconds, simulator.mark,
                         lambda since, limit: simulator.render(engine, since=since,
                                                               max_samples=limit))
        self.simulator = simulator


def _release(directory: Path, fds: tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    shutil.rmtree(directory, ignore_errors=True)


def _number(body: str, pos: int) -> tuple[int, int]:
    """Digits at ``pos`` (none is 0, as V.250 defaults basic parameters)."""
    end = pos
    while end < len(body) and body[end].isdigit():
        end += 1
    return (int(body[pos:end]) if end > pos else 0), end


def _integer(text: str) -> int:
    if not text.isdigit():
        raise _Syntax(f"{text!r} is not a number")
    return int(text)


def _choice(value: int, allowed: range | tuple[int, ...]) -> int:
    if value not in allowed:
        raise _Syntax(f"value {value}")
    return value


def _units(text: str, default: int) -> int:
    if text == "":
        return default
    return _choice(_integer(text), range(MAX_UNITS + 1))


def _frequency(text: str) -> int:
    if text == "":
        return 0
    hz = _integer(text)
    if hz != 0 and not TONE_HZ[0] <= hz <= TONE_HZ[1]:
        raise _Syntax(f"{hz} Hz")
    return hz
