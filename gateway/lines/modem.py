"""The ``modem`` line: DTMF through a serial voice modem (ITU-T V.253 commands).

A USB voice modem is line interface, hook switch, dialler and DTMF generator in
one, so this driver only speaks AT commands. The port is a pyserial URL:
``/dev/ttyACM0``, ``socket://host:port`` (a serial server), ``spy:///dev/ttyACM0``
(the same port with a wire trace on stderr), ``loop://``. For ``sim://``,
:func:`gateway.lines.build_line` starts the simulated modem of
:mod:`gateway.lines.modem_sim` on a pseudo-terminal and gives the driver its
port; the driver never knows it is talking to a simulation.

On the wire (V.250): a command line is ``AT<body><CR>``. Until ``ATE0`` the
modem echoes it; then come information text and one final result code, each
framed ``<CR><LF>...<CR><LF>``. ``RING`` (in voice mode also ``<DLE>R``)
arrives unsolicited at any moment, inside another command's answer too.

Hearing: in voice mode the modem reports what its line side hears as
``<DLE>`` and one character (V.253): dial tone, busy, ringback, silence,
quiet, a loop-current interruption, the far end's keys. ``reports`` says
which of them this modem sends; :class:`VoiceReports` turns them into the
line events of :mod:`gateway.lines.hearing`, timed in the modem's real time
since the line went off hook, for the line's :class:`Ears`: an outbound
call's set-up follows them (:meth:`ModemLine.place_call`), and once the
call is up they tell the call layer that the far end left or pressed a key.

Faults: no answer within a command's timeout, ``ERROR`` where ``OK`` was
needed, or the port failing (a USB unplug) raise :class:`LineFault`. The line
then goes on hook as well as it can: ``ATH0`` while the modem still answers,
and in every case the port is closed, which lowers DTR (with HUPCL, the Linux
default) and hangs up a modem set to ``&D2``. The next command opens the port
afresh and runs the whole initialisation again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import serial
from serial.threaded import LineReader, ReaderThread

from gateway.detect import Dtmf, Silence, ToneEnd, Voice
from gateway.detect import Tone as HeardTone
from gateway.errors import CallFailed, LineFault, LineInterrupted
from gateway.keys import KEYS, Pause, Tone, parse_keys
from gateway.lines.base import CallTiming, HookState, LineDriver, Party
from gateway.lines.hearing import (
    CallProgress,
    Disconnected,
    Ears,
    Hears,
    LineEvent,
    ProgressRules,
)
from gateway.lines.recording import DEFAULT_MAX_RECORD_S, MAX_RECORD_S
from gateway.tones import Timing, ToneEngine, TonePlan

log = logging.getLogger(__name__)

#: ``port`` for the simulated modem (see :func:`gateway.lines.build_line`).
SIMULATED_PORT = "sim://"
#: How long a hang-up waits for another thread's command to let go of the
#: port before it drops DTR instead.
HANG_UP_WAIT_S = 0.2
DLE = 0x10
#: V.253 voice mode.
VOICE_CLASS = 8
#: +VTS durations ({X,dur}, [f1,f2,dur]) are in 10 ms units, 0-255.
VTS_UNIT_MS = 10
VTS_MAX_UNITS = 255

#: Final result codes that end a command's answer (V.250, and V.253's VCON).
FINAL_RESULTS = frozenset(
    {"OK", "ERROR", "CONNECT", "VCON", "NO CARRIER", "BUSY", "NO DIALTONE", "NO DIAL TONE",
     "NO ANSWER"}
)
#: Dial results that mean the far end is reached (or the modem cannot tell).
CONNECTED = ("OK", "VCON", "CONNECT")
#: Dial results that mean the call failed, and the state code 402 reports for them.
CALL_FAILURES = {
    "BUSY": "Busy",
    "NO DIALTONE": "NoDialTone",
    "NO DIAL TONE": "NoDialTone",
    # In voice mode NO CARRIER is what a modem says after ringback went unanswered.
    "NO CARRIER": "NoAnswer",
    "NO ANSWER": "NoAnswer",
}


def is_final(text: str) -> bool:
    return (
        text in FINAL_RESULTS
        or text.startswith("CONNECT ")
        or text.startswith(("+CME ERROR", "+CMS ERROR"))
    )


#: ``vtd_unit_ms``: V.253's 10 ms, or 3GPP 27.007's 100 ms.
VTD_UNITS_MS = (10, 100)
#: ``gap_mode``: gaps as the modem's own [0,0,dur] silences, or timed by the driver.
GAP_MODES = ("tones", "driver")
#: The default ``call_timing.answer_wait_ms``.
ANSWER_WAIT_MS = 2000

#: V.253 brackets a DTMF report: ``<DLE>/`` where the tone starts, ``<DLE>~``
#: where it ends (Intel's chipsets end it with ``<DLE><DEL>``).
DTMF_START = "/"
DTMF_ENDS = "~\x7f"
#: ``reports``: what a V.253 voice modem reports in voice mode as ``<DLE>``
#: and one character (V.253's simple event reports), by the name the
#: configuration gives it.
REPORTS: dict[str, str] = {
    "dial": "d",
    "busy": "b",
    "ringback": "r",
    "silence": "s",
    "quiet": "q",
    "loop": "l",
    "keys": KEYS + DTMF_START + DTMF_ENDS,
}
#: Those the USRobotics, ZyXEL and Hayes voice command references list (not
#: each in every one of them). ``r`` is not among them: some chipsets use it
#: only as the host's "resume" command.
DEFAULT_REPORTS = ("busy", "dial", "keys", "loop", "quiet", "silence")
#: Result codes that, arriving when no command asked, say the modem dropped the call.
DROPPED_RESULTS = frozenset({"NO CARRIER", "BUSY", "NO ANSWER"})
#: A report of a key the gateway itself sends (the modem's receiver hears its
#: own transmitter), from this long before the command that sends it until
#: this long after its tones ended and the modem answered it, is its echo:
#: a clock's resolution before, a detector's hangover and a modem that
#: answers before its tones end after.
OWN_KEY_LEAD_S = 0.05
OWN_KEY_TAIL_S = 0.3
#: How often a call's set-up, waiting on the modem's reports, looks at the time.
TICK_S = 0.05


@dataclass
class ModemCallTiming(CallTiming):
    """:class:`CallTiming` where the modem waits for dial tone itself: a
    ``call_timing`` table that names only ``answer_wait_ms`` is right."""

    dial_tone_ms: int = 0
    answer_wait_ms: int = field(default=ANSWER_WAIT_MS, metadata={"min": 0, "max": 120000})

    def __post_init__(self) -> None:
        if self.dial_tone_ms != 0:
            raise ValueError("dial_tone_ms: a modem waits for dial tone itself (set how in "
                             "init, e.g. ATX4 and S6); only 0 is accepted")


class ModemSilent(LineFault):
    """The modem did not answer in time: asking it for anything more is pointless."""


class PortBusy(LineFault):
    """Another thread's command still has the port; this one was not sent."""


@dataclass
class ModemOptions:
    """``[[line]]`` keys for ``driver = "modem"``."""

    #: pyserial URL of the modem, or ``sim://`` for the simulated modem.
    port: str = "/dev/ttyACM0"
    #: Ignored by USB (CDC ACM) modems; what an RS-232 modem's DTE speed is set to.
    baudrate: int = field(default=115200, metadata={"min": 300, "max": 4000000})
    #: How long an ordinary command may take to answer.
    command_timeout_s: float = field(default=2.0, metadata={"min": 0.1, "max": 60.0})
    #: ``ATZ`` reloads the stored profile and takes longer on some modems.
    reset_timeout_s: float = field(default=5.0, metadata={"min": 0.1, "max": 60.0})
    #: ``ATD``: dial tone, dialling, and ringback until the modem gives a result.
    dial_timeout_s: float = field(default=60.0, metadata={"min": 1.0, "max": 300.0})
    #: Extra command lines for modem quirks, sent after the standard init.
    init: list[str] = field(default_factory=list)
    #: +VTD's unit: 10 ms in V.253; 100 ms in 3GPP 27.007 (GSM modules).
    vtd_unit_ms: int = field(default=10, metadata={"choices": VTD_UNITS_MS})
    #: "tones": gaps are [0,0,dur] silences the modem times; "driver": one digit a command.
    gap_mode: str = field(default="tones", metadata={"choices": GAP_MODES})
    #: Longest command line after "AT" the modem takes (V.250 guarantees 40).
    max_command_chars: int = field(default=40, metadata={"min": 20, "max": 1024})
    #: Some modems connect the line in voice mode with AT+VLS=1 instead.
    off_hook_command: str = "ATH1"
    #: The voice-mode event reports this modem sends that the line acts on
    #: (names of :data:`REPORTS`); empty: the line hears nothing, and a call
    #: counts as answered ``answer_wait_ms`` after the dial result.
    reports: list[str] = field(default_factory=lambda: list(DEFAULT_REPORTS))
    #: ``answer_wait_ms``: after the dial result, how long to wait before the
    #: call counts as answered.
    call_timing: ModemCallTiming = field(default_factory=ModemCallTiming)
    #: Deprecated: ``call_timing.answer_wait_ms``, as on the other drivers.
    answer_wait_ms: int | None = field(default=None, metadata={"min": 0, "max": 120000})
    #: With ``sim://``: where each call's rendered audio goes (<CallId>.wav).
    record_dir: str = field(default="recordings", metadata={"path": True})
    #: With ``sim://``: seconds of a call's audio that are recorded, at most.
    max_record_s: float = field(default=DEFAULT_MAX_RECORD_S, metadata={
        "min": MAX_RECORD_S[0], "max": MAX_RECORD_S[1]})

    def __post_init__(self) -> None:
        if not self.port.strip():
            raise ValueError("port: a pyserial URL such as /dev/ttyACM0 is needed")
        if self.answer_wait_ms is not None:
            if self.call_timing.answer_wait_ms not in (self.answer_wait_ms, ANSWER_WAIT_MS):
                raise ValueError("answer_wait_ms: set call_timing.answer_wait_ms only "
                                 "(answer_wait_ms is its old name)")
            self.call_timing.answer_wait_ms = self.answer_wait_ms
        for report in self.reports:
            if report not in REPORTS:
                raise ValueError(f"reports: {report!r} is not one of {', '.join(REPORTS)}")
        if len(set(self.reports)) != len(self.reports):
            raise ValueError("reports: each report is named once")
        for name, commands in (("init", self.init), ("off_hook_command", [self.off_hook_command])):
            for command in commands:
                one_line = command.isascii() and command.isprintable()
                if not (command[:2].upper() == "AT" and one_line):
                    raise ValueError(f"{name}: {command!r} is not one AT command line")


# -- sending a tone plan as +VTS command lines ------------------------------------------

@dataclass(frozen=True, slots=True)
class ToneLine:
    """One step of sending keys: an ``AT+VTS`` command line, or (``command`` is
    None) a quiet wait the driver times itself. ``ms`` is its time on the line."""

    command: str | None
    ms: int


def vts_units(ms: int) -> int:
    """Milliseconds in +VTS units, rounded up: a receiver's minimums are what matter."""
    return max(1, -(-ms // VTS_UNIT_MS))


def tone_lines(plan: TonePlan, max_chars: int, gap_mode: str = "tones") -> list[ToneLine]:
    """The plan as ``AT+VTS`` command lines and driver-timed waits.

    Every digit is ``{X,dur}``, so its length never depends on +VTD (which
    ``ATZ`` or another program may have changed, and whose unit differs
    between V.253 and 27.007). Gaps, in ``gap_mode = "tones"``, are
    ``[0,0,dur]`` silences inside the same command: the modem's DSP times them
    to the sample, where a gap made by splitting commands would also carry the
    serial round trip and the modem's command parsing. Pauses (``w W ,``) are
    waits the driver keeps between commands. A list longer than the modem's
    command line is split; at a split the gap is longer by the round trip,
    never shorter.
    """
    tone_units = vts_units(plan.timing.duration_ms)
    gap_units = vts_units(plan.timing.gap_ms)
    steps: list[ToneLine] = []
    elements: list[tuple[str, int]] = []

    def wait(ms: int) -> None:
        if steps and steps[-1].command is None:
            ms += steps.pop().ms
        steps.append(ToneLine(None, ms))

    def flush() -> None:
        line: list[tuple[str, int]] = []
        for element in elements:
            if line and len(_vts_body([*line, element])) > max_chars:
                steps.append(_vts_line(line))
                line = []
            line.append(element)
        if line:
            steps.append(_vts_line(line))
        elements.clear()

    for symbol in plan.symbols:
        if isinstance(symbol, Tone):
            elements.append((f"{{{symbol.key},{tone_units}}}", tone_units))
            if gap_mode == "tones":
                elements.extend(_silences(gap_units))
            else:
                flush()
                wait(plan.timing.gap_ms)
        elif isinstance(symbol, Pause):
            flush()
            wait(symbol.ms)
    flush()
    return steps


def _silences(units: int) -> Iterator[tuple[str, int]]:
    while units > 0:
        chunk = min(units, VTS_MAX_UNITS)
        yield f"[0,0,{chunk}]", chunk
        units -= chunk


def _vts_body(elements: list[tuple[str, int]]) -> str:
    return "+VTS=" + ",".join(text for text, _ in elements)


def _vts_line(elements: list[tuple[str, int]]) -> ToneLine:
    return ToneLine("AT" + _vts_body(elements), sum(u for _, u in elements) * VTS_UNIT_MS)


def vts_keys(command: str) -> str:
    """The DTMF keys of one of our ``AT+VTS`` command lines (its ``{X,dur}``)."""
    return "".join(key for key in re.findall(r"\{(.),", command) if key in KEYS)


def dial_string(dialed: str) -> str:
    """``Dialed`` as an ATD dial string: keys as they are, pauses as the modem's
    comma pause (S8, commonly 2 s; in a Hayes dial string ``w`` means "wait for
    dial tone", not a pause)."""
    return "".join(s.key if isinstance(s, Tone) else "," for s in parse_keys(dialed))


# -- what the modem hears ------------------------------------------------------------------

@dataclass
class OwnKeys:
    """Keys the gateway puts on the line from ``start`` to ``end`` (line time)."""

    keys: frozenset[str]
    start: float
    end: float

    def echoes(self, key: str, t: float) -> bool:
        return key in self.keys and self.start - OWN_KEY_LEAD_S <= t <= self.end + OWN_KEY_TAIL_S


class VoiceReports:
    """A modem's V.253 voice-mode reports, turned into line events.

    Fed each ``<DLE>`` code, and each result code that came when no command
    asked, with the line time it arrived at; returns what they mean for
    :meth:`Ears.heard`. Codes of a report not in ``reports`` mean nothing.

    - ``d``, ``b``, ``r``: dial tone, busy, ringback, as the modem judged them.
    - ``s`` (no voice, then silence longer than ``+VSD``) and ``q`` (voice,
      then such a silence): silence, after voice for ``q``; after ringback
      either also says the ringback has stopped.
    - ``l``: the loop current was interrupted (the far end hung up). The
      modem does not say for how long, and has judged it already, so it is
      :class:`Disconnected` rather than a break to be weighed.
    - Keys in either form: ``<DLE>5`` alone, reported at once with no
      length (0 ms); or ``<DLE>/``, the key (repeated or not), ``<DLE>~``
      (or ``<DLE><DEL>``), reported at its end with its length. A key the
      gateway itself is sending (:meth:`own_keys`: from the command that
      sends it going out until :data:`OWN_KEY_TAIL_S` after the modem
      answered it) is its echo and is dropped.
    - ``NO CARRIER``, ``NO ANSWER``, ``BUSY`` on their own: the modem dropped
      the call (:class:`Disconnected`); ``BUSY`` during the set-up is busy tone.

    The reader thread calls :meth:`code` and :meth:`result`; the driver's
    thread :meth:`reset`, :meth:`own_keys` and :meth:`ringback_over`.
    """

    def __init__(self, reports: Iterable[str]) -> None:
        self.reports = frozenset(reports)
        self._names = {code: name for name, codes in REPORTS.items() if name in self.reports
                       for code in codes}
        self._lock = threading.Lock()
        self._burst: tuple[float, str | None] | None = None
        self._ringback = False
        self._own: list[OwnKeys] = []

    def reset(self) -> None:
        """Off hook afresh: nothing heard yet."""
        with self._lock:
            self._burst = None
            self._ringback = False
            self._own = []

    def own_keys(self, keys: str, start: float, end: float = math.inf) -> OwnKeys:
        """The gateway sends ``keys`` from ``start`` to ``end``; the record's
        ``end`` may be moved once it is known."""
        own = OwnKeys(frozenset(k for k in keys if k in KEYS), start, end)
        with self._lock:
            self._own = [o for o in self._own if o.end + OWN_KEY_TAIL_S >= start]
            self._own.append(own)
        return own

    def code(self, code: str, t: float) -> list[LineEvent]:
        name = self._names.get(code)
        if name is None:
            log.debug("voice event <DLE>%r ignored", code)
            return []
        with self._lock:
            if name == "keys":
                return self._key_code(code, t)
            if name == "ringback":
                self._ringback = True
                return [HeardTone(t, "ringback", "")]
            if name in ("dial", "busy"):
                return [HeardTone(t, name, "")]
            if name == "loop":
                return [Disconnected(t, "loop current interrupted")]
            events = self._ringback_stopped(t)
            if name == "quiet":
                events.append(Voice(t))
            events.append(Silence(t))
            return events

    def result(self, text: str, t: float, setting_up: bool) -> list[LineEvent]:
        if text not in DROPPED_RESULTS:
            return []
        if setting_up and text == "BUSY":
            return [HeardTone(t, "busy", "")]
        return [Disconnected(t, f"the modem said {text}")]

    def ringback_over(self, t: float) -> list[LineEvent]:
        """The modem says the call is through: ringback, if heard, has stopped."""
        with self._lock:
            return self._ringback_stopped(t)

    def _ringback_stopped(self, t: float) -> list[LineEvent]:
        if not self._ringback:
            return []
        self._ringback = False
        return [ToneEnd(t, "ringback")]

    def _key_code(self, code: str, t: float) -> list[LineEvent]:
        if code == DTMF_START:
            events = self._burst_over(t)
            self._burst = (t, None)
            return events
        if code in DTMF_ENDS:
            return self._burst_over(t)
        if self._burst is None:
            return self._key(code, t, 0)
        start, key = self._burst
        if key is None:
            self._burst = (start, code)
        elif key != code:
            # Another key inside one bracket: the modem lost an end.
            events = self._burst_over(t)
            self._burst = (t, code)
            return events
        return []

    def _burst_over(self, t: float) -> list[LineEvent]:
        burst, self._burst = self._burst, None
        if burst is None:
            return []
        start, key = burst
        return [] if key is None else self._key(key, start, round((t - start) * 1000))

    def _key(self, key: str, start: float, ms: int) -> list[LineEvent]:
        if any(own.echoes(key, start) for own in self._own):
            log.debug("key %s at %.2f s is the gateway's own", key, start)
            return []
        return [Dtmf(start, key, ms)]


def hears_of(reports: Iterable[str]) -> Hears:
    """What a line hears whose modem sends ``reports``."""
    flags = Hears.NOTHING
    reports = frozenset(reports)
    for name, flag in (("dial", Hears.TONES), ("busy", Hears.TONES), ("ringback", Hears.TONES),
                       ("silence", Hears.VOICE), ("quiet", Hears.VOICE), ("keys", Hears.KEYS),
                       ("loop", Hears.LOOP)):
        if name in reports:
            flags |= flag
    return flags


# -- the AT command engine ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    command: str
    result: str
    lines: tuple[str, ...] = ()


class _Answer:
    """The answer to one command line, filled in by the reader thread."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.lines: list[str] = []
        self.result: str | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def take(self, text: str) -> None:
        if self.result is not None:
            log.debug("stray line after %r: %r", self.command, text)
        elif not self.lines and text.upper() == self.command.upper():
            pass  # the modem's echo, until ATE0 takes effect
        elif is_final(text):
            self.result = text
            self.done.set()
        else:
            self.lines.append(text)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


def _ignore(text: str) -> None:
    pass


class ATProtocol(LineReader):  # type: ignore[misc]
    """pyserial's reader-thread protocol for V.250 command lines.

    Results are framed S3 S4 (CR LF) but an echoed command ends with S3 (CR)
    alone, so lines are split at CR and the LF left at the start of the next
    is stripped. V.253's ``<DLE>`` event reports may come anywhere, inside
    another answer's line too, and a read may end between ``<DLE>`` and its
    code: they go to ``on_event`` (``<DLE>R``, a ring, to ``on_ring``). A
    final result code that no command is waiting for goes to ``on_result``.
    """

    TERMINATOR = b"\r"
    ENCODING = "ascii"

    def __init__(
        self, on_ring: Callable[[], None], on_lost: Callable[[BaseException | None], None],
        on_event: Callable[[str], None] = _ignore, on_result: Callable[[str], None] = _ignore,
    ) -> None:
        super().__init__()
        self._on_ring = on_ring
        self._on_lost = on_lost
        self._on_event = on_event
        self._on_result = on_result
        self._lock = threading.Lock()
        self._answer: _Answer | None = None
        self._dle = False
        self.lost: BaseException | None = None

    def expect(self, command: str) -> _Answer:
        answer = _Answer(command)
        with self._lock:
            self._answer = answer
        return answer

    def forget(self) -> None:
        with self._lock:
            self._answer = None

    def data_received(self, data: bytes) -> None:
        # V.253 reports voice-mode events as <DLE><code> pairs with no line end:
        # take them out before the bytes are split into lines. <DLE><DLE> is
        # a 0x10 inside voice data, which this driver never asks for.
        text = bytearray()
        for byte in data:
            if self._dle:
                self._dle = False
                if byte == ord("R"):
                    self._on_ring()
                elif byte != DLE:
                    self._on_event(chr(byte))
            elif byte == DLE:
                self._dle = True
            else:
                text.append(byte)
        if text:
            super().data_received(bytes(text))

    def handle_line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        log.debug("modem: %r", text)
        if text == "RING":
            self._on_ring()
            return
        with self._lock:
            answer = self._answer
        if answer is None:
            log.debug("unsolicited %r", text)
            if is_final(text):
                self._on_result(text)
        else:
            answer.take(text)

    def connection_lost(self, exc: BaseException | None) -> None:
        # Not the base class's: it re-raises in the reader thread, where nobody listens.
        self.transport = None
        self.lost = exc if exc is not None else serial.SerialException("port closed")
        with self._lock:
            answer = self._answer
        if answer is not None:
            answer.fail(self.lost)
        self._on_lost(exc)


class _ReadSide:
    """A serial port as pyserial's reader thread uses it. Between two reads
    the thread asks ``in_waiting``, whose ioctl fails with a bare OSError
    (EIO) once a USB modem has vanished; the thread ends (through
    ``connection_lost``) only on a SerialException, which a failing read
    raises. Here both fail alike."""

    _port: serial.SerialBase

    def __init__(self, port: serial.SerialBase) -> None:
        object.__setattr__(self, "_port", port)

    def __getattr__(self, name: str) -> object:
        return getattr(self._port, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._port, name, value)

    @property
    def in_waiting(self) -> int:
        try:
            return int(self._port.in_waiting)
        except OSError as exc:
            raise serial.SerialException(f"the port failed: {exc}") from exc


class ATPort:
    """A modem's serial port with pyserial's reader thread; one command at a time."""

    def __init__(
        self,
        url: str,
        baudrate: int,
        write_timeout: float,
        on_ring: Callable[[], None],
        on_lost: Callable[[BaseException | None], None],
        label: str = "",
        *,
        on_event: Callable[[str], None] = _ignore,
        on_result: Callable[[str], None] = _ignore,
    ) -> None:
        self.url = url
        #: How errors name this modem; the driver starts it with the line's name.
        self.label = label or f"the modem at {url}"
        self._baudrate = baudrate
        self._write_timeout = write_timeout
        self._protocol = ATProtocol(on_ring, on_lost, on_event, on_result)
        self._reader: ReaderThread | None = None
        self._command_lock = threading.Lock()
        self._close_lock = threading.Lock()

    def open(self) -> None:
        try:
            port = serial.serial_for_url(
                self.url,
                baudrate=self._baudrate,
                write_timeout=self._write_timeout,
                exclusive=True,
            )
            port.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LineFault(f"{self.label} cannot be opened: {exc}") from exc
        reader = ReaderThread(_ReadSide(port), lambda: self._protocol)
        reader.name = f"modem-reader {self.url}"
        reader.start()
        self._reader = reader

    @property
    def alive(self) -> bool:
        reader = self._reader
        return reader is not None and reader.alive and self._protocol.lost is None

    def command(self, command: str, timeout: float, wait: float) -> Reply:
        """Send one command line and return its final result, whatever it is.

        ``wait`` bounds how long to wait for another command to finish first.
        Raises :class:`ModemSilent` when no final result comes within
        ``timeout``, :class:`LineFault` when the port fails.
        """
        if not self._command_lock.acquire(timeout=wait):
            raise PortBusy(f"{self.label} is still busy; {command!r} was not sent")
        try:
            reader = self._reader
            if reader is None or not self.alive:
                raise LineFault(f"{self.label} is gone: {self._protocol.lost}")
            answer = self._protocol.expect(command)
            log.debug("host: %r", command)
            try:
                reader.write(command.encode("ascii") + self._protocol.TERMINATOR)
            except (serial.SerialException, OSError) as exc:
                raise LineFault(f"{self.label}: writing {command!r} failed: {exc}") from exc
            if not answer.done.wait(timeout):
                raise ModemSilent(f"{self.label} did not answer {command!r} within {timeout:g} s")
            if answer.error is not None or answer.result is None:
                raise LineFault(f"{self.label} is gone: {answer.error}")
            return Reply(command, answer.result, tuple(answer.lines))
        finally:
            self._protocol.forget()
            self._command_lock.release()

    def close(self) -> None:
        """Stop the reader and close the port (which lowers DTR). Safe twice."""
        with self._close_lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()


# -- the driver ---------------------------------------------------------------------------

class ModemLine(LineDriver):
    driver_name = "modem"

    def __init__(self, name: str, options: ModemOptions, engine: ToneEngine,
                 port: str | None = None) -> None:
        super().__init__(name)
        self.options = options
        self.engine = engine
        self.call_timing = options.call_timing
        if options.answer_wait_ms is not None:
            log.warning("line %s: answer_wait_ms is deprecated: write call_timing = "
                        "{ answer_wait_ms = %d } instead", name, options.answer_wait_ms)
        #: The pyserial URL opened: ``options.port``, or the one assembly gave.
        self.url = port or options.port
        self._port: ATPort | None = None
        #: How long a command waits while another thread's command has the port
        #: (on_hook from the shutdown path during a dial, at worst).
        self._busy_bound = options.dial_timeout_s + options.command_timeout_s
        # Set while on hook: the driver's own waits (pauses, the tones' time
        # after an early OK) stop when another thread puts the line on hook.
        self._released = threading.Event()
        self._released.set()
        #: What the modem's reports mean (``reports``); the line hears them
        #: through :attr:`ears`, which a line with no reports has not.
        self.reports = VoiceReports(options.reports)
        if options.reports:
            self.ears = Ears(name, hears_of(options.reports), detectors=False)
        # Line time is the modem's real time since the line went off hook.
        self._off_hook_at: float | None = None
        self._setting_up = False

    @property
    def _label(self) -> str:
        # The API finds the line a LineFault is about from "line '<name>':" first.
        return f"the modem at {self.url}"

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> None:
        self._drop_port()
        self._connect()

    def close(self) -> None:
        self.on_hook()
        self._drop_port()

    def _connect(self) -> None:
        o = self.options
        port = ATPort(self.url, o.baudrate, o.command_timeout_s, self._ring_heard,
                      self._port_lost, self._label, on_event=self._event_heard,
                      on_result=self._result_heard)
        port.open()
        self._port = port
        vtd = -(-Timing().duration_ms // o.vtd_unit_ms)
        init = [("ATZ", o.reset_timeout_s), ("ATE0", o.command_timeout_s),
                (f"AT+FCLASS={VOICE_CLASS}", o.command_timeout_s),
                # For any tone sent without its own duration; ours all carry one.
                (f"AT+VTD={vtd}", o.command_timeout_s)]
        init += [(command, o.command_timeout_s) for command in o.init]
        init.append(("ATH0", o.command_timeout_s))
        for command, timeout in init:
            self._command(command, timeout)
        self._hook = HookState.ON_HOOK
        self.fault = None
        log.info("line %s: modem at %s ready", self.name, self.url)

    def _ensure_port(self) -> None:
        """Reopen (and initialise) the port after a fault or an unplug."""
        if self._port is not None and self._port.alive:
            return
        self._drop_port()
        self._connect()

    def _drop_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.close()

    def _command(self, command: str, timeout: float, accept: tuple[str, ...] = ("OK",)) -> Reply:
        """Run one command; anything but an ``accept``\\ ed result is a fault."""
        port = self._port
        if port is None:
            raise LineFault(f"{self._label} is not open")
        try:
            reply = port.command(command, timeout, wait=self._busy_bound)
        except ModemSilent as exc:
            self._fault(str(exc), answers=False)
            raise
        except LineFault as exc:
            self._fault(str(exc), answers=port.alive)
            raise
        if reply.result not in accept:
            reason = f"{self._label} answered {reply.result} to {command!r}"
            if reply.result == "ERROR" and "[0,0," in command:
                reason += ' (a modem without [0,0,dur] silences needs gap_mode = "driver")'
            self._fault(reason, answers=True)
            raise LineFault(reason)
        return reply

    def _fault(self, reason: str, answers: bool) -> None:
        log.warning("line %s: %s", self.name, reason)
        self.fault = reason
        self._stop_hearing()
        port, self._port = self._port, None
        if port is not None:
            if answers:
                with contextlib.suppress(LineFault):
                    port.command("ATH0", self.options.command_timeout_s, wait=0)
            port.close()
        self._hook = HookState.ON_HOOK

    def _port_lost(self, exc: BaseException | None) -> None:
        """From the reader thread: the port failed (None: we closed it)."""
        if exc is not None:
            self.fault = f"{self._label} is gone: {exc}"
            self._hook = HookState.ON_HOOK
            log.warning("line %s: %s", self.name, self.fault)

    # -- hook --------------------------------------------------------------------
    def off_hook(self) -> None:
        self._ensure_port()
        self._start_hearing()
        self._command(self.options.off_hook_command, self.options.command_timeout_s)
        self._hook = HookState.OFF_HOOK
        self._released.clear()

    def on_hook(self) -> None:
        self._released.set()
        self._stop_hearing()
        port = self._port
        if port is not None and port.alive:
            timeout = self.options.command_timeout_s
            try:
                # Another thread's command (a +VTS line of tones, a dial) has
                # the port: a hang-up does not wait for it. Dropping DTR below
                # hangs the modem up at once and ends that command.
                released = port.command("ATH0", timeout, wait=HANG_UP_WAIT_S).result == "OK"
            except PortBusy:
                released = False
            except LineFault as exc:
                self.fault = str(exc)
                released = False
            if not released:
                # Closing the port lowers DTR: the modem's own way to hang up.
                self._drop_port()
        self._hook = HookState.ON_HOOK

    # -- signalling --------------------------------------------------------------
    def _wait(self, seconds: float) -> None:
        if self._released.wait(seconds):
            raise LineInterrupted("the line went on hook")

    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        # A modem has one audio path: every party hears the tones.
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("the line is on hook: tones would reach nobody")
        try:
            self._emit(plan)
        except LineFault as exc:
            if self._released.is_set():
                # Put on hook by another thread (a hang-up) mid-command: the
                # modem was told to stop, which is no fault of it.
                raise LineInterrupted("the line went on hook") from exc
            raise

    def flash(self, ms: int) -> None:
        # V.253's +VTS takes "!" as a hook flash, timed like a tone.
        if self._hook is not HookState.OFF_HOOK:
            raise LineFault("the line is on hook: there is no loop to flash")
        self._timed_command(f"AT+VTS={{!,{vts_units(ms)}}}", ms / 1000)

    def _timed_command(self, command: str, seconds: float) -> None:
        """``command``, whose tones last ``seconds``: whenever the modem says
        OK, their time is waited out, so the next command, or ATH0, cannot
        cut them short."""
        began = time.monotonic()
        self._command(command, self.options.command_timeout_s + seconds)
        left = began + seconds - time.monotonic()
        if left > 0:
            self._wait(left)

    def _emit(self, plan: TonePlan) -> None:
        o = self.options
        for step in tone_lines(plan, o.max_command_chars, o.gap_mode):
            if self._released.is_set():
                raise LineInterrupted("the line went on hook")
            seconds = step.ms / 1000
            if step.command is None:
                self._wait(seconds)
                continue
            # Until its tones have sounded and the modem has answered, a report
            # of one of the command's keys is the modem hearing itself.
            own = self.reports.own_keys(vts_keys(step.command), self._line_time() or 0.0)
            try:
                self._timed_command(step.command, seconds)
            finally:
                own.end = self._line_time() or 0.0

    def place_call(
        self, dialed: str, timing: Timing, call_timing: CallTiming | None = None,
        *, no_answer_s: float | None = None,
    ) -> None:
        """``ATDT<dialed>``: the modem goes off hook, waits for dial tone and dials
        with its own DTMF timing (S11 on Hayes-style modems, settable in ``init``).

        Its result codes decide first: ``BUSY``, ``NO DIALTONE``, ``NO CARRIER``,
        ``NO ANSWER`` are CallFailed at once. After ``OK``, ``VCON`` or
        ``CONNECT``, a line whose modem reports call progress follows the
        reports (:class:`VoiceReports`) through a :class:`CallProgress`:
        ringback makes the call ring; busy fails it; ringback that stops (a
        connected result after it, ``s`` or ``q``) or voice (``q``) is the
        answer once ``confirm_s`` passes without busy; ringing for longer
        than ``no_answer_s`` is NoAnswer. Nothing reported within
        ``answer_wait_ms`` of the result: the call counts as answered then,
        as on a line that cannot hear.
        """
        call_timing = call_timing or self.call_timing
        self._ensure_port()
        ears = self.ears
        if ears is None or not ears.hears & Hears.TONES:
            self._dial(dialed)
            # An analog line has no answer supervision: wait as a person would.
            self._wait(call_timing.answer_wait_ms / 1000)
            if ears is not None:
                ears.talking()
            return
        rules = ProgressRules(
            expect_dial_tone=False,
            no_answer_s=no_answer_s or call_timing.no_answer_ms / 1000,
            # The modem's reports are its own judgement, never our echo.
            echo_s=0.0,
            assume_answer_s=call_timing.answer_wait_ms / 1000,
        )
        self._setting_up = True
        try:
            with self._clock():
                progress = self._dial(dialed, lambda: ears.track(dialed, rules))
                assert progress is not None
                self._hear(self.reports.ringback_over)
                progress.dialled()
                progress.wait_answer(self._wall(rules.no_answer_s + rules.confirm_s))
        except CallFailed:
            self.on_hook()
            raise
        finally:
            self._setting_up = False
        ears.talking()

    def _dial(
        self, dialed: str, track: Callable[[], CallProgress] | None = None
    ) -> CallProgress | None:
        """Send ``ATDT``; CallFailed (line on hook) on a failing result. With
        ``track``, the call's set-up is followed from the moment it is sent."""
        number = dial_string(dialed)
        self._start_hearing()
        progress = track() if track is not None else None
        # The modem's own dialling, should its receiver hear it, is no far end.
        own = self.reports.own_keys(number, 0.0)
        self._released.clear()
        try:
            reply = self._command(f"ATDT{number}", self.options.dial_timeout_s,
                                  accept=CONNECTED + tuple(CALL_FAILURES))
        except LineFault as exc:
            if self._released.is_set():
                raise LineInterrupted("the line went on hook") from exc
            raise
        finally:
            own.end = self._line_time() or 0.0
        if reply.result in CALL_FAILURES:
            self.on_hook()
            raise CallFailed(
                dialed,
                CALL_FAILURES[reply.result],
                f"the modem answered {reply.result} dialling {number}",
            )
        self._hook = HookState.OFF_HOOK
        return progress

    # -- hearing -------------------------------------------------------------------
    def _line_time(self) -> float | None:
        began = self._off_hook_at
        return None if began is None else time.monotonic() - began

    def _start_hearing(self) -> None:
        self.reports.reset()
        self._off_hook_at = time.monotonic()
        if self.ears is not None:
            self.ears.start()

    def _stop_hearing(self) -> None:
        self._off_hook_at = None
        if self.ears is not None:
            self.ears.stop()

    def _event_heard(self, code: str) -> None:
        """From the reader thread: a ``<DLE>`` report."""
        self._hear(lambda t: self.reports.code(code, t))

    def _result_heard(self, text: str) -> None:
        """From the reader thread: a result code no command waited for."""
        self._hear(lambda t: self.reports.result(text, t, self._setting_up))

    def _hear(self, what: Callable[[float], list[LineEvent]]) -> None:
        """What the modem reported at line time now, to the line's ears (on
        hook, nothing is heard)."""
        now, ears = self._line_time(), self.ears
        if now is None or ears is None:
            return
        events = what(now)
        for event in events:
            log.debug("line %s heard %s at %.2f s", self.name, event, event.t)
        ears.heard(events, now)

    @contextlib.contextmanager
    def _clock(self) -> Iterator[None]:
        """A set-up's waits end on line time, and the modem reports only when
        something happens: line time is told as it passes."""
        stop = threading.Event()

        def tell() -> None:
            while not stop.wait(TICK_S):
                self._hear(lambda t: [])

        thread = threading.Thread(target=tell, name=f"{self.name}-setup-clock", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(1.0)

    # -- ringing -----------------------------------------------------------------
    def _ring_heard(self) -> None:
        """From the reader thread: a RING. Every ring is reported; the call
        layer groups the rings of one cadence into one call and ends the call
        when they stop."""
        if self._hook is HookState.OFF_HOOK:
            return
        # Not on the reader thread: a handler that answers the call needs
        # that thread to read the modem's reply.
        threading.Thread(target=self._ring, name=f"{self.name}-ring", daemon=True).start()

    def status(self) -> dict[str, object]:
        return {**super().status(), "port": self.url}
