"""Line drivers, found by the name a ``[[line]]`` table gives in ``driver``.

Modules are imported only when a configuration names them, so a laptop
without ALSA or GPIO libraries can still run simulated lines.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.lines.base import LineDriver, Party
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


def build_driver(driver: str, name: str, options: Any, tones: ToneSettings) -> LineDriver:
    """A line's driver, not yet opened (nothing touches hardware until open())."""
    return driver_spec(driver).driver(name, options, ToneEngine(tones))


__all__ = [
    "DRIVERS", "DriverFactory", "DriverSpec", "LineDriver", "Party", "build_driver", "driver_spec",
]
