"""Line control on GPIO: the hook relay, the ring detector and loop-current sense.

An audio line (a sound card feeding a DAA/FXO module) cannot take the line off
hook or hear it ring by itself. A relay on a GPIO output closes the loop, an
optocoupler across the line's ring path pulls a GPIO input while the line
rings, and an optional second optocoupler in the loop reports loop current.

Pins come from gpiozero's pin factory: lgpio on a Pi 5 (and any Pi with a
recent kernel), RPi.GPIO on older systems, ``mock`` in tests. Nothing here
touches a pin before :meth:`LineControl.open`.

Ringing reaches the input as 20 Hz pulses (one per half-cycle through the
optocoupler's LED, or a steady level behind an RC filter) in a cadence such as
2 s on / 4 s off (North America) or 0.4/0.2/0.4 s on, 2 s off (UK). The
:class:`RingCadence` turns that into rings (one per burst that lasts) and
incoming calls (one per cadence), so forty pulses make one call, not forty.

Fail-safe: the relay is created released, released again by :meth:`close`,
on any fault, at interpreter exit, and :meth:`LineControl.on_hook` never raises
and may be called from any thread (the shutdown path and signal handlers).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import LineFault
from gateway.lines.hearing import LoopBreak

log = logging.getLogger(__name__)

#: Longest gap between ring pulses that still counts as one burst. Ringing is
#: 16 2/3 to 25 Hz (50 Hz in places), so an unfiltered optocoupler goes quiet
#: for at most about 60 ms inside a burst; 100 ms also bridges slow edges.
RING_PULSE_GAP_S = 0.1

#: gpiozero's own factory names (its ``GPIOZERO_PIN_FACTORY`` values), plus
#: ``mock``. An empty name leaves the choice to gpiozero.
PIN_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
    "mock": ("gpiozero.pins.mock", "MockFactory"),
}


#: ``pin_factory`` values: "" (gpiozero's own choice) or a factory's name.
PIN_FACTORY_CHOICES = ("", *PIN_FACTORIES)

#: Earlier spellings of a pull that configurations may still hold.
OLD_PULLS = {"floating": "off"}


class _Pulls(tuple[str, ...]):
    """The pull words, one vocabulary for every pull of a ``[[line]]``: an old
    spelling passes the config builder's check (and :func:`pull_word` turns it
    into the current one) without being offered in its messages."""

    def __contains__(self, value: object) -> bool:
        return super().__contains__(value) or value in OLD_PULLS


#: "up" or "down": the Pi's internal pull; "off": none (an external resistor).
PULLS = _Pulls(("up", "down", "off"))


def pull_word(key: str, value: str) -> str:
    """``value`` in the current vocabulary, with a deprecation line in the log
    for an old spelling (the config builder has checked the word itself)."""
    if value in OLD_PULLS:
        log.warning('%s = "%s" is deprecated: write "%s" (the same setting)', key, value,
                    OLD_PULLS[value])
        return OLD_PULLS[value]
    return value


_factories: dict[str, Any] = {}
_factories_lock = threading.Lock()


def default_pin_factory() -> Any:
    """gpiozero's default pin factory (``GPIOZERO_PIN_FACTORY``, else the first
    of lgpio, rpigpio, pigpio, native that loads), found once per process.

    gpiozero warns once per library it falls back from; those go to this log
    at debug level, and a machine with none gives one :class:`LineFault`.
    """
    from gpiozero import Device
    from gpiozero.exc import PinFactoryFallback

    # The lock also keeps two lines from swapping the process's warning
    # filters under each other (catch_warnings is not thread-safe).
    with _factories_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            Device.ensure_pin_factory()
            failure: Exception | None = None
        except Exception as exc:
            failure = exc
        for warning in caught:
            if issubclass(warning.category, PinFactoryFallback):
                log.debug("GPIO: %s", warning.message)
            else:
                log.warning("GPIO: %s", warning.message)
    if failure is not None:
        raise LineFault(
            f"GPIO: no pin library could be loaded ({failure}); on a Raspberry Pi install "
            'lgpio or set gpio.pin_factory (--log-level debug shows each library\'s reason)'
        ) from failure
    return Device.pin_factory


def pin_factory(name: str) -> Any:
    """The shared gpiozero factory called ``name``; ``""`` is gpiozero's default
    (:func:`default_pin_factory`).

    One instance per name for the whole process, so two lines that name the
    same pin collide with gpiozero's "pin in use" instead of both driving it.
    """
    if not name:
        return default_pin_factory()
    with _factories_lock:
        factory = _factories.get(name)
        if factory is None:
            module_name, class_name = PIN_FACTORIES[name]
            try:
                factory = getattr(importlib.import_module(module_name), class_name)()
            except Exception as exc:
                raise LineFault(f"GPIO: cannot load pin factory {name!r}: {exc}") from exc
            _factories[name] = factory
        return factory


@dataclass
class GpioOptions:
    """``[line.gpio]``: the hook relay, ring detector and loop-current sense.

    Pins are BCM GPIO numbers (``GPIO17`` is 17, header pin 11). A pin left
    out is not used: a line without ``hook_relay_pin`` never seizes the line
    itself (e.g. a PBX port that is always off hook).
    """

    #: gpiozero pin factory: "" lets gpiozero choose (``GPIOZERO_PIN_FACTORY``,
    #: else lgpio, rpigpio, pigpio, native); or one of those names, or "mock".
    pin_factory: str = field(default="", metadata={"choices": PIN_FACTORY_CHOICES})
    hook_relay_pin: int | None = field(default=None, metadata={"min": 0, "max": 27})
    #: true: the pin goes high to take the line off hook (a transistor driver);
    #: false for the common opto-isolated relay boards that switch on a low input.
    hook_relay_active_high: bool = True
    #: Contact bounce and DAA settling after the relay closes, before audio.
    hook_settle_ms: int = field(default=50, metadata={"min": 0, "max": 2000})
    ring_detect_pin: int | None = field(default=None, metadata={"min": 0, "max": 27})
    #: "up" for an optocoupler that pulls the input to ground while ringing,
    #: "down" for one that drives it high, "off" for an external resistor.
    ring_detect_pull: str = field(default="up", metadata={"choices": PULLS})
    #: Only with pull "off": whether ringing drives the input high.
    ring_detect_active_high: bool = False
    #: Glitch filter on the input edges, in the pin library (lgpio, RPi.GPIO).
    ring_debounce_ms: float = field(default=5.0, metadata={"min": 0.0, "max": 20.0})
    #: Ring activity must last this long to be a ring: a click from a
    #: parallel phone, a polarity reversal or a line transient is not a call.
    ring_min_ms: int = field(default=150, metadata={"min": 0, "max": 2000})
    #: Rings no further apart than this belong to one incoming call; longer
    #: than the longest silence of any cadence (4 s in North America).
    ring_timeout_ms: int = field(default=6000, metadata={"min": 500, "max": 30000})
    #: Ring input ignored this long after the hook changes: the relay and the
    #: loop make transients that can light the optocoupler.
    ring_guard_ms: int = field(default=500, metadata={"min": 0, "max": 5000})
    loop_current_pin: int | None = field(default=None, metadata={"min": 0, "max": 27})
    loop_current_pull: str = field(default="up", metadata={"choices": PULLS})
    loop_current_active_high: bool = False
    #: After going off hook, loop current must show within this time, else the
    #: line is dead (unplugged, relay not switching) and the seizure a fault.
    loop_current_wait_ms: int = field(default=500, metadata={"min": 10, "max": 5000})
    #: During a call, loop current gone this long means the far end hung up
    #: (the exchange's "calling party control" open: about 300 ms in North
    #: America, 800 ms on UK System X lines, vendors' detectors 150-900 ms);
    #: shorter breaks (a polarity reversal, a line transient) are not reported.
    cpc_ms: int = field(default=250, metadata={"min": 50, "max": 2000})

    def __post_init__(self) -> None:
        for prefix in ("ring_detect", "loop_current"):
            pull = pull_word(f"{prefix}_pull", getattr(self, f"{prefix}_pull"))
            setattr(self, f"{prefix}_pull", pull)
            active_high = getattr(self, f"{prefix}_active_high")
            # The pull holds the idle level, so the active level is the other one.
            if (pull == "up" and active_high) or (pull == "down" and not active_high):
                raise ValueError(
                    f"{prefix}_active_high: with pull {pull!r} the input idles "
                    f"{'high' if pull == 'up' else 'low'}, so it cannot be active "
                    f"{'high' if active_high else 'low'}; set {prefix}_pull = \"off\" "
                    "for an external resistor"
                )
        used: dict[int, str] = {}
        for name in ("hook_relay_pin", "ring_detect_pin", "loop_current_pin"):
            pin = getattr(self, name)
            if pin is None:
                continue
            if pin in used:
                raise ValueError(f"{name}: GPIO{pin} is already the {used[pin]}")
            used[pin] = name

    @property
    def configured(self) -> bool:
        pins = (self.hook_relay_pin, self.ring_detect_pin, self.loop_current_pin)
        return any(p is not None for p in pins)


class RingCadence:
    """Ring-detect activity to rings and incoming calls; fed timestamps, no I/O.

    A *burst* is activity with no gap longer than :data:`RING_PULSE_GAP_S`. A
    burst whose activity spans ``ring_min_s`` is a *ring*. A ring
    that starts more than ``ring_timeout_s`` after the last activity of the
    current call starts a new *call*. :meth:`edge` and :meth:`check` return
    True exactly when a new call starts.
    """

    def __init__(self, ring_min_s: float, ring_timeout_s: float) -> None:
        self.ring_min_s = ring_min_s
        self.ring_timeout_s = ring_timeout_s
        self.rings = 0
        self.calls = 0
        self.burst = 0  # id of the current burst, for a delayed check
        self._active = False
        self._last_edge: float | None = None
        self._burst_start = 0.0
        self._burst_counted = True
        self._call_last: float | None = None

    def reset(self) -> None:
        """Forget the current call (the line was answered or seized)."""
        self._active = False
        self._last_edge = None
        self._burst_counted = True
        self._call_last = None

    def _alive(self, now: float) -> bool:
        return self._active or (
            self._last_edge is not None and now - self._last_edge <= RING_PULSE_GAP_S
        )

    def edge(self, now: float, active: bool) -> bool:
        """The input changed to ``active`` at ``now``."""
        if active and not self._alive(now):
            self.burst += 1
            self._burst_start = now
            self._burst_counted = False
        self._active = active
        self._last_edge = now
        if self._call_last is not None and now - self._call_last <= self.ring_timeout_s:
            self._call_last = now
        return self.check(now)

    def check(self, now: float, burst: int | None = None) -> bool:
        """Whether the current burst has just become a ring that starts a call.

        ``burst`` names the burst a delayed check was scheduled for; a check
        for a burst that has since died and been replaced does nothing.
        """
        if self._burst_counted or (burst is not None and burst != self.burst):
            return False
        if not self._alive(now):
            return False
        # The activity itself must span ring_min: up to now while the input is
        # active, else up to its last edge (not to "now", or a lone click
        # followed by a late check would pass for a ring).
        end = now if self._active or self._last_edge is None else self._last_edge
        # A tolerance of a millisecond: timers fire early by a hair on some kernels.
        if end - self._burst_start < self.ring_min_s - 0.001:
            return False
        self._burst_counted = True
        self.rings += 1
        new_call = (
            self._call_last is None or self._burst_start - self._call_last > self.ring_timeout_s
        )
        self._call_last = now
        if new_call:
            self.calls += 1
        return new_call

    def ringing(self, now: float) -> bool:
        """Whether a call is ringing: a ring within the last ``ring_timeout_s``."""
        return self._call_last is not None and (
            self._alive(now) or now - self._call_last <= self.ring_timeout_s
        )


class LineControl:
    """One line's GPIO: compose it into a driver and call its hook methods.

    ``hook_relay``, ``ring_detect`` and ``loop_current`` are the gpiozero
    devices (``None`` when not configured or not open). On a thread of its
    own, ``on_ring`` is called for every ring and ``on_incoming`` once per
    incoming call (its first ring). A driver under the call layer, which groups
    rings into calls itself and ends a call when the rings stop, passes its
    ring handler as ``on_ring``.

    Loop sense: while off hook, loop current that stops for ``cpc_ms`` is
    given to ``on_loop_break`` as a :class:`~gateway.lines.hearing.LoopBreak`
    (from a timer thread), once per break, dated at the moment the current
    stopped by ``line_clock`` (the driver's line time; by default seconds
    since going off hook). Shorter breaks are only counted. The documented
    sense sits behind the line's bridge rectifier, so it sees one polarity
    whichever way the loop is fed: a polarity reversal cannot be told from a
    break of a few milliseconds, and is not reported.
    """

    def __init__(
        self,
        line: str,
        options: GpioOptions,
        on_incoming: Callable[[], None] | None = None,
        factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
        on_ring: Callable[[], None] | None = None,
        on_loop_break: Callable[[LoopBreak], None] | None = None,
        line_clock: Callable[[], float] | None = None,
    ) -> None:
        self.line = line
        self.options = options
        self.on_incoming = on_incoming
        self.on_ring = on_ring
        self.on_loop_break = on_loop_break
        self._factory = factory
        self._clock = clock
        self._off_hook_at = 0.0
        self._line_clock = line_clock or (lambda: self._clock() - self._off_hook_at)
        self.hook_relay: Any = None
        self.ring_detect: Any = None
        self.loop_current: Any = None
        self.cadence = RingCadence(options.ring_min_ms / 1000, options.ring_timeout_ms / 1000)
        # Re-entrant: on_hook may come from a signal handler on a thread that
        # is inside another method of this object.
        self._lock = threading.RLock()
        self._off_hook = False
        self._guard_until = 0.0
        self._timer: threading.Timer | None = None
        self._exit_hook: Callable[[], None] | None = None
        self.fault: str | None = None
        # Loop sense: watched from the moment current first flows off hook.
        self._loop_watch = False
        self._loop_lost_at: float | None = None  # this clock's time
        self._loop_lost_line = 0.0  # the driver's line time
        self._loop_timer: threading.Timer | None = None
        #: Breaks seen during calls: shorter than cpc_ms, and long enough to
        #: be the far end hanging up.
        self.loop_short_breaks = 0
        self.loop_breaks = 0

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> None:
        """Claim the pins, relay released. Raises LineFault with the pin and the cause."""
        with self._lock:
            if any(d is not None for d in (self.hook_relay, self.ring_detect, self.loop_current)):
                return
            opts = self.options
            if not opts.configured:
                return
            # Faults name the line first: the API reports them as that line's.
            where = "GPIO"
            try:
                factory = self._factory if self._factory is not None else pin_factory(
                    opts.pin_factory)
            except LineFault as exc:
                raise LineFault(str(exc)) from exc
            try:
                from gpiozero import DigitalInputDevice, DigitalOutputDevice
            except ImportError as exc:  # pragma: no cover - gpiozero is a dependency
                raise LineFault(f"{where}: gpiozero is not installed ({exc})") from exc
            what = ""
            try:
                if opts.hook_relay_pin is not None:
                    what = f"hook relay on GPIO{opts.hook_relay_pin}"
                    self.hook_relay = DigitalOutputDevice(
                        opts.hook_relay_pin,
                        active_high=opts.hook_relay_active_high,
                        initial_value=False,
                        pin_factory=factory,
                    )
                if opts.ring_detect_pin is not None:
                    what = f"ring detect on GPIO{opts.ring_detect_pin}"
                    bounce = opts.ring_debounce_ms / 1000 or None
                    self.ring_detect = DigitalInputDevice(
                        opts.ring_detect_pin,
                        bounce_time=bounce,
                        pin_factory=factory,
                        **_pull_args(opts.ring_detect_pull, opts.ring_detect_active_high),
                    )
                    self.ring_detect.when_activated = self._ring_activated
                    self.ring_detect.when_deactivated = self._ring_deactivated
                if opts.loop_current_pin is not None:
                    what = f"loop-current sense on GPIO{opts.loop_current_pin}"
                    self.loop_current = DigitalInputDevice(
                        opts.loop_current_pin,
                        pin_factory=factory,
                        **_pull_args(opts.loop_current_pull, opts.loop_current_active_high),
                    )
                    self.loop_current.when_deactivated = self._loop_lost
                    self.loop_current.when_activated = self._loop_back
            except LineFault:
                self._release_devices()
                raise
            except Exception as exc:
                # gpiozero's errors (pin in use, no factory, bad pin) and the
                # backends' own (lgpio.error, RuntimeError from RPi.GPIO).
                self._release_devices()
                raise LineFault(f"{where}: cannot open {what}: {exc}") from exc
            self._off_hook = False
            self._guard_until = self._clock() + opts.ring_guard_ms / 1000
            self.cadence.reset()
            self.fault = None
            ref = weakref.ref(self)

            def release_at_exit() -> None:
                control = ref()
                if control is not None:
                    control.on_hook()

            # atexit runs last-registered first: this runs before gpiozero's
            # own exit handler closes the pins (which does not drive them off).
            self._exit_hook = release_at_exit
            atexit.register(release_at_exit)

    def close(self) -> None:
        """Release the relay and the pins. Safe twice, from any thread."""
        with self._lock:
            self.on_hook()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._release_devices()
            if self._exit_hook is not None:
                atexit.unregister(self._exit_hook)
                self._exit_hook = None

    def _release_devices(self) -> None:
        for name in ("hook_relay", "ring_detect", "loop_current"):
            device = getattr(self, name)
            if device is None:
                continue
            setattr(self, name, None)
            try:
                if name == "hook_relay":
                    device.off()
                device.close()
            except Exception as exc:
                log.warning("line %s: closing %s: %s", self.line, name, exc)

    def __enter__(self) -> LineControl:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hook ------------------------------------------------------------------
    @property
    def is_off_hook(self) -> bool:
        return self._off_hook

    def off_hook(self) -> None:
        """Close the loop. With loop-current sense, LineFault if no current flows."""
        opts = self.options
        with self._lock:
            self._off_hook = True
            self._off_hook_at = self._clock()
            self.cadence.reset()
            relay = self.hook_relay
            if relay is None:
                return
            try:
                relay.on()
            except Exception as exc:
                self.on_hook()
                raise self._fault(f"GPIO: hook relay on GPIO{opts.hook_relay_pin}: {exc}") from exc
        if opts.hook_settle_ms:
            time.sleep(opts.hook_settle_ms / 1000)
        if not self._off_hook:
            # on_hook() came in meanwhile (shutdown, a signal): not a seizure.
            raise LineFault("put on hook while going off hook")
        sense = self.loop_current
        if sense is not None and not sense.wait_for_active(opts.loop_current_wait_ms / 1000):
            self.on_hook()
            raise self._fault(
                f"no loop current {opts.loop_current_wait_ms} ms after going off hook "
                "(line unplugged, or the hook relay did not close)"
            )
        if sense is not None:
            with self._lock:
                self._loop_watch = self._off_hook
                self._loop_lost_at = None
            if not sense.is_active:
                self._loop_lost()  # it went again between the wait and the watch

    def on_hook(self) -> None:
        """Release the relay. Never raises; safe from any thread, at any moment."""
        with self._lock:
            was_off = self._off_hook
            self._off_hook = False
            self._loop_watch = False
            self._loop_lost_at = None
            if self._loop_timer is not None:
                self._loop_timer.cancel()
                self._loop_timer = None
            if was_off:
                self._guard_until = self._clock() + self.options.ring_guard_ms / 1000
            relay = self.hook_relay
            if relay is None:
                return
            try:
                relay.off()
            except Exception as exc:
                # Nothing more software can do: the hardware notes' pull
                # resistor releases the relay when the pin lets go.
                self.fault = f"GPIO: cannot release the hook relay: {exc}"
                log.error("line %s: %s", self.line, self.fault)

    def _fault(self, message: str) -> LineFault:
        self.fault = message
        return LineFault(self.fault)

    @property
    def relay_energised(self) -> bool | None:
        """The relay output as driven (None without a relay)."""
        relay = self.hook_relay
        return None if relay is None else bool(relay.value)

    @property
    def has_loop_current(self) -> bool | None:
        sense = self.loop_current
        return None if sense is None else bool(sense.is_active)

    # -- loop sense ---------------------------------------------------------------
    def _loop_lost(self) -> None:
        with self._lock:
            if not self._loop_watch or self._loop_lost_at is not None:
                return
            self._loop_lost_at = self._clock()
            self._loop_lost_line = self._line_clock()
            self._arm_loop_timer(self.options.cpc_ms / 1000)

    def _arm_loop_timer(self, seconds: float) -> None:
        if self._loop_timer is not None:
            self._loop_timer.cancel()
        self._loop_timer = threading.Timer(seconds, self._loop_timer_fired,
                                           (self._loop_lost_at,))
        self._loop_timer.daemon = True
        self._loop_timer.start()

    def _loop_back(self) -> None:
        with self._lock:
            if not self._loop_watch or self._loop_lost_at is None:
                return
            self._loop_lost_at = None
            if self._loop_timer is not None:
                self._loop_timer.cancel()
                self._loop_timer = None
            self.loop_short_breaks += 1
        log.debug("line %s: loop current broke for less than %d ms", self.line,
                  self.options.cpc_ms)

    def _loop_timer_fired(self, lost_at: float) -> None:
        with self._lock:
            if not self._loop_watch or self._loop_lost_at != lost_at:
                return  # the current came back, or the line went on hook
            ms = (self._clock() - lost_at) * 1000
            if ms < self.options.cpc_ms:
                # Timers may fire a hair early: look again when it is due.
                self._arm_loop_timer((self.options.cpc_ms - ms) / 1000)
                return
            # Reported once: the break goes on until the line is released.
            self._loop_watch = False
            self._loop_timer = None
            self.loop_breaks += 1
            event = LoopBreak(self._loop_lost_line, round(ms))
        log.info("line %s: loop current broke for %d ms (the far end hung up)", self.line,
                 event.ms)
        handler = self.on_loop_break
        if handler is not None:
            try:
                handler(event)
            except Exception:
                log.exception("line %s: loop-break handler failed", self.line)

    # -- ringing -----------------------------------------------------------------
    @property
    def ringing(self) -> bool:
        return self.cadence.ringing(self._clock())

    def _ring_activated(self) -> None:
        self._ring_edge(True)

    def _ring_deactivated(self) -> None:
        self._ring_edge(False)

    def _ring_edge(self, active: bool) -> None:
        now = self._clock()
        with self._lock:
            if self._off_hook or now < self._guard_until:
                return
            burst, rings = self.cadence.burst, self.cadence.rings
            new_call = self.cadence.edge(now, active)
            rang = self.cadence.rings != rings
            if self.cadence.burst != burst and self.options.ring_min_ms:
                # A steady level (an RC-filtered optocoupler) makes no more
                # edges, so look again when the burst is old enough to count.
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = threading.Timer(
                    self.options.ring_min_ms / 1000, self._ring_timer, (self.cadence.burst,)
                )
                self._timer.daemon = True
                self._timer.start()
        if rang:
            self._rang(new_call)

    def _ring_timer(self, burst: int) -> None:
        now = self._clock()
        with self._lock:
            if self._off_hook or self.ring_detect is None:
                return
            rings = self.cadence.rings
            new_call = self.cadence.check(now, burst)
            rang = self.cadence.rings != rings
        if rang:
            self._rang(new_call)

    def _rang(self, new_call: bool) -> None:
        handlers = [h for h in (self.on_incoming if new_call else None, self.on_ring)
                    if h is not None]
        if new_call:
            log.info("line %s: incoming call", self.line)
        if not handlers:
            return

        def dispatch() -> None:
            for handler in handlers:
                try:
                    handler()
                except Exception:
                    log.exception("line %s: ring handler failed", self.line)

        # Off the GPIO event thread, so a slow handler cannot delay edges.
        threading.Thread(target=dispatch, name=f"{self.line}-ring", daemon=True).start()

    # -- health ------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        opts = self.options
        if opts.hook_relay_pin is not None:
            out["hook_relay"] = {"pin": f"GPIO{opts.hook_relay_pin}",
                                 "energised": self.relay_energised}
        if opts.ring_detect_pin is not None:
            out["ring_detect"] = {"pin": f"GPIO{opts.ring_detect_pin}", "ringing": self.ringing,
                                  "rings": self.cadence.rings, "calls": self.cadence.calls}
        if opts.loop_current_pin is not None:
            out["loop_current"] = {"pin": f"GPIO{opts.loop_current_pin}",
                                   "flowing": self.has_loop_current,
                                   "breaks": self.loop_breaks,
                                   "short_breaks": self.loop_short_breaks}
        if self.fault:
            out["gpio_fault"] = self.fault
        return out


def _pull_args(pull: str, active_high: bool) -> dict[str, object]:
    # gpiozero derives the active level from the pull; only a floating input
    # (external resistor) takes active_state.
    if pull == "up":
        return {"pull_up": True}
    if pull == "down":
        return {"pull_up": False}
    return {"pull_up": None, "active_state": active_high}
