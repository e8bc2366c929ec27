"""Line drivers, found by the name a ``[[line]]`` table gives in ``driver``.

Modules are imported only when a configuration names them, so a laptop
without ALSA or GPIO libraries can still run simulated lines.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.lines.base import LineDriver, Party
from gateway.lines.recording import CallRecorder
from gateway.tones import ToneEngine, ToneSettings

# driver name -> (module, driver class, options dataclass)
DRIVERS: dict[str, tuple[str, str, str]] = {
    "simulated": ("gateway.lines.simulated", "SimulatedLine", "SimulatedOptions"),
    "alsa": ("gateway.lines.alsa", "AlsaLine", "AlsaOptions"),
    "mt8880": ("gateway.lines.mt8880", "MT8880Line", "MT8880Options"),
    "modem": ("gateway.lines.modem", "ModemLine", "ModemOptions"),
}


DriverFactory = Callable[[str, Any, ToneEngine], LineDriver]
"""Every driver class is built as ``Driver(line_name, options, engine)``."""


@dataclass(frozen=True)
class DriverSpec:
    name: str
    driver: DriverFactory
    options: type[Any]


def driver_spec(name: str) -> DriverSpec:
    """The classes behind a driver name; ``KeyError`` for an unknown one."""
    module_name, driver_name, options_name = DRIVERS[name]
    module = importlib.import_module(module_name)
    return DriverSpec(name, getattr(module, driver_name), getattr(module, options_name))


def _nothing_to_close() -> None:
    pass


@dataclass
class BuiltLine:
    """A line's driver as assembled from its configuration, with the recorder
    of its calls where the line is simulated."""

    driver: LineDriver
    recorder: CallRecorder | None = None
    #: Stops what assembly started beside the driver (the simulated modem and
    #: its pseudo-terminal). Call it once, when the line is done with, after
    #: ``driver.close()``; a fault's close and reopen leave it running.
    close: Callable[[], None] = _nothing_to_close


def _mt8880_line(name: str, options: Any, engine: ToneEngine) -> BuiltLine:
    """An MT8880 line: on real GPIO, or with ``simulate`` on a simulated chip
    attached to mock pins of its own (so they never meet real ones), with a
    recorder of that chip's line audio when ``record_dir`` is set."""
    from gateway.lines.mt8880 import MT8880Line

    if not options.simulate:
        return BuiltLine(MT8880Line(name, options, engine))
    from gpiozero.pins.mock import MockFactory

    from gateway.lines.mt8880_sim import ChipRecorder, MT8880Simulator

    factory = MockFactory()
    gpio = options.gpio
    # Not strict: under `serve` a bus violation is kept in the simulator's list
    # rather than raised inside someone's request.
    chip = MT8880Simulator.for_options(factory, options, relay_pin=gpio.hook_relay_pin,
                                       relay_active_high=gpio.hook_relay_active_high,
                                       strict=False)
    recorder = (ChipRecorder(name, Path(options.record_dir), chip, engine)
                if options.record_dir else None)
    return BuiltLine(MT8880Line(name, options, engine, pin_factory=factory), recorder)


def _simulated_line(name: str, options: Any, engine: ToneEngine) -> BuiltLine:
    from gateway.lines.recording import StreamingRecorder
    from gateway.lines.simulated import SimulatedLine

    recorder = StreamingRecorder(name, Path(options.record_dir), engine.settings.rate,
                                 options.recorded_channels, options.max_record_s)
    return BuiltLine(SimulatedLine(name, options, engine, recorder), recorder)


def _modem_line(name: str, options: Any, engine: ToneEngine) -> BuiltLine:
    from gateway.lines.modem import SIMULATED_PORT, ModemLine

    if options.port != SIMULATED_PORT:
        return BuiltLine(ModemLine(name, options, engine))
    from gateway.lines.modem_sim import SimulatedModem, SimulatedModemRecorder

    simulator = SimulatedModem().start()
    recorder = SimulatedModemRecorder(name, simulator, engine, Path(options.record_dir),
                                      options.max_record_s)
    return BuiltLine(ModemLine(name, options, engine, port=simulator.port), recorder,
                     close=simulator.close)


#: Drivers assembled with more than their options: a recorder, a simulator.
_ASSEMBLY: dict[str, Callable[[str, Any, ToneEngine], BuiltLine]] = {
    "simulated": _simulated_line,
    "modem": _modem_line,
    "mt8880": _mt8880_line,
}


def build_line(driver: str, name: str, options: Any, tones: ToneSettings) -> BuiltLine:
    """A line's driver and recorder, not yet opened (nothing touches hardware
    until ``driver.open()``). The one place that knows which simulator goes
    with which configuration."""
    engine = ToneEngine(tones)
    assemble = _ASSEMBLY.get(driver)
    if assemble is not None:
        return assemble(name, options, engine)
    return BuiltLine(driver_spec(driver).driver(name, options, engine))


__all__ = [
    "DRIVERS", "BuiltLine", "CallRecorder", "DriverFactory", "DriverSpec", "LineDriver", "Party",
    "build_line", "driver_spec",
]
