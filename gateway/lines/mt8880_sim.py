"""A simulated MT8880 on gpiozero ``MockFactory`` pins, strict where the chip is.

A second opinion on the driver, not a copy of it: the tone codes, register
bits and burst timing are typed in here from the MT8880C data sheet, and
nothing is imported from :mod:`gateway.lines.mt8880`, so a driver with a
wrong code or bit sends something this chip reads differently.

In the style of gpiozero's ``MockSPIDevice``: the simulator creates the bus
pins in the mock factory with its own pin class, so every level or direction
the driver sets reaches it as it happens. It decodes bus cycles on phi2
edges (address and R/W taken as phi2 rises, write data latched as it falls),
drives D0-D3 while phi2 is high on reads, keeps the registers, runs the burst
timer and TDRE, raises IRQ, and records what its TONE pin emits so tests can
render it with the tone engine and decode it with multimon-ng.

It also hears the line (:meth:`MT8880Simulator.connect_line`): the far end's
audio, plus its own TONE through the line interface's hybrid, while the hook
relay is closed. In DTMF mode a receiver of its own (Goertzel at the Q.23
frequencies, the data sheet's level and twist limits, and the guard times of
the wiring notes' steering RC) latches each key into the receive data
register with RDRF, IRQ and the delayed-steering flag; in call-progress mode
(CRA.CP with CRA.IRQ) IRQ/CP toggles at the strongest frequency in the
data sheet's call-progress band while that band holds enough energy, and no
DTMF is decoded. The audio is taken in real time, every 10 ms; what IRQ/CP
and the status register show is true from then.

Wiring assumed (firmware-notes/mt8880.md): D0-D3 through a 74LVC245 whose
direction follows R/W and whose outputs are always enabled, so the shifter
drives the Pi side whenever R/W is high.

Protocol violations a real chip (or the shifter) would punish are recorded in
:attr:`MT8880Simulator.violations` and raised at once as
:class:`ProtocolViolation` in the thread that caused them:

- a cycle with CS high (phi2 strobed while deselected), or a second cycle
  without CS going back high;
- CS released while phi2 is still high (the cycle is abandoned, not latched);
- RS0 or R/W changing while CS is low, and anything on the bus changing while
  phi2 is high;
- a write whose data is not driven when phi2 rises;
- D0-D3 driven by the Pi while R/W is high (bus contention with the shifter);
- a bus cycle before the oscillator has started (``power_up_s``);
- a tone sent before the datasheet's initialisation sequence;
- call-progress mode (CRA.CP) while DTMF is being sent;
- a code written in burst mode while the previous burst runs (TDRE clear).

Fault modes (:class:`Fault`), as the wiring notes' 74LVC245 (direction from
R/W, outputs always enabled) makes them look on the Pi's pins: an absent chip
with the 100 k pull-downs on the shifter's chip side (every read 0000), an
absent chip without them (every read noise), the shifter without power (the
Pi's pins read their own pulls, and nothing reaches the chip), and a stuck
status register. A chip put back (absent to none) powers up afresh and needs
the initialisation sequence again.

What the data sheet leaves open is modelled the cautious way and marked
**verify** in firmware-notes/mt8880.md: a code written in burst mode with
CRA.TOUT clear starts no burst (CRA.TOUT "controls all transmit tone
functions"), so TDRE cannot serve as a silent proof of life.
"""

from __future__ import annotations

import collections
import enum
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from gpiozero.pins.mock import MockFactory, MockPin

from gateway.lines.recording import DEFAULT_MAX_RECORD_S, RenderedRecorder
from gateway.tones import Samples, ToneEngine

if TYPE_CHECKING:
    from gateway.lines.mt8880 import MT8880Options

# -- the data sheet, typed in here --------------------------------------------------------

#: "Functional Encode/Decode Table": D3..D0 of each key, with the row (low
#: group) and column (high group) frequency in Hz that the transmitter sends.
DATASHEET_CODES: dict[int, tuple[str, float, float]] = {
    0b0001: ("1", 697, 1209), 0b0010: ("2", 697, 1336), 0b0011: ("3", 697, 1477),
    0b0100: ("4", 770, 1209), 0b0101: ("5", 770, 1336), 0b0110: ("6", 770, 1477),
    0b0111: ("7", 852, 1209), 0b1000: ("8", 852, 1336), 0b1001: ("9", 852, 1477),
    0b1010: ("0", 941, 1336), 0b1011: ("*", 941, 1209), 0b1100: ("#", 941, 1477),
    0b1101: ("A", 697, 1633), 0b1110: ("B", 770, 1633), 0b1111: ("C", 852, 1633),
    0b0000: ("D", 941, 1633),
}
#: Key -> D3..D0, the same table read the other way.
CODES: dict[str, int] = {key: code for code, (key, _, _) in DATASHEET_CODES.items()}

#: RS0: low selects the transmit/receive data registers, high the control
#: registers (write) and the status register (read).
RS0_DATA, RS0_CONTROL = 0, 1


class CRA(enum.IntFlag):
    """Control register A, bits b0-b3."""

    TOUT = 0b0001  #: tone output
    CP = 0b0010  #: call-progress mode (0 = DTMF)
    IRQ = 0b0100  #: interrupt enable
    RSEL = 0b1000  #: the next control write goes to register B


class CRB(enum.IntFlag):
    """Control register B, bits b0-b3."""

    BURST = 0b0001  #: 1 = burst mode off (TOUT alone times the tone)
    TEST = 0b0010
    SD = 0b0100  #: single tone (0 = dual)
    CR = 0b1000  #: in single-tone mode: column (1) or row (0) tone


class Status(enum.IntFlag):
    """Status register, bits b0-b3."""

    IRQ = 0b0001
    TDRE = 0b0010  #: transmit data register empty (burst mode: the pause is over)
    RDRF = 0b0100  #: receive data register full
    DSTEER = 0b1000  #: delayed steering


#: Burst mode with the 3.579545 MHz crystal: 51 ms tone, then 51 ms pause;
#: call-progress mode doubles both.
BURST_S = 0.051
PAUSE_S = 0.051

#: The initialisation sequence on the control side: read, 0, 0, 8, 0, read.
INIT_SEQUENCE: tuple[tuple[bool, int | None], ...] = (
    (False, None), (True, 0), (True, 0), (True, int(CRA.RSEL)), (True, 0), (False, None),
)


#: How many bus cycles and tone segments the simulator remembers.
HISTORY = 100_000

# -- the receiver and the call-progress filter, typed in here too ------------------------

#: The receiver works on the line at 8 kHz (a far end at a multiple of it is
#: decimated); levels are dBm0 there, taking the line interface at unity gain
#: (0 dBm on the line = 0 dBm0 = a sine 3.14 dB below full scale).
RATE = 8000
FULL_SCALE_DBM0 = 3.14
#: ITU-T Q.23 row (low group) and column (high group) frequencies, Hz.
ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
#: "Valid input signal levels (each tone of composite signal)": -29 dBm and up.
MIN_TONE_DBM0 = -29.0
#: "Positive twist accept" and "negative twist accept": 8 dB each way.
TWIST_DB = 8.0
#: The two tones must hold this share of what the receiver hears (speech,
#: dial tone and noise spread theirs elsewhere). The chip's filters are not
#: modelled further: this receiver is good enough to judge a driver by, not a
#: Q.24 reference.
TONE_SHARE = 0.6
#: Goertzel over 17 ms every 5 ms: the tone-present/absent detection of the
#: model takes about 10 ms each way, as the data sheet's t_DP and t_DA.
KEY_WINDOW, KEY_HOP = 136, 40
#: The steering RC of the wiring notes (R3 = 300 k, C3 = 100 nF) and the data
#: sheet's guard-time formulas, VDD = 5 V and V_TSt = 2.35 V (typical):
#: t_GTP = RC ln(VDD / (VDD - V_TSt)), t_GTA = RC ln(VDD / V_TSt).
STEERING_RC_S = 300e3 * 100e-9
GUARD_TONE_S = STEERING_RC_S * float(np.log(5.0 / (5.0 - 2.35)))
GUARD_PAUSE_S = STEERING_RC_S * float(np.log(5.0 / 2.35))
#: Call-progress mode: the band the filter accepts and the level it needs
#: (the data sheet's "accept bandwidth" 310-500 Hz, detect level -30 dBm;
#: **verify**, firmware-notes/mt8880.md). The comparator's output toggles at
#: the strongest frequency in that band.
CP_BAND_HZ = (310.0, 500.0)
CP_DETECT_DBM0 = -30.0
CP_WINDOW, CP_HOP = 400, 80
#: The chip's own TONE reaches its receiver through the line interface's
#: hybrid: the data sheet's output levels (row -16 dBm, column -14 dBm,
#: **verify**) less a trans-hybrid loss of 10 dB (typical of a DAA; **verify**).
ECHO_ROW_DBM0, ECHO_COLUMN_DBM0 = -26.0, -24.0
#: A far end's audio, pulled as the chip listens: the next ``n`` samples at
#: :data:`RATE`, or an object like :class:`gateway.lines.hearing.CaptureSource`.
FarEnd = Any


def _peak(dbm0: float) -> float:
    """A sine's peak in int16 units at ``dbm0``."""
    return float(32767 * 10 ** ((dbm0 - FULL_SCALE_DBM0) / 20))


class _Receiver:
    """The DTMF receiver: Goertzel at the eight frequencies, the signal
    condition (early steering), then the steering RC's guard times."""

    def __init__(self, guard_tone_s: float, guard_pause_s: float) -> None:
        self.guard_tone_s = guard_tone_s
        self.guard_pause_s = guard_pause_s
        n = np.arange(KEY_WINDOW)
        self._basis = np.exp(-2j * np.pi * np.outer(n, ROW_HZ + COLUMN_HZ) / RATE)
        self._keys = {(low, high): key for key, low, high in DATASHEET_CODES.values()}
        self._min_amp = _peak(MIN_TONE_DBM0)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0)
        self._candidate: str | None = None
        # How long the signal condition has held for the candidate, and how
        # long it has been gone: from the first window that showed it, so a
        # tone of 20 ms is never registered whatever its phase to the hops.
        self._present = 0.0
        self._absent = float("inf")
        self.latched: str | None = None  # registered, its pause not yet validated

    def feed(self, x: npt.NDArray[np.float64]) -> list[str | None]:
        """Samples heard; per registration the key, per validated pause None."""
        self._buf = np.concatenate([self._buf, x])
        count = (len(self._buf) - KEY_WINDOW) // KEY_HOP + 1
        if count <= 0:
            return []
        frames = np.lib.stride_tricks.sliding_window_view(self._buf, KEY_WINDOW)[::KEY_HOP][:count]
        self._buf = self._buf[count * KEY_HOP:]
        amp = 2 * np.abs(frames @ self._basis) / KEY_WINDOW
        row, col = amp[:, :4].argmax(axis=1), amp[:, 4:].argmax(axis=1) + 4
        idx = np.arange(count)
        low, high = amp[idx, row], amp[idx, col]
        heard = (frames ** 2).mean(axis=1) + 1e-9
        valid = ((low >= self._min_amp) & (high >= self._min_amp)
                 & (np.abs(20 * np.log10((low + 1e-9) / (high + 1e-9))) <= TWIST_DB)
                 & ((low ** 2 + high ** 2) / 2 >= TONE_SHARE * heard))
        freqs = ROW_HZ + COLUMN_HZ
        out: list[str | None] = []
        hop_s = KEY_HOP / RATE
        for ok, r, c in zip(valid.tolist(), row.tolist(), col.tolist(), strict=True):
            key = self._keys.get((freqs[r], freqs[c])) if ok else None
            if key is None:
                self._absent = self._absent + hop_s if self._candidate is None else 0.0
                self._candidate, self._present = None, 0.0
                if self.latched is not None and self._absent >= self.guard_pause_s:
                    self.latched = None
                    out.append(None)
                continue
            if key != self._candidate:
                self._candidate, self._present = key, 0.0
            else:
                self._present += hop_s
            if self.latched is None and self._present >= self.guard_tone_s:
                self.latched = key
                out.append(key)
        return out


class _CallProgressFilter:
    """Call-progress mode: energy in the band, and at what frequency, per 10 ms."""

    def __init__(self) -> None:
        self._window = np.hanning(CP_WINDOW)
        freqs = np.fft.rfftfreq(CP_WINDOW, 1 / RATE)
        self._band = (freqs >= CP_BAND_HZ[0]) & (freqs <= CP_BAND_HZ[1])
        self._freqs = freqs[self._band]
        self._scale = 2 / (CP_WINDOW * float((self._window ** 2).sum()))
        self._level = _peak(CP_DETECT_DBM0) ** 2 / 2
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(CP_WINDOW - CP_HOP)
        self._phase = 0.0  # in periods of the comparator's output

    def feed(self, x: npt.NDArray[np.float64]) -> int:
        """Samples heard; how many falling edges the comparator made meanwhile."""
        self._buf = np.concatenate([self._buf, x])
        count = (len(self._buf) - CP_WINDOW) // CP_HOP + 1
        if count <= 0:
            return 0
        frames = np.lib.stride_tricks.sliding_window_view(self._buf, CP_WINDOW)[::CP_HOP][:count]
        self._buf = self._buf[count * CP_HOP:]
        power = np.abs(np.fft.rfft(frames * self._window, axis=1))[:, self._band] ** 2
        loud = power.sum(axis=1) * self._scale >= self._level
        hz = self._freqs[power.argmax(axis=1)]
        cycles = float((hz * loud).sum()) * CP_HOP / RATE
        if not loud[-1]:
            self._phase = 0.0
        edges = int(self._phase + cycles) - int(self._phase)
        self._phase = (self._phase + cycles) % 1.0 if loud[-1] else 0.0
        return edges


class _FarEndReader:
    """Samples from a far end as the chip listens: a callable, or a capture
    source read on (and decimated to 8 kHz); silence once it has ended."""

    def __init__(self, far_end: FarEnd) -> None:
        self.far_end = far_end
        self._buf = np.zeros(0)
        self._ended = False
        rate = getattr(far_end, "rate", RATE)
        if rate % RATE:
            raise ValueError(f"a far end at {rate} Hz: the simulated chip takes multiples of "
                             f"{RATE} Hz")
        self._factor = rate // RATE

    def take(self, n: int) -> npt.NDArray[np.float64]:
        if not hasattr(self.far_end, "read"):
            got = np.asarray(self.far_end(n), dtype=np.float64)[:n]
            return np.concatenate([got, np.zeros(n - len(got))])
        while len(self._buf) < n and not self._ended:
            block = np.asarray(self.far_end.read(), dtype=np.float64)
            if len(block) == 0:
                self._ended = True
                break
            self._buf = np.concatenate([self._buf, block])
        whole = len(self._buf) // self._factor * self._factor
        have = self._buf[:whole].reshape(-1, self._factor).mean(axis=1)
        out, used = have[:n], min(n, len(have)) * self._factor
        self._buf = self._buf[used:]
        return np.concatenate([out, np.zeros(n - len(out))])

    def close(self) -> None:
        close = getattr(self.far_end, "close", None)
        if close is not None:
            close()


class RecordedFarEnd:
    """A far end that plays ``samples`` (8 kHz) once from the moment the chip
    starts listening, then silence: for tests and the bench."""

    def __init__(self, samples: npt.ArrayLike) -> None:
        self.samples = np.asarray(samples, dtype=np.float64)
        self.played = 0

    def __call__(self, n: int) -> npt.NDArray[np.float64]:
        out = self.samples[self.played: self.played + n]
        self.played += n
        return out


class ProtocolViolation(AssertionError):
    """A bus sequence a real MT8880 would punish; the message says which and where."""


class Fault(enum.Enum):
    NONE = "none"
    #: No chip (out of its socket, or without 5 V), with the 100 k pull-downs
    #: on the shifter's chip side: the '245 drives 0000 onto the Pi on every read.
    ABSENT = "absent"
    #: No chip and nothing holding the shifter's chip side: its floating CMOS
    #: inputs make every read noise.
    ABSENT_FLOATING = "absent-floating"
    #: The 74LVC245 without VCC: its outputs are off, so the Pi's pins read
    #: their own pulls, and nothing the Pi writes reaches the chip.
    SHIFTER_UNPOWERED = "shifter-unpowered"
    #: The status register reads one fixed value whatever happens.
    STUCK_STATUS = "stuck-status"


#: Faults under which the chip sees nothing of the bus.
_CUT_OFF = (Fault.ABSENT, Fault.ABSENT_FLOATING, Fault.SHIFTER_UNPOWERED)


@dataclass(frozen=True)
class BusCycle:
    """One decoded cycle, as the chip saw it."""

    time: float  #: monotonic time of the phi2 falling edge
    register: str  #: TX, RX, CRA, CRB or STATUS
    write: bool
    value: int
    #: Reads: whether the driver looked at every data pin while phi2 was high.
    sampled: bool = True

    def __str__(self) -> str:
        return f"{'write' if self.write else 'read'} {self.register}=0b{self.value:04b}"


@dataclass
class ToneSegment:
    """What the TONE pin emitted from ``start`` to ``end`` (monotonic seconds)."""

    start: float
    end: float
    key: str
    frequencies: tuple[float, ...]


class _BusPin(MockPin):  # type: ignore[misc]
    """A mock pin that reports what the driver does with it to the simulator."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.simulator: MT8880Simulator | None = None
        self.label = ""

    def _set_state(self, value: Any) -> None:
        super()._set_state(value)
        if self.simulator is not None:
            self.simulator._driven(self)

    def _set_function(self, value: str) -> None:
        before = self._function
        super()._set_function(value)
        if self.simulator is not None and value != before:
            self.simulator._direction(self)

    def _get_state(self) -> Any:
        if self.simulator is not None:
            self.simulator._sampled(self)
        return super()._get_state()


class _RelayPin(MockPin):  # type: ignore[misc]
    """The hook relay's pin, watched so that line audio is TONE while off hook."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.simulator: MT8880Simulator | None = None

    def _set_state(self, value: Any) -> None:
        super()._set_state(value)
        if self.simulator is not None:
            self.simulator._relay_changed(bool(value))


def _rest(pin: MockPin) -> None:
    """An input nobody drives settles at its pull."""
    if pin.pull == "up":
        pin.drive_high()
    elif pin.pull == "down":
        pin.drive_low()


def _level(pin: MockPin) -> int:
    # The simulator's own look at a pin must not count as the driver sampling it.
    return int(bool(MockPin._get_state(pin)))


class MT8880Simulator:
    """An MT8880 attached to mock pins. Create it before the driver opens the bus.

    ``power_up_s`` is how long after attaching the oscillator is running;
    ``strict`` raises each violation in the thread that caused it (they are
    recorded in :attr:`violations` either way). ``relay_pin`` (with
    ``relay_active_high``) is the hook relay: :meth:`line_audio` gives only
    what the TONE pin emitted while the line was off hook.
    """

    def __init__(
        self,
        factory: MockFactory,
        data_pins: Sequence[int],
        rs0_pin: int,
        rw_pin: int,
        cs_pin: int,
        phi2_pin: int,
        irq_pin: int | None = None,
        *,
        relay_pin: int | None = None,
        relay_active_high: bool = True,
        power_up_s: float = 0.1,
        strict: bool = True,
        noise_seed: int = 8880,
        guard_tone_s: float = GUARD_TONE_S,
        guard_pause_s: float = GUARD_PAUSE_S,
    ) -> None:
        self.factory = factory
        self.power_up_s = power_up_s
        self.strict = strict
        self._lock = threading.RLock()
        self._receiver = _Receiver(guard_tone_s, guard_pause_s)
        self._cp = _CallProgressFilter()
        self._open_far_end: Any = None
        self._far_end: _FarEndReader | None = None
        #: Monotonic time the chip began to hear the line (None: it hears nothing).
        self._listening_since: float | None = None
        self._heard = 0  # samples heard since then
        self._session = 0
        self._hearing: threading.Thread | None = None
        self._closed = threading.Event()
        #: Keys the receiver registered, and call-progress edges made: for tests.
        self.registered: list[tuple[float, str]] = []
        self.cp_edges = 0
        names = [f"D{i}" for i in range(len(data_pins))] + ["RS0", "R/W", "CS", "phi2"]
        numbers = [*data_pins, rs0_pin, rw_pin, cs_pin, phi2_pin]
        pins: list[_BusPin] = []
        for name, number in zip(names, numbers, strict=True):
            pin = factory.pin(number, pin_class=_BusPin)
            if not isinstance(pin, _BusPin):
                raise ValueError(
                    f"GPIO {number} ({name}) was created before the simulator: "
                    "attach the simulator before the driver opens its pins"
                )
            pin.label = name
            pins.append(pin)
        self.data: tuple[_BusPin, ...] = tuple(pins[:4])
        self.rs0, self.rw, self.cs, self.phi2 = pins[4:]
        # The board's pull-ups/downs (wiring notes): CS high and phi2 low while
        # the Pi has not configured its pins, so the chip stays deselected.
        self.cs.pull = "up"
        self.phi2.pull = "down"
        self.irq: MockPin | None = None
        if irq_pin is not None:
            self.irq = factory.pin(irq_pin)
            self.irq.pull = "up"  # IRQ/CP is open drain
        self._relay: _RelayPin | None = None
        self._relay_active_high = relay_active_high
        self._off_hook: list[list[float]] = []
        if relay_pin is not None:
            relay = factory.pin(relay_pin, pin_class=_RelayPin)
            if not isinstance(relay, _RelayPin):
                raise ValueError(f"GPIO {relay_pin} (hook relay) was created before the simulator")
            self._relay = relay
            relay.simulator = self

        self.fault = Fault.NONE
        self.stuck_status = 0
        self._noise = random.Random(noise_seed)
        self.violations: list[str] = []
        self._relay_watched = relay_pin is not None
        # Bounded, because ``serve`` may run a simulated chip for months.
        self.cycles: collections.deque[BusCycle] = collections.deque(maxlen=HISTORY)
        self.segments: collections.deque[ToneSegment] = collections.deque(maxlen=HISTORY)
        self.powered_at = time.monotonic()
        self._reset_registers()
        self._init_step = 0
        self.initialised = False
        # Cycle decoding state.
        self._in_cycle = False
        self._cycle_rs0 = 0
        self._cycle_write = False
        self._cycle_value = 0
        self._sampled_pins: set[int] = set()
        self._cs_high_since_cycle = True
        self._timers: list[threading.Timer] = []
        for pin in pins:
            pin.simulator = self

    @classmethod
    def for_options(
        cls,
        factory: MockFactory,
        options: MT8880Options,
        *,
        relay_pin: int | None = None,
        relay_active_high: bool = True,
        power_up_s: float | None = None,
        strict: bool = True,
    ) -> MT8880Simulator:
        """A simulator wired as ``options`` says the real chip is."""
        return cls(
            factory, options.data_pins, options.rs0_pin, options.rw_pin, options.cs_pin,
            options.phi2_pin, options.irq_pin, relay_pin=relay_pin,
            relay_active_high=relay_active_high,
            power_up_s=options.power_up_ms / 1000 if power_up_s is None else power_up_s,
            strict=strict,
        )

    def _reset_registers(self) -> None:
        self.cra = CRA(0)
        self.crb = CRB(0)
        self._rsel = False
        self.transmit = 0
        self.receive = 0
        self.status = Status(0)
        self._burst_end: float | None = None
        self._tone: ToneSegment | None = None

    # -- faults ------------------------------------------------------------------------
    def set_fault(self, fault: Fault, status: int | None = None) -> None:
        """Break the chip now (or mend it: ``Fault.NONE``). ``status`` is what a
        stuck status register reads (default: whatever it reads at this moment)."""
        with self._lock:
            now = time.monotonic()
            self._update(now)
            if fault is Fault.STUCK_STATUS:
                self.stuck_status = int(self.status) if status is None else status
            if fault in (Fault.ABSENT, Fault.ABSENT_FLOATING):
                self._end_tone(now)  # no chip, no tone
                self._burst_end = None
            if self.fault in (Fault.ABSENT, Fault.ABSENT_FLOATING) and fault not in (
                    Fault.ABSENT, Fault.ABSENT_FLOATING):
                # A chip put back powers up with its registers cleared.
                self._power_up(now)
            self._in_cycle = False
            self.fault = fault

    def _power_up(self, now: float) -> None:
        self.powered_at = now
        self._reset_registers()
        self._init_step = 0
        self.initialised = False

    # -- violations ---------------------------------------------------------------------
    def _violate(self, message: str) -> None:
        where = f"bus cycle {len(self.cycles) + 1}"
        if self.cycles:
            where += f" (after {self.cycles[-1]})"
        text = f"MT8880 protocol violation at {where}: {message}"
        self.violations.append(text)
        if self.strict:
            raise ProtocolViolation(text)

    def check(self) -> None:
        """Raise if any violation happened (for tests' teardown)."""
        if self.violations:
            raise ProtocolViolation("\n".join(self.violations))

    # -- pin events ---------------------------------------------------------------------
    def _driven(self, pin: _BusPin) -> None:
        with self._lock:
            if self.fault in _CUT_OFF:
                self._cut_off_read(pin)
                return
            level = _level(pin)
            phi2_high = _level(self.phi2) == 1
            if pin is self.phi2:
                if level:
                    self._phi2_rose()
                else:
                    self._phi2_fell()
                return
            if pin is self.cs and level and phi2_high and self._in_cycle:
                # The chip latches on phi2's fall with CS low; CS first leaves
                # the cycle undefined, so it is dropped.
                self._in_cycle = False
                self._cs_high_since_cycle = True
                self._violate("CS released while phi2 was high: phi2 must fall first")
                return
            if phi2_high and _level(self.cs) == 0 and self._in_cycle:
                self._violate(f"{pin.label} changed to {level} while phi2 was high")
                return
            if pin is self.cs:
                if level:
                    self._cs_high_since_cycle = True
                return
            if pin in (self.rs0, self.rw) and _level(self.cs) == 0:
                self._violate(
                    f"{pin.label} changed to {level} while CS was low: RS0 and R/W must be "
                    "set before CS falls"
                )
            if pin is self.rw and level:
                driving = [p.label for p in self.data if p.function == "output"]
                if driving:
                    self._violate(
                        f"R/W went high while the Pi drove {', '.join(driving)}: the "
                        "74LVC245 turns towards the Pi (bus contention)"
                    )

    def _cut_off_read(self, pin: _BusPin) -> None:
        """What the Pi's D0-D3 show in a read cycle while the chip is cut off."""
        if pin is not self.phi2 or self.fault is Fault.SHIFTER_UNPOWERED:
            return  # an unpowered shifter drives nothing: the pins keep their pulls
        reading = _level(self.cs) == 0 and _level(self.rw) == 1
        inputs = [p for p in self.data if p.function == "input"]
        if _level(self.phi2) and reading:
            value = self._noise.getrandbits(4) if self.fault is Fault.ABSENT_FLOATING else 0
            for bit, data in enumerate(self.data):
                if data not in inputs:
                    continue
                if (value >> bit) & 1:
                    data.drive_high()
                else:
                    data.drive_low()
        elif not _level(self.phi2):
            for data in inputs:
                _rest(data)

    def _direction(self, pin: _BusPin) -> None:
        with self._lock:
            if self.fault in _CUT_OFF or pin not in self.data:
                return
            if self._in_cycle and _level(self.phi2):
                self._violate(f"{pin.label} switched to {pin.function} while phi2 was high")
                return
            if pin.function == "output" and _level(self.rw):
                self._violate(
                    f"{pin.label} made an output while R/W was high: the 74LVC245 drives "
                    "the Pi side then (bus contention); set R/W low first"
                )

    def _sampled(self, pin: _BusPin) -> None:
        if self._in_cycle and not self._cycle_write and pin in self.data:
            self._sampled_pins.add(self.data.index(pin))

    def _phi2_rose(self) -> None:
        now = time.monotonic()
        if _level(self.cs):
            self._violate("phi2 strobed with CS high: a cycle the chip ignores")
            return
        if not self._cs_high_since_cycle:
            self._violate("a second cycle without CS going back high after the previous one")
        if now - self.powered_at < self.power_up_s:
            self._violate(
                f"bus cycle {(now - self.powered_at) * 1000:.1f} ms after power-up; the "
                f"oscillator needs {self.power_up_s * 1000:.0f} ms"
            )
        self._in_cycle = True
        self._cs_high_since_cycle = False
        self._cycle_rs0 = _level(self.rs0)
        self._cycle_write = _level(self.rw) == 0
        self._sampled_pins = set()
        if self._cycle_write:
            undriven = [p.label for p in self.data if p.function != "output"]
            if undriven:
                self._violate(
                    f"write cycle with {', '.join(undriven)} not driven: data must be valid "
                    "before phi2 rises"
                )
            return
        self._update(now)
        if self._cycle_rs0 == RS0_CONTROL:
            value = self.stuck_status if self.fault is Fault.STUCK_STATUS else int(self.status)
        else:
            value = self.receive
        self._cycle_value = value
        for bit, pin in enumerate(self.data):
            if pin.function != "input":
                continue  # already reported as contention
            if (value >> bit) & 1:
                pin.drive_high()
            else:
                pin.drive_low()

    def _phi2_fell(self) -> None:
        if not self._in_cycle:
            return
        now = time.monotonic()
        self._in_cycle = False
        if self._cycle_write:
            value = sum(_level(p) << bit for bit, p in enumerate(self.data))
            self._write(now, self._cycle_rs0, value)
            return
        # The chip lets go of D0-D3 as phi2 falls: the pins go back to their pulls.
        for pin in self.data:
            if pin.function == "input":
                _rest(pin)
        sampled = len(self._sampled_pins) == len(self.data)
        if self._cycle_rs0 == RS0_CONTROL:
            self._record(now, "STATUS", False, self._cycle_value, sampled)
            self._init_progress(False, None)
            # Reading the status register clears IRQ and TDRE.
            self.status &= ~(Status.IRQ | Status.TDRE)
            self._set_irq_pin()
        else:
            self._record(now, "RX", False, self._cycle_value, sampled)
            self.status &= ~Status.RDRF

    def _record(self, now: float, register: str, write: bool, value: int,
                sampled: bool = True) -> None:
        self.cycles.append(BusCycle(now, register, write, value, sampled))

    # -- registers ----------------------------------------------------------------------
    def _init_progress(self, write: bool, value: int | None) -> None:
        if self.initialised:
            return
        step = (write, value)
        if step == INIT_SEQUENCE[self._init_step]:
            self._init_step += 1
        else:
            self._init_step = 1 if step == INIT_SEQUENCE[0] else 0
        if self._init_step == len(INIT_SEQUENCE):
            self.initialised = True

    def _write(self, now: float, rs0: int, value: int) -> None:
        self._update(now)
        register = "TX" if rs0 == RS0_DATA else "CRB" if self._rsel else "CRA"
        # Recorded after the register took it, so that a violation names the
        # cycle before as "after".
        try:
            if register == "TX":
                if not self.initialised:
                    self._init_step = 0  # a transmit write breaks the sequence
                self._write_transmit(now, value)
            elif register == "CRB":
                self._rsel = False
                self._init_progress(True, value)
                self._write_crb(now, CRB(value))
            else:
                self._init_progress(True, value)
                self._write_cra(now, CRA(value))
        finally:
            self._record(now, register, True, value)

    def _write_transmit(self, now: float, code: int) -> None:
        if not self.initialised:
            self._violate(
                "transmit register written before the initialisation sequence "
                "(read status; write 0, 0, 8, 0; read status)"
            )
        if self.cra & CRA.CP:
            self._violate("code written in call-progress mode (CRA.CP set): DTMF in CP mode")
        self.transmit = code
        if self._burst_mode:
            if not self.cra & CRA.TOUT:
                return  # no burst without the tone output (see the module's notes)
            if self._burst_end is not None:
                into = (now - (self._burst_end - self._burst_length)) * 1000
                self._violate(
                    f"code written {into:.1f} ms into a burst, while TDRE was clear: "
                    "burst mode needs TDRE before the next code"
                )
            self._start_burst(now)
        elif self._tone is not None:
            # Non-burst with TOUT on: the tone changes at once.
            self._end_tone(now)
            self._begin_tone(now)

    def _write_cra(self, now: float, value: CRA) -> None:
        before = self.cra
        self.cra = value & ~CRA.RSEL
        self._rsel = bool(value & CRA.RSEL)
        if (value & CRA.TOUT) and not self.initialised:
            self._violate("CRA.TOUT set before the initialisation sequence")
        if (value & CRA.CP) and ((value & CRA.TOUT) or self._burst_end is not None):
            self._violate("CRA.CP (call-progress mode) set while DTMF is being sent")
        if not self._burst_mode:
            if (value & CRA.TOUT) and not (before & CRA.TOUT):
                self._begin_tone(now)
            elif not (value & CRA.TOUT) and (before & CRA.TOUT):
                self._end_tone(now)
        elif not (value & CRA.TOUT) and self._tone is not None:
            self._end_tone(now)  # TOUT off cuts a burst's tone short
        self._set_irq_pin()

    def _write_crb(self, now: float, value: CRB) -> None:
        was_burst = self._burst_mode
        self.crb = value
        if was_burst and not self._burst_mode and self.cra & CRA.TOUT:
            self._begin_tone(now)
        elif not was_burst and self._burst_mode and self._tone is not None:
            self._end_tone(now)

    @property
    def _burst_mode(self) -> bool:
        return not self.crb & CRB.BURST

    @property
    def _burst_length(self) -> float:
        # Call-progress mode doubles both halves of a burst.
        factor = 2 if self.cra & CRA.CP else 1
        return factor * (BURST_S + PAUSE_S)

    def _frequencies(self, code: int) -> tuple[float, ...]:
        _, low, high = DATASHEET_CODES[code]
        if self.crb & CRB.SD:
            return (high,) if self.crb & CRB.CR else (low,)
        return (low, high)

    def _begin_tone(self, start: float, end: float = float("inf")) -> None:
        self._tone = ToneSegment(start, end, DATASHEET_CODES[self.transmit][0],
                                 self._frequencies(self.transmit))
        self.segments.append(self._tone)

    def _end_tone(self, now: float) -> None:
        if self._tone is not None:
            self._tone.end = min(self._tone.end, now)
            self._tone = None

    def _start_burst(self, now: float) -> None:
        length = self._burst_length
        self._burst_end = now + length
        self.status &= ~Status.TDRE
        self._begin_tone(now, now + length / 2)
        if self.irq is not None and self.cra & CRA.IRQ:
            timer = threading.Timer(length, self._timer_fired)
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()

    def _update(self, now: float) -> None:
        """Advance the burst timer to ``now``."""
        if self._tone is not None and self._tone.end <= now:
            self._tone = None
        if self._burst_end is not None and now >= self._burst_end:
            self._burst_end = None
            self.status |= Status.TDRE | Status.IRQ
            self._set_irq_pin()

    def _timer_fired(self) -> None:
        with self._lock:
            if self.fault is Fault.NONE:
                self._update(time.monotonic())

    def _set_irq_pin(self) -> None:
        if self.irq is None or self.irq.function != "input":
            return
        if self.cra & CRA.CP:
            # Call-progress mode: the pin is the comparator's; at rest, released.
            if not self.cra & CRA.IRQ or not _level(self.irq):
                self.irq.drive_high()
        elif self.cra & CRA.IRQ and self.status & Status.IRQ:
            self.irq.drive_low()
        else:
            self.irq.drive_high()

    def receive_digit(self, key: str) -> None:
        """The receiver decoded ``key`` from the line: RX holds it, RDRF and IRQ set."""
        with self._lock:
            self.receive = CODES[key]
            self.status |= Status.RDRF | Status.IRQ
            self._set_irq_pin()

    # -- the relay and the audio ----------------------------------------------------------
    def _relay_changed(self, level: bool) -> None:
        off_hook = level == self._relay_active_high
        now = time.monotonic()
        with self._lock:
            if off_hook and (not self._off_hook or self._off_hook[-1][1] != float("inf")):
                self._off_hook.append([now, float("inf")])
                self._start_listening(now)
            elif not off_hook and self._off_hook and self._off_hook[-1][1] == float("inf"):
                self._off_hook[-1][1] = now
                self._stop_listening()

    # -- the line's audio into the receiver --------------------------------------------------
    def connect_line(self, open_far_end: Any) -> None:
        """What the far end puts on the line: ``open_far_end()`` is called each
        time the line goes off hook (the relay closes) and gives a
        :data:`FarEnd`, read for as long as it stays off hook and then closed
        (if it has ``close``). The chip hears that and, through the hybrid, its
        own TONE. Without a watched relay it listens from now on. ``None``
        takes the far end away (the line is silent, but for the echo)."""
        with self._lock:
            self._open_far_end = open_far_end
            if not self._relay_watched and open_far_end is not None:
                self._stop_listening()
                self._start_listening(time.monotonic())
            if self._hearing is None:
                self._hearing = threading.Thread(target=self._hear, name="mt8880-sim-hearing",
                                                 daemon=True)
                self._hearing.start()

    def _start_listening(self, now: float) -> None:
        self._stop_listening()
        self._session += 1
        self._listening_since, self._heard = now, 0
        self._receiver.reset()
        self._cp.reset()
        if self._open_far_end is not None:
            self._far_end = _FarEndReader(self._open_far_end())

    def _stop_listening(self) -> None:
        self._listening_since = None
        far_end, self._far_end = self._far_end, None
        if far_end is not None:
            far_end.close()

    def _hear(self) -> None:
        """The chip's ears, in real time: every 10 ms, what the line brought."""
        while not self._closed.wait(0.01):
            with self._lock:
                since, session, far_end = self._listening_since, self._session, self._far_end
                if since is None:
                    continue
                start = since + self._heard / RATE
                due = int((time.monotonic() - since) * RATE) - self._heard
            if due <= 0:
                continue
            # Outside the lock: a far end that captures in real time blocks here.
            x = far_end.take(due) if far_end is not None else np.zeros(due)
            with self._lock:
                if session != self._session or self._listening_since is None:
                    continue
                self._heard += due
                if self.fault is Fault.NONE or self.fault is Fault.STUCK_STATUS:
                    self._listen(x + self._echo(start, due))

    def _echo(self, start: float, n: int) -> npt.NDArray[np.float64]:
        """The chip's own TONE from ``start`` for ``n`` samples, as its
        receiver hears it back through the hybrid."""
        out = np.zeros(n)
        t = start + np.arange(n) / RATE
        self._update(time.monotonic())
        # Whole segments, not cut to the block: the phase runs from each tone's
        # start. They follow one another, so the search stops at the first
        # that was over before this block.
        pieces = []
        for segment in reversed(self.segments):
            if segment.end <= start:
                break
            if segment.start < t[-1]:
                pieces.append(segment)
        for piece in pieces:
            inside = (t >= piece.start) & (t < piece.end)
            if not inside.any():
                continue
            since = t[inside] - piece.start
            for hz in piece.frequencies:
                level = ECHO_ROW_DBM0 if hz < 1000 else ECHO_COLUMN_DBM0
                out[inside] += _peak(level) * np.cos(2 * np.pi * hz * since)
        return out

    def _listen(self, x: npt.NDArray[np.float64]) -> None:
        """What the receiver makes of ``x``: keys in DTMF mode, the comparator's
        rectangular wave on IRQ/CP in call-progress mode (the data sheet: only
        with CRA.IRQ, and no DTMF decoded meanwhile)."""
        now = time.monotonic()
        if self.cra & CRA.CP:
            self._receiver.reset()
            edges = self._cp.feed(x)
            if not edges or self.irq is None or not self.cra & CRA.IRQ:
                return
            if self.irq.function == "input":
                for _ in range(edges):
                    self.irq.drive_low()
                    self.irq.drive_high()
                self.cp_edges += edges
                if len(self.irq.states) > 10_000:
                    self.irq.clear_states()  # the history would grow for ever
            return
        self._cp.reset()
        for key in self._receiver.feed(x):
            if key is None:
                # The pause is validated: the delayed-steering flag drops.
                self.status &= ~Status.DSTEER
                continue
            self.registered.append((now, key))
            self.receive = CODES[key]
            self.status |= Status.RDRF | Status.IRQ | Status.DSTEER
            self._set_irq_pin()

    def tone_segments(self, start: float = 0.0, end: float | None = None,
                      line_only: bool = False) -> list[ToneSegment]:
        """TONE output between ``start`` and ``end`` (monotonic seconds), cut to
        the off-hook intervals when ``line_only`` and a relay is watched."""
        with self._lock:
            self._update(time.monotonic())
            stop = time.monotonic() if end is None else end
            pieces = [ToneSegment(max(s.start, start), min(s.end, stop), s.key, s.frequencies)
                      for s in self.segments]
            pieces = [p for p in pieces if p.end > p.start]
            if line_only and self._relay is not None:
                gated: list[ToneSegment] = []
                for piece in pieces:
                    for on, off in self._off_hook:
                        s, e = max(piece.start, on), min(piece.end, off)
                        if e > s:
                            gated.append(ToneSegment(s, e, piece.key, piece.frequencies))
                pieces = gated
            return pieces

    def render(self, engine: ToneEngine, start: float, end: float | None = None,
               line_only: bool = True) -> Samples:
        """What the TONE pin emitted from ``start`` to ``end`` as PCM at the
        engine's rate (only while off hook when a relay is watched)."""
        stop = time.monotonic() if end is None else end
        rate = engine.settings.rate
        out = np.zeros(max(round((stop - start) * rate), 0), dtype=np.int16)
        for piece in self.tone_segments(start, stop, line_only):
            i0 = round((piece.start - start) * rate)
            i1 = min(round((piece.end - start) * rate), len(out))
            if i1 > i0:
                out[i0:i1] = engine.tone(piece.frequencies, (i1 - i0) * 1000 / rate)
        return out

    def line_audio(self, engine: ToneEngine, start: float, end: float | None = None) -> Samples:
        """What the far end hears: TONE while the hook relay is closed."""
        return self.render(engine, start, end, line_only=True)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Detach from the pins (they stay in the factory)."""
        self._closed.set()
        with self._lock:
            self._stop_listening()
            for timer in self._timers:
                timer.cancel()
            self._timers = []
            for pin in (*self.data, self.rs0, self.rw, self.cs, self.phi2):
                pin.simulator = None
            if self._relay is not None:
                self._relay.simulator = None

    def __enter__(self) -> MT8880Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChipRecorder(RenderedRecorder[float]):
    """Each call's audio on a simulated chip's line: what TONE emitted while
    the hook relay was closed, from the call's start to its end, rendered
    with the tone engine when the call ends."""

    def __init__(self, line: str, directory: Path, simulator: MT8880Simulator,
                 engine: ToneEngine, max_seconds: float = DEFAULT_MAX_RECORD_S) -> None:
        super().__init__(line, directory, engine.settings.rate, max_seconds, time.monotonic,
                         lambda started, _: simulator.line_audio(engine, started))
        self.simulator = simulator


__all__ = [
    "CODES",
    "CRA",
    "CRB",
    "DATASHEET_CODES",
    "INIT_SEQUENCE",
    "BusCycle",
    "ChipRecorder",
    "Fault",
    "MT8880Simulator",
    "ProtocolViolation",
    "RecordedFarEnd",
    "Status",
    "ToneSegment",
]
