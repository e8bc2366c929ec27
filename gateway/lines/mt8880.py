"""The MT8880 line: a Mitel/Zarlink MT8880C (or CM8880) DTMF transceiver on GPIO.

The chip sits on a Motorola-6800-style bus (D0-D3, RS0, R/W, CS, phi2) that
the driver bit-bangs through gpiozero's pin objects, so it runs under lgpio,
RPi.GPIO and ``MockFactory`` alike. Its TONE pin feeds the line interface;
the hook relay and ring detect are the same GPIO parts as the audio-HAT line
(:mod:`gateway.lines.gpio`).

Layers, each named as on the datasheet:

- :class:`MT8880Bus` -- one read or write cycle on the pins.
- :class:`MT8880` -- the registers: control registers A and B (write-only, so
  a shadow copy is kept), the status register, transmit and receive data, the
  initialisation sequence, and the two ways of sending a digit.
- :class:`MT8880Line` -- the phone line: hook relay, ring detect, timing of
  tones, gaps and pauses, and the fail-safe rules of :mod:`gateway.lines.base`.
  Off hook it hears (``listen``): the receiver's keys in DTMF mode and, with
  IRQ/CP wired, a call's set-up in call-progress mode
  (:mod:`gateway.lines.mt8880_hearing`); it dials and sends in DTMF mode only.

Transmit modes: non-burst (default) keeps the tone on for as long as CRA.TOUT
is set, so the requested Duration and Gap are honoured; burst uses the chip's
own 51 ms tone / 51 ms pause and polls TDRE before each next code, so Duration
and Gap are ignored.

The chip is proved alive only by a burst: TDRE clear while it runs, set when
it ends, cleared again by the status read. In non-burst mode the chip gives
no sign of life while it sends, so with a hook relay the driver sends one
burst on hook (the released relay keeps it off the line) when the line is
opened and before every off-hook. Without a relay, in non-burst mode, nothing
the datasheet describes reads the chip back without sounding on the line:
the line says so (``chip: unproven`` in :meth:`MT8880Line.status`, a warning
when it opens). A chip that fails a burst raises
:class:`~gateway.errors.LineFault` within ``tdre_timeout_ms``.

The driver takes the pin factory it is given (a simulated chip's mock pins,
attached by :func:`gateway.lines.build_line`) or opens the one its options
name; it never builds a simulator itself.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.detect import COUNTRIES, Dtmf
from gateway.errors import LineFault, LineInterrupted
from gateway.keys import Pause, Tone
from gateway.lines.base import CallTiming, HookState, LineDriver, Party
from gateway.lines.gpio import PULLS, GpioOptions, LineControl, pin_factory, pull_word
from gateway.lines.hearing import Hears, LineEvent
from gateway.lines.mt8880_hearing import ChipEars, EdgeProgress
from gateway.tones import ToneEngine, TonePlan

log = logging.getLogger(__name__)

# Tone codes D3..D0 from the datasheet's code table: 1-9 are themselves,
# 0 is ten, and D comes first at 0000.
TONE_CODES: dict[str, int] = {
    "D": 0b0000, "1": 0b0001, "2": 0b0010, "3": 0b0011, "4": 0b0100,
    "5": 0b0101, "6": 0b0110, "7": 0b0111, "8": 0b1000, "9": 0b1001,
    "0": 0b1010, "*": 0b1011, "#": 0b1100, "A": 0b1101, "B": 0b1110, "C": 0b1111,
}
CODE_KEYS: dict[int, str] = {code: key for key, code in TONE_CODES.items()}

#: Burst mode with the 3.579545 MHz crystal: 51 ms tone, then 51 ms pause.
BURST_TONE_S = 0.051
BURST_PAUSE_S = 0.051
#: The key sent on hook to prove the chip alive; the relay keeps it off the line.
PROBE_KEY = "D"
#: TDRE seen before this share of the burst is not the chip's timer: a
#: crystal that far off sends no valid DTMF either, and noise on D0-D3 shows
#: TDRE at random moments.
EARLIEST_TDRE = 0.9


class RS0(enum.IntEnum):
    """Register select: RS0 low addresses the data registers, high the control side."""

    DATA = 0
    CONTROL = 1


class CRA(enum.IntFlag):
    """Control register A (write, RS0=1, unless the previous control write set RSEL)."""

    TOUT = 0b0001  #: tone output enable
    CP = 0b0010  #: call-progress mode (0 = DTMF); bursts double, the receiver goes deaf
    IRQ = 0b0100  #: interrupt enable on the IRQ/CP pin
    RSEL = 0b1000  #: the next control write goes to register B


class CRB(enum.IntFlag):
    """Control register B (the control write that follows a CRA write with RSEL)."""

    BURST = 0b0001  #: set = burst mode OFF (the datasheet's polarity): TOUT times the tone
    TEST = 0b0010  #: delayed-steering test output on IRQ/CP
    SD = 0b0100  #: single tone (0 = dual tone)
    CR = 0b1000  #: in single-tone mode, column (1) or row (0) tone; verify on the bench


class Status(enum.IntFlag):
    """Status register (read, RS0=1). Reading it clears IRQ."""

    IRQ = 0b0001  #: an interrupt is pending (TDRE or RDRF set with CRA.IRQ)
    TDRE = 0b0010  #: transmit data register empty: the burst and its pause are over
    RDRF = 0b0100  #: receive data register full: a decoded digit is waiting
    DSTEER = 0b1000  #: delayed steering (receiver)


def describe(status: int) -> str:
    """``0b0010 (TDRE)``: the nibble and its flag names, for fault messages."""
    names = [flag.name for flag in Status if flag & status and flag.name]
    return f"0b{status:04b} ({'|'.join(names) or 'none'})"


def _spin_us(us: float) -> None:
    """Busy-wait: bus delays are microseconds, far below time.sleep()'s resolution."""
    if us <= 0:
        return
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


@dataclass(frozen=True)
class BusTiming:
    """Delays of a bus cycle, in microseconds. The datasheet's minimums are
    sub-microsecond; level shifters and long wires are why these exist."""

    #: RS0, R/W and data settle before CS falls, and CS before phi2 rises.
    setup_us: float = 5.0
    #: phi2 high time; reads sample D0-D3 at its end.
    strobe_us: float = 5.0
    #: after phi2 falls, before CS rises (address and data hold).
    hold_us: float = 5.0


class MT8880Bus:
    """The chip's 6800-style bus, bit-banged on gpiozero pins.

    Every cycle: RS0 and R/W are set while CS is high; on writes D0-D3 are
    driven before CS falls; phi2 rises with CS low, reads sample D0-D3 while
    phi2 is still high, phi2 falls, and CS goes back high. D0-D3 become
    outputs only after R/W is low and become inputs before R/W goes high,
    because the 74LVC245 level shifter takes its direction from R/W and
    drives the Pi side whenever R/W is high.
    """

    def __init__(
        self,
        factory: Any,
        data_pins: tuple[int, int, int, int],
        rs0_pin: int,
        rw_pin: int,
        cs_pin: int,
        phi2_pin: int,
        irq_pin: int | None = None,
        timing: BusTiming = BusTiming(),
        data_pull: str = "down",
    ) -> None:
        self.factory = factory
        self.timing = timing
        # gpiozero's word for "no pull" is "floating".
        self.data_pull = "floating" if data_pull == "off" else data_pull
        self._numbers: tuple[int, ...] = (*data_pins, rs0_pin, rw_pin, cs_pin, phi2_pin)
        if irq_pin is not None:
            self._numbers += (irq_pin,)
        #: Set by a falling edge on IRQ/CP (the chip wants attention).
        self.irq_event: threading.Event | None = None
        #: Monotonic times of IRQ/CP's falling edges, for call-progress mode,
        #: where the pin carries the tone's rectangular wave (bounded: about
        #: 10 s of a 400 Hz tone, far more than a hearing tick leaves).
        self.irq_edges: collections.deque[float] = collections.deque(maxlen=4096)
        self.irq: Any = None
        self._lock = threading.RLock()
        self._reserved = False
        self._pins: list[Any] = []
        try:
            factory.reserve_pins(self, *self._numbers)
            self._reserved = True
            self.data = tuple(factory.pin(n) for n in data_pins)
            self.rs0 = factory.pin(rs0_pin)
            self.rw = factory.pin(rw_pin)
            self.cs = factory.pin(cs_pin)
            self.phi2 = factory.pin(phi2_pin)
            self._pins = [*self.data, self.rs0, self.rw, self.cs, self.phi2]
            # Idle bus: deselected, phi2 low, R/W low (shifter towards the
            # chip), D0-D3 not driven until a write needs them.
            self.cs.output_with_state(True)
            self.phi2.output_with_state(False)
            self.rs0.output_with_state(False)
            self.rw.output_with_state(False)
            for pin in self.data:
                pin.input_with_pull(self.data_pull)
            if irq_pin is not None:
                # IRQ/CP is open drain: pulled up here, the chip pulls it low.
                self.irq = factory.pin(irq_pin)
                self._pins.append(self.irq)
                self.irq.input_with_pull("up")
                self.irq_event = threading.Event()
                self.irq.edges = "falling"
                self.irq.when_changed = self._irq_edge
        except Exception as exc:
            self.close()
            raise LineFault(f"opening the MT8880 bus on GPIO {self._numbers}: {exc}") from exc
        self._driving = False
        self.cycles = 0
        #: Monotonic time phi2 last fell (when the chip latched the last write).
        self.latched_at = 0.0
        self._latch_delays = {rs0: collections.deque[float](maxlen=16) for rs0 in RS0}

    def _irq_edge(self, ticks: object, state: object) -> None:
        if self.irq_event is not None and not state:
            # The clock of the callback itself: gpiozero's ticks are opaque
            # and differ between pin libraries.
            self.irq_edges.append(time.monotonic())
            self.irq_event.set()

    @property
    def lock(self) -> threading.RLock:
        """Held for a cycle; hold it across cycles that must not be split."""
        return self._lock

    def _conflicts_with(self, other: object) -> bool:
        # gpiozero's reservation protocol: nobody else may use the bus pins.
        return True

    def write(self, rs0: RS0, nibble: int) -> None:
        """One write cycle: ``nibble`` into the register ``rs0`` selects."""
        t = self.timing
        with self._lock:
            started = time.monotonic()
            self.rs0.state = int(rs0)
            self.rw.state = 0
            for bit, pin in enumerate(self.data):
                level = (nibble >> bit) & 1
                if self._driving:
                    pin.state = level
                else:
                    pin.output_with_state(level)
            self._driving = True
            _spin_us(t.setup_us)
            self.cs.state = 0
            _spin_us(t.setup_us)
            try:
                self.phi2.state = 1
                _spin_us(t.strobe_us)
            finally:
                self.phi2.state = 0
                self.latched_at = time.monotonic()
                _spin_us(t.hold_us)
                self.cs.state = 1
            self._latch_delays[rs0].append(self.latched_at - started)
            self.cycles += 1

    def latch_delay(self, rs0: RS0) -> float:
        """How long after a write to ``rs0`` begins phi2 falls: the least of
        the recent such writes, because a preempted write only ever takes
        longer, and starting the next one early by that much would shorten a
        tone."""
        return min(self._latch_delays[rs0], default=0.0)

    def read(self, rs0: RS0) -> int:
        """One read cycle; D0-D3 as sampled while phi2 is high."""
        t = self.timing
        with self._lock:
            if self._driving:
                for pin in self.data:
                    pin.input_with_pull(self.data_pull)
                self._driving = False
            self.rs0.state = int(rs0)
            self.rw.state = 1
            _spin_us(t.setup_us)
            self.cs.state = 0
            _spin_us(t.setup_us)
            try:
                self.phi2.state = 1
                _spin_us(t.strobe_us)
                value = 0
                for bit, pin in enumerate(self.data):
                    value |= int(bool(pin.state)) << bit
            finally:
                self.phi2.state = 0
                _spin_us(t.hold_us)
                self.cs.state = 1
            self.cycles += 1
            return value

    def close(self) -> None:
        """Deselect the chip and release the pins. Safe to call twice."""
        with self._lock:
            pins, self._pins = self._pins, []
            if pins:
                # The pins are being given up anyway: closing must not raise.
                with contextlib.suppress(Exception):
                    self.phi2.state = 0
                    self.cs.state = 1
            if self.irq is not None:
                with contextlib.suppress(Exception):
                    self.irq.when_changed = None
            for pin in pins:
                with contextlib.suppress(Exception):
                    pin.close()
            if self._reserved:
                self.factory.release_pins(self, *self._numbers)
                self._reserved = False


@dataclass(frozen=True)
class Received:
    """A digit read from the receive data register."""

    key: str
    #: Monotonic time of the status read that found RDRF ...
    at: float
    #: ... and of the status read before it: the chip latched the digit in between.
    since: float
    #: The delayed-steering flag (status b3) in that read and the one before.
    steering: bool
    steering_before: bool


@dataclass(frozen=True)
class Sent:
    """A key this chip put on TONE, from ``start`` to ``end`` (monotonic)."""

    key: str
    start: float
    end: float


#: The receiver latches a key while it sounds; a latch this long after one
#: of our own keys ended is not its echo (the data sheet's tone-absent
#: detection is a few ms; the rest is margin for a late status read).
ECHO_TAIL_S = 0.1


class MT8880:
    """The chip's registers, transmitter and receiver, over an :class:`MT8880Bus`.

    Control registers cannot be read back, so :attr:`cra` and :attr:`crb` are
    the shadow copies of what was last written. CRA.CP (call-progress mode) is
    never set together with TOUT: the driver sends only in DTMF mode, where a
    burst is the 51 ms it expects (the data sheet doubles it in CP mode).

    Every status read goes through :meth:`read_status`, which reads a digit
    waiting in the receive data register at once (that read clears RDRF), so
    whichever thread reads the status, no received key is lost: they queue in
    :attr:`received`. The keys this chip sent are kept in :attr:`sent`, so
    that their echo through the line interface's hybrid can be told apart.
    """

    def __init__(self, bus: MT8880Bus) -> None:
        self.bus = bus
        self.cra = CRA(0)
        self.crb = CRB(0)
        #: Monotonic time by which the last burst started here is over.
        self.busy_until = 0.0
        #: How long the last burst took to TDRE (102 ms with the right crystal).
        self.last_burst_s: float | None = None
        self.received: collections.deque[Received] = collections.deque(maxlen=32)
        self.sent: collections.deque[Sent] = collections.deque(maxlen=64)
        self._status_at = time.monotonic()
        self._steering = False
        self._transmit = ""
        self._tone_from: float | None = None

    # -- registers ---------------------------------------------------------------
    def read_status(self) -> Status:
        """Read the status register (which clears IRQ and TDRE); a digit
        waiting (RDRF) is read from the receive data register straight away."""
        with self.bus.lock:
            status = Status(self.bus.read(RS0.CONTROL))
            now = time.monotonic()
            steering = bool(status & Status.DSTEER)
            if status & Status.RDRF:
                self.received.append(Received(self.read_receive(), now, self._status_at,
                                              steering, self._steering))
            self._status_at = now
            self._steering = steering
        return status

    @property
    def steering(self) -> bool:
        """The delayed-steering flag as the last status read saw it."""
        return self._steering

    def read_receive(self) -> str:
        """The last digit the receiver decoded (clears RDRF)."""
        return CODE_KEYS[self.bus.read(RS0.DATA)]

    def write_transmit(self, key: str) -> None:
        self.bus.write(RS0.DATA, TONE_CODES[key])
        self._transmit = key

    def write_cra(self, value: CRA) -> None:
        if value & CRA.CP and value & CRA.TOUT:
            raise ValueError("CRA.CP with TOUT: this driver sends only in DTMF mode "
                             "(call-progress mode doubles the bursts)")
        self.bus.write(RS0.CONTROL, int(value))
        before, self.cra = self.cra, value & ~CRA.RSEL
        if value & CRA.TOUT and not before & CRA.TOUT:
            self._tone_from = self.bus.latched_at
        elif before & CRA.TOUT and not value & CRA.TOUT and self._tone_from is not None:
            if not self.burst_mode:
                self.sent.append(Sent(self._transmit, self._tone_from, self.bus.latched_at))
            self._tone_from = None

    def is_echo(self, digit: Received) -> bool:
        """Whether ``digit`` may be this chip's own key heard back: the same
        key, latched while it sounded (or just after)."""
        return any(s.key == digit.key and s.start <= digit.at and s.end + ECHO_TAIL_S >= digit.since
                   for s in self.sent)

    def write_crb(self, value: CRB) -> None:
        # CRB is reached only through a CRA write with RSEL; that write also
        # sets CRA's other bits, so it repeats the shadow copy.
        self.bus.write(RS0.CONTROL, int(self.cra | CRA.RSEL))
        self.bus.write(RS0.CONTROL, int(value))
        self.crb = value

    def initialise(self, power_up_s: float,
                   wait: Callable[[float], None] = time.sleep) -> Status:
        """The datasheet's initialisation: wait for the oscillator, read status,
        write 0, 0, 8, 0 to the control side, read status.

        The two zeros clear CRA whichever register a stray earlier write had
        selected; 8 sets RSEL so the last 0 lands in CRB. Returns the final
        status (reading it cleared any IRQ left from power-up).
        """
        wait(power_up_s)
        self.bus.read(RS0.CONTROL)
        for nibble in (0, 0, int(CRA.RSEL), 0):
            self.bus.write(RS0.CONTROL, nibble)
        self.cra = CRA(0)
        self.crb = CRB(0)
        return self.read_status()

    # -- transmitter -------------------------------------------------------------
    @property
    def burst_mode(self) -> bool:
        return not self.crb & CRB.BURST

    def set_burst_mode(self, burst: bool) -> None:
        crb = (self.crb & ~CRB.BURST) if burst else (self.crb | CRB.BURST)
        if crb != self.crb:
            self.write_crb(crb)

    def tone_output(self, on: bool) -> None:
        """Set or clear CRA.TOUT (in non-burst mode this starts or ends a tone)."""
        cra = (self.cra | CRA.TOUT) if on else (self.cra & ~CRA.TOUT)
        self.write_cra(cra)

    def burst(self, key: str, timeout_s: float, poll_s: float,
              irq: threading.Event | None = None) -> None:
        """Send ``key`` as one burst and return once TDRE says tone and pause are over.

        What only a chip does is checked: TDRE clear after the write and
        through most of the burst, set when it ends, and cleared by the read
        that saw it. D0-D3 that read noise (no chip, and nothing holding its
        side of the level shifter) or one fixed value fail one of those, and
        a chip that never sets TDRE fails within ``timeout_s``; each raises
        :class:`LineFault` naming what was read.
        """
        length = BURST_TONE_S + BURST_PAUSE_S
        if irq is not None:
            irq.clear()
        self.write_transmit(key)
        # The chip's timer starts as phi2 falls, before write_transmit returns.
        started = self.bus.latched_at
        self.busy_until = started + length
        self.sent.append(Sent(key, started, started + BURST_TONE_S))
        deadline = started + timeout_s
        reads: list[Status] = []
        while True:
            if reads:  # the first read comes at once: TDRE must be clear then
                now = time.monotonic()
                if now >= deadline:
                    seen = ", ".join(sorted({f"0b{r:04b}" for r in reads}))
                    raise LineFault(
                        f"MT8880 did not answer: TDRE not set {timeout_s * 1000:.0f} ms after "
                        f"sending {key!r} (status reads: {seen})"
                    )
                if irq is not None:
                    irq.wait(deadline - now)
                    # Cleared before the read, which releases IRQ: an edge from
                    # something else (RDRF) must not make this loop spin.
                    irq.clear()
                else:
                    # Polled all through the burst, not only near its end: noise
                    # on D0-D3 shows TDRE early, which one late read would miss.
                    time.sleep(min(poll_s, deadline - now))
            status = self.read_status()
            # The sample was taken before this moment: the burst took at most this.
            took = time.monotonic() - started
            reads.append(status)
            if not status & Status.TDRE:
                continue
            # TDRE early is no chip's; judged by the time the read really came
            # (a thread preempted past the burst's end reads TDRE set, rightly).
            if took < EARLIEST_TDRE * length:
                what = ("TDRE set right after a code was written" if len(reads) == 1
                        else f"TDRE set {took * 1000:.1f} ms into a {length * 1000:.0f} ms burst")
                raise self._unlike_a_chip(what, status, early=len(reads) > 1)
            again = self.read_status()
            if again & Status.TDRE:
                raise self._unlike_a_chip("TDRE still set after the read that clears it", again)
            self.busy_until = started + took
            self.last_burst_s = took
            return

    def _unlike_a_chip(self, what: str, status: Status, early: bool = False) -> LineFault:
        """A fault for a status no working chip gives, saying whether D0-D3
        read one fixed value or noise (three more reads decide)."""
        reads = [int(status)] + [int(self.read_status()) for _ in range(3)]
        listed = ", ".join(f"0b{r:04b}" for r in reads)
        if early and not any(r & Status.TDRE for r in reads[1:]) and len(set(reads[1:])) == 1:
            # A chip whose burst really ended early: the read cleared TDRE.
            return LineFault(f"MT8880 burst too short: {what} (a crystal other than "
                             "3.579545 MHz? the tone frequencies are off by as much)")
        if len(set(reads)) == 1:
            return LineFault(f"MT8880 status stuck at {describe(status)}: {what}")
        return LineFault(f"MT8880 status reads noise ({listed} in a row): {what}")


@dataclass
class MT8880Options:
    """``[[line]]`` keys for ``driver = "mt8880"``. Pin numbers are BCM GPIO
    numbers; the defaults follow the wiring table in firmware-notes/mt8880.md."""

    #: D0, D1, D2, D3 in that order.
    data_pins: list[int] = field(default_factory=lambda: [5, 6, 12, 13])
    rs0_pin: int = field(default=16, metadata={"min": 0, "max": 27})
    rw_pin: int = field(default=26, metadata={"min": 0, "max": 27})
    cs_pin: int = field(default=24, metadata={"min": 0, "max": 27})
    phi2_pin: int = field(default=25, metadata={"min": 0, "max": 27})
    #: IRQ/CP (open drain, pulled up here); unset = poll the status register.
    irq_pin: int | None = field(default=None, metadata={"min": 0, "max": 27})
    #: The Pi's pull on D0-D3 ("up", "down", "off"): what the pins read
    #: while the level shifter does not drive them (without power).
    data_pull: str = field(default="down", metadata={"choices": PULLS})
    setup_us: float = field(default=5.0, metadata={"min": 0.0, "max": 10000.0})
    strobe_us: float = field(default=5.0, metadata={"min": 0.0, "max": 10000.0})
    hold_us: float = field(default=5.0, metadata={"min": 0.0, "max": 10000.0})
    #: Oscillator start-up before the initialisation sequence.
    power_up_ms: int = field(default=100, metadata={"min": 0, "max": 5000})
    #: false: tones timed by the driver (Duration/Gap honoured); true: the
    #: chip's own 51 ms tone / 51 ms pause.
    burst: bool = False
    #: How long a burst may take before the chip counts as not answering.
    tdre_timeout_ms: int = field(default=300, metadata={"min": 110, "max": 5000})
    #: Status polling interval while waiting for TDRE (without irq_pin).
    poll_ms: float = field(default=2.0, metadata={"min": 0.1, "max": 50.0})
    #: Hear the line while off hook: the chip's receiver gives the far end's
    #: keys and, with ``irq_pin``, its call-progress mode follows a call's
    #: set-up. false for a board whose receiver input is not wired (left
    #: floating, it chatters into the status register).
    listen: bool = True
    #: The call-progress cadences the line expects ("" = ``[tones] country``).
    country: str = field(default="", metadata={"choices": ("", *sorted(COUNTRIES))})
    #: How often the receiver's status is read for keys: always without
    #: ``irq_pin``; with it, only while a key sounds (for its length). A key
    #: waits in the receive register until the next, at least 80 ms later.
    listen_poll_ms: float = field(default=10.0, metadata={"min": 1.0, "max": 20.0})
    #: Run on a simulated chip on mock pins (no hardware needed); the chip is
    #: attached where the line is assembled (:func:`gateway.lines.build_line`).
    simulate: bool = False
    #: With ``simulate``: where each call's TONE audio goes, <CallId>.wav; "" = nowhere.
    record_dir: str = field(default="", metadata={"path": True})
    #: Hook relay and ring detect, as on the audio-HAT line (``[line.gpio]``);
    #: its ``pin_factory`` chooses the GPIO library for the bus too.
    gpio: GpioOptions = field(default_factory=GpioOptions)
    call_timing: CallTiming = field(default_factory=CallTiming)

    def __post_init__(self) -> None:
        if len(self.data_pins) != 4:
            raise ValueError(f"data_pins: D0-D3 need 4 pins, got {len(self.data_pins)}")
        for pin in self.data_pins:
            if not 0 <= pin <= 27:
                raise ValueError(f"data_pins: GPIO {pin} is not on the header (0-27)")
        self.data_pull = pull_word("data_pull", self.data_pull)
        self._check_distinct()

    def bus_pins(self) -> dict[str, int]:
        pins = {f"D{i}": n for i, n in enumerate(self.data_pins)}
        pins.update(RS0=self.rs0_pin, RW=self.rw_pin, CS=self.cs_pin, PHI2=self.phi2_pin)
        if self.irq_pin is not None:
            pins["IRQ"] = self.irq_pin
        return pins

    def _check_distinct(self) -> None:
        seen: dict[int, str] = {}
        for name, pin in self.bus_pins().items():
            if pin in seen:
                raise ValueError(f"pins: GPIO {pin} is used for both {seen[pin]} and {name}")
            seen[pin] = name

    @property
    def bus_timing(self) -> BusTiming:
        return BusTiming(self.setup_us, self.strobe_us, self.hold_us)


#: The last stretch of every timed wait is spun rather than slept: sleeping
#: overshoots by a scheduler tick, which would land on every tone edge.
SPIN_S = 0.0015


class Listening(enum.Enum):
    """What the chip's receiver listens for (the README's driver table)."""

    #: On hook, or ``listen = false``.
    OFF = "off"
    #: DTMF mode: the receiver decodes the far end's keys (and hears our own).
    DTMF = "dtmf"
    #: Call-progress mode (CRA.CP): IRQ/CP follows energy in the call-progress
    #: band; no DTMF is decoded. Only with ``irq_pin``, while a call is set up.
    CALL_PROGRESS = "call-progress"


#: How often the hearing thread reports the time to the ears in CP mode.
HEARING_TICK_S = 0.02
#: With irq_pin, the status is still read this often: an IRQ edge missed
#: (the pin was already low) must not leave a key waiting.
IRQ_SAFETY_S = 0.1
#: A key whose delayed-steering flag never drops is reported after this.
LONGEST_KEY_S = 5.0
#: Two keys latched closer than this are not a chip's: a new key needs a
#: validated pause (about 20 ms) and a validated tone (about 30 ms) first.
NEXT_KEY_S = 0.04


class _KeyTracker:
    """The receiver's keys, for the hearing thread: when to read the status,
    which digits are our own echo or no chip's doing, and how long each key
    lasted (the delayed-steering flag, status b3, high while it sounds)."""

    def __init__(self, line: MT8880Line) -> None:
        self.line = line
        #: An IRQ edge came: read the status at once.
        self.irq = False
        self._read_at = 0.0
        self._last_latch = -1.0
        self._pending: Received | None = None

    @property
    def wait_s(self) -> float:
        """How long the hearing thread may wait (for IRQ, where wired) before the next poll."""
        opts = self.line.options
        if opts.irq_pin is None or self._pending is not None:
            return opts.listen_poll_ms / 1000
        return IRQ_SAFETY_S

    def poll(self, chip: MT8880) -> list[LineEvent]:
        line = self.line
        now = time.monotonic()
        due = (line.options.irq_pin is None or self.irq or self._pending is not None
               or now - self._read_at >= IRQ_SAFETY_S)
        # Never in the middle of sending: the tones' timing comes first, and
        # a burst's own status reads collect any digit meanwhile.
        if due and line._lock.acquire(blocking=False):
            try:
                if line.chip is chip and line._listening is Listening.DTMF:
                    status = chip.read_status()
                    self._read_at, self.irq = now, False
                    if status & Status.TDRE:
                        raise LineFault(f"MT8880 status reads {describe(status)} with no burst "
                                        "sent: no chip gives that (noise on D0-D3?)")
            finally:
                line._lock.release()
        events: list[LineEvent] = []
        while chip.received:
            digit = chip.received.popleft()
            if chip.is_echo(digit):
                line.echoes += 1
                log.debug("line %s: heard our own %s back", line.name, digit.key)
                continue
            if digit.at - self._last_latch < NEXT_KEY_S:
                raise LineFault(f"MT8880 receive register full again "
                                f"{(digit.at - self._last_latch) * 1000:.0f} ms after it was "
                                "read: RDRF stuck (D2 shorted high?)")
            self._last_latch = digit.at
            events += self.flush()
            if digit.steering and not digit.steering_before:
                self._pending = digit  # reported when the flag drops: the key's end
            else:
                events.append(self._key(digit, 0.0))
        pending = self._pending
        if pending is not None and (
                (not chip.steering and self._read_at > pending.at)
                or now - pending.at > LONGEST_KEY_S):
            events += self.flush()
        return events

    def flush(self) -> list[LineEvent]:
        """The key in progress, reported now."""
        pending, self._pending = self._pending, None
        if pending is None:
            return []
        return [self._key(pending, max(0.0, self._read_at - pending.at))]

    def _key(self, digit: Received, seconds: float) -> Dtmf:
        self.line.keys_heard += 1
        return Dtmf(round(digit.at - self.line._offhook_at, 3), digit.key, round(seconds * 1000))


class MT8880Line(LineDriver):
    """A phone line whose tones come from an MT8880 on GPIO.

    ``pin_factory`` is the gpiozero factory the bus, relay and ring detect
    use: a ``MockFactory`` with a simulated chip attached, from whoever
    assembled the line, or ``None`` for the one ``options.gpio.pin_factory``
    names (gpiozero's default when that is ""), opened with the line.
    """

    driver_name = "mt8880"

    def __init__(
        self,
        name: str,
        options: MT8880Options,
        engine: ToneEngine,
        *,
        pin_factory: Any = None,
    ) -> None:
        super().__init__(name)
        self.options = options
        self.engine = engine
        self.call_timing = options.call_timing
        self._given_factory = pin_factory
        self.bus: MT8880Bus | None = None
        self.chip: MT8880 | None = None
        self.control: LineControl | None = None
        # Held for whole operations on the chip; close() and on_hook() do not
        # wait for it to drop the relay.
        self._lock = threading.RLock()
        self._closing = threading.Event()
        # Set while on hook. Keys being sent (a tone, a gap, a pause) stop when
        # the line goes on hook, whichever thread puts it there; the waits of
        # opening and probing, which happen on hook, do not.
        self._released = threading.Event()
        self._released.set()
        self._in_emit = False
        # When a burst this driver started is surely over, across close and
        # open: a code written during a burst is refused by the chip's rules.
        self._quiet_at = 0.0
        self._listening = Listening.OFF
        self._hearing_stop = threading.Event()
        self._hearing_stop.set()
        self._offhook_at = 0.0
        self.keys_heard = 0
        self.echoes = 0
        if options.listen:
            hears = Hears.KEYS
            if options.irq_pin is not None:
                # IRQ/CP is the only way out of the chip for call progress.
                hears |= Hears.TONES | Hears.VOICE
            if options.gpio.loop_current_pin is not None:
                hears |= Hears.LOOP
            self.ears = ChipEars(name, hears, options.country or "us", self._talk)

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            if self.bus is not None:
                return
            self._closing.clear()
            try:
                factory = self._factory()
                gpio = self.options.gpio
                # Every ring is reported: the call layer groups them into a call
                # and keeps it ringing until they stop.
                self.control = LineControl(self.name, gpio, on_ring=self._ring, factory=factory,
                                           on_loop_break=self.loop_break, line_clock=self._now)
                self.control.open()
                opts = self.options
                data = (opts.data_pins[0], opts.data_pins[1], opts.data_pins[2], opts.data_pins[3])
                self.bus = MT8880Bus(factory, data, opts.rs0_pin, opts.rw_pin, opts.cs_pin,
                                     opts.phi2_pin, opts.irq_pin, opts.bus_timing, opts.data_pull)
                self.chip = MT8880(self.bus)
                self._hook = HookState.ON_HOOK
                self._bring_up()
            except LineFault as exc:
                self.fault = str(exc)
                self._release()
                raise
            except Exception as exc:
                self.fault = f"MT8880: {exc}"
                self._release()
                raise LineFault(self.fault) from exc
            self.fault = None
            self._log_opened()

    def _factory(self) -> Any:
        if self._given_factory is not None:
            return self._given_factory
        if self.options.simulate:
            raise LineFault(
                "simulate = true, but no simulated chip was attached: assemble the line with "
                "gateway.lines.build_line"
            )
        return pin_factory(self.options.gpio.pin_factory)

    def _log_opened(self) -> None:
        mode = "burst" if self.options.burst else "non-burst"
        chip = self.chip
        if not self._can_prove:
            log.warning("line %s: MT8880 opened in %s mode; chip unproven: %s", self.name, mode,
                        self._proof)
        elif chip is not None and chip.last_burst_s is not None:
            log.info("line %s: MT8880 opened in %s mode; chip proven: TDRE after a "
                     "%.1f ms burst", self.name, mode, chip.last_burst_s * 1000)
        else:
            log.info("line %s: MT8880 opened in %s mode; chip unproven until %s", self.name,
                     mode, self._proof)

    def _bring_up(self) -> None:
        """Initialise the chip, prove it answers, and select the transmit mode."""
        chip = self._ready_chip()
        self._wait_until(self._quiet_at)
        chip.initialise(self.options.power_up_ms / 1000, wait=self._wait)
        if self._can_probe:
            self._probe()
        chip.set_burst_mode(self.options.burst)

    @property
    def _can_probe(self) -> bool:
        # The probe burst is audible on TONE: only a released hook relay
        # keeps it off the line.
        return self.options.gpio.hook_relay_pin is not None

    @property
    def _can_prove(self) -> bool:
        return self._can_probe or self.options.burst

    @property
    def _proof(self) -> str:
        """What proves this line's chip alive, in words for status and the log."""
        if self._can_probe:
            return "a probe burst on hook, at open and before every off-hook"
        if self.options.burst:
            return "the first digit's TDRE, and every digit's after it"
        return ("nothing: in non-burst mode without a hook relay no read-back of the chip "
                "stays off the line, so an absent chip goes unnoticed (set "
                "gpio.hook_relay_pin, or burst = true)")

    def _probe(self) -> None:
        chip = self._ready_chip()
        chip.set_burst_mode(True)
        chip.write_cra(self._burst_cra())
        try:
            self._burst(PROBE_KEY)
        finally:
            chip.write_cra(CRA(0))
        chip.set_burst_mode(self.options.burst)

    def close(self) -> None:
        self._closing.set()
        self.on_hook()
        with self._lock:
            if self.chip is not None:
                # The chip may be why we are closing; the relay is already off.
                with contextlib.suppress(Exception):
                    self.chip.write_cra(CRA(0))
            self._release()

    def _release(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.bus is not None:
            self.bus.close()
            self.bus = None
        if self.chip is not None:
            self._quiet_at = max(self._quiet_at, self.chip.busy_until)
        self.chip = None
        self._hook = HookState.ON_HOOK

    def _ready_chip(self) -> MT8880:
        if self.chip is None:
            raise LineFault("the line is not open")
        return self.chip

    # -- hook ------------------------------------------------------------------------
    def off_hook(self) -> None:
        with self._lock:
            self._ready_chip()
            try:
                if self._can_probe:
                    self._probe()
            except LineFault as exc:
                raise self._fail(str(exc)) from exc
            except Exception as exc:
                raise self._fail(f"MT8880: {exc}") from exc
            control = self.control
            assert control is not None
            try:
                control.off_hook()
            except LineFault as exc:
                raise self._fail(str(exc)) from exc
            self._hook = HookState.OFF_HOOK
            self._released.clear()
            self._start_hearing()

    def on_hook(self) -> None:
        self._hook = HookState.ON_HOOK
        self._released.set()
        control = self.control
        if control is not None:
            control.on_hook()
        self._stop_hearing()

    def _fail(self, message: str) -> LineFault:
        """Record a fault, drop the line, and give the exception to raise."""
        self.fault = message
        self.on_hook()
        return LineFault(message)

    # -- signalling --------------------------------------------------------------------
    def emit(self, plan: TonePlan, party: Party = Party.ALL) -> None:
        # One analog pair: every party hears the same tones.
        with self._lock:
            chip = self._ready_chip()
            if self._hook is not HookState.OFF_HOOK:
                raise LineFault("the line is on hook: tones would reach nobody")
            self._in_emit = True
            # The chip decodes no DTMF in call-progress mode and doubles its
            # bursts there: dialling happens in DTMF mode, and the set-up is
            # followed again once the digits are out.
            following = self._listening is Listening.CALL_PROGRESS
            try:
                if following:
                    self._listen(Listening.DTMF)
                if chip.burst_mode:
                    self._emit_burst(chip, plan)
                else:
                    self._emit_timed(chip, plan)
                if following and self._hook is HookState.OFF_HOOK:
                    self._listen(Listening.CALL_PROGRESS)
            except LineInterrupted:
                # On hook from another thread (a hang-up): TOUT off, the relay
                # is already released; no fault of the chip.
                self._silence(chip)
                raise
            except LineFault as exc:
                self._silence(chip)
                raise self._fail(str(exc)) from exc
            except Exception as exc:
                self._silence(chip)
                raise self._fail(f"MT8880: {exc}") from exc
            finally:
                self._in_emit = False

    def _silence(self, chip: MT8880) -> None:
        # A dead chip cannot be silenced; the relay drops next.
        with contextlib.suppress(Exception):
            chip.write_cra(self._resting_cra(Listening.DTMF))

    def _emit_timed(self, chip: MT8880, plan: TonePlan) -> None:
        """Non-burst: the driver times every edge. Each tone and gap is
        measured from the actual previous edge, so a late wake-up never
        shortens the next one."""
        bus = chip.bus
        on_s = plan.timing.duration_ms / 1000
        off_s = plan.timing.gap_ms / 1000
        next_on = time.monotonic()
        for symbol in plan.symbols:
            if isinstance(symbol, Pause):
                next_on += symbol.ms / 1000
                continue
            assert isinstance(symbol, Tone)
            chip.write_transmit(symbol.key)  # TOUT is off: nothing sounds yet
            # An edge happens when phi2 falls, latch_delay after its write
            # begins: start each write that much early.
            self._wait_until(next_on - bus.latch_delay(RS0.CONTROL))
            chip.tone_output(True)
            self._wait_until(bus.latched_at + on_s - bus.latch_delay(RS0.CONTROL))
            chip.tone_output(False)
            next_on = bus.latched_at + off_s
        self._wait_until(next_on)

    def _emit_burst(self, chip: MT8880, plan: TonePlan) -> None:
        """Burst: the chip times 51 ms on / 51 ms off; the driver waits for TDRE."""
        chip.write_cra(self._burst_cra())
        try:
            for symbol in plan.symbols:
                if isinstance(symbol, Pause):
                    self._wait(symbol.ms / 1000)
                else:
                    assert isinstance(symbol, Tone)
                    self._burst(symbol.key)
        finally:
            chip.write_cra(self._resting_cra(self._listening))

    def _burst_cra(self) -> CRA:
        return CRA.TOUT | (CRA.IRQ if self.options.irq_pin is not None else CRA(0))

    def _burst(self, key: str) -> None:
        chip = self._ready_chip()
        bus = chip.bus
        self._check_interrupted()
        chip.burst(key, self.options.tdre_timeout_ms / 1000, self.options.poll_ms / 1000,
                   bus.irq_event)

    # -- hearing -------------------------------------------------------------------------
    def _resting_cra(self, mode: Listening) -> CRA:
        """CRA between tones: IRQ where the pin is wired, CP in CP mode."""
        if mode is Listening.OFF:
            return CRA(0)
        cra = CRA.IRQ if self.options.irq_pin is not None else CRA(0)
        return cra | CRA.CP if mode is Listening.CALL_PROGRESS else cra

    def _listen(self, mode: Listening) -> None:
        """Put the receiver in ``mode`` (with the lock held, the chip open)."""
        chip = self._ready_chip()
        if mode is not self._listening:
            log.debug("line %s: MT8880 receiver now in %s mode", self.name, mode.value)
        chip.write_cra(self._resting_cra(mode))
        if mode is Listening.CALL_PROGRESS:
            chip.bus.irq_edges.clear()  # edges of the other mode meant something else
        self._listening = mode

    def _start_hearing(self) -> None:
        """Off hook: listen (with the lock held), and start the hearing thread."""
        ears = self.ears
        if ears is None:
            return
        self._stop_hearing()
        self._offhook_at = time.monotonic()
        ears.start()
        if ears.hears & Hears.TONES:
            self._listen(Listening.CALL_PROGRESS)
        else:
            self._listen(Listening.DTMF)
        stop = threading.Event()
        self._hearing_stop = stop
        threading.Thread(target=self._hear, args=(stop, ears), name=f"{self.name}-hearing",
                         daemon=True).start()

    def _stop_hearing(self) -> None:
        """On hook (from any thread, never waiting): hearing stops, and with it
        a set-up waiting on it. The chip's mode is left: the next off-hook sets it."""
        self._hearing_stop.set()
        self._listening = Listening.OFF
        if self.ears is not None:
            self.ears.stop()

    def _talk(self) -> None:
        """The call is up (ears.talking, on the line's worker): DTMF mode, to
        hear the far end's keys. From here the chip hears no call-progress
        tone: a far end that hangs up is noticed only by loop-current sense."""
        with self._lock:
            if self.chip is not None and self._listening is Listening.CALL_PROGRESS:
                self._listen(Listening.DTMF)

    def _now(self) -> float:
        """Line time: seconds since off hook."""
        return time.monotonic() - self._offhook_at

    def _hear(self, stop: threading.Event, ears: ChipEars) -> None:
        """The hearing thread, off hook to on hook: call progress from the
        IRQ/CP edges in CP mode, keys from the receiver in DTMF mode, and the
        passing of time, to the ears."""
        progress = EdgeProgress(self.options.country or "us")
        keys = _KeyTracker(self)
        mode = Listening.OFF
        try:
            while not stop.is_set():
                now_mode = self._listening
                events: list[LineEvent] = []
                chip = self.chip
                if chip is None:
                    return
                if now_mode is Listening.CALL_PROGRESS:
                    if mode is not now_mode:
                        progress.reset(self._now())
                    edges = chip.bus.irq_edges
                    times = [edges.popleft() - self._offhook_at for _ in range(len(edges))]
                    events = progress.feed(times, self._now())
                    wait = HEARING_TICK_S
                elif now_mode is Listening.DTMF:
                    events = keys.poll(chip)
                    wait = keys.wait_s
                else:
                    wait = HEARING_TICK_S
                if now_mode is not Listening.DTMF:
                    events += keys.flush()
                mode = now_mode
                if stop.is_set():
                    return
                ears.heard(events, self._now())
                irq = chip.bus.irq_event
                if now_mode is Listening.DTMF and irq is not None:
                    if irq.wait(wait):
                        keys.irq = True
                        irq.clear()
                else:
                    stop.wait(wait)
        except LineFault as exc:
            if not stop.is_set():
                log.error("line %s: hearing failed: %s", self.name, exc)
                ears.failed(exc)
        except Exception as exc:
            if not stop.is_set():
                log.exception("line %s: hearing failed", self.name)
                ears.failed(LineFault(f"MT8880: {exc}"))

    def loop_break(self, event: LineEvent) -> None:
        """What loop-current sense reports (a :class:`LoopBreak`), timed in
        line time (:meth:`_now`): to the ears. The one thing the line hears of
        a far end that hangs up during the talk, since the chip is in DTMF
        mode then."""
        ears = self.ears
        if ears is None or self._hook is not HookState.OFF_HOOK:
            return
        ears.heard([event], self._now())

    # -- waiting -----------------------------------------------------------------------
    def _wait(self, seconds: float) -> None:
        self._wait_until(time.monotonic() + seconds)

    def _check_interrupted(self) -> None:
        if self._closing.is_set():
            raise LineFault("line closed while sending")
        if self._in_emit and self._released.is_set():
            raise LineInterrupted("the line went on hook")

    def _wait_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (monotonic), spinning the last
        :data:`SPIN_S`; close() cuts it short with LineFault, and going on
        hook while keys are sent with LineInterrupted."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._check_interrupted()
            if remaining > SPIN_S:
                (self._released if self._in_emit else self._closing).wait(remaining - SPIN_S)
            else:
                while time.monotonic() < deadline:
                    pass
                return

    # -- health ------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        out = super().status()
        chip = self.chip
        out["mode"] = "burst" if self.options.burst else "non-burst"
        out["simulated"] = self.options.simulate
        out["listening"] = self._listening.value
        heard = [f.name.lower() for f in Hears if f & self.hears and f.name]
        out["hears"] = "+".join(heard) or "nothing"
        out["keys_heard"] = self.keys_heard
        proven = self._can_prove and chip is not None and chip.last_burst_s is not None
        out["chip"] = "proven" if proven else "unproven"
        out["chip_check"] = self._proof
        if chip is not None:
            out["bus_cycles"] = chip.bus.cycles
            if chip.last_burst_s is not None:
                out["last_burst_ms"] = round(chip.last_burst_s * 1000, 1)
        if self.control is not None:
            out.update(self.control.status())
        return out
