"""Line drivers, found by the name a ``[[line]]`` table gives in ``driver``.

Modules are imported only when a configuration names them, so a laptop
without ALSA or GPIO libraries can still run simulated lines.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from gateway.lines.base import LineDriver, Party

# driver name -> (module, driver class, options dataclass)
DRIVERS: dict[str, tuple[str, str, str]] = {
    "simulated": ("gateway.lines.simulated", "SimulatedLine", "SimulatedOptions"),
    "alsa": ("gateway.lines.alsa", "AlsaLine", "AlsaOptions"),
    "mt8880": ("gateway.lines.mt8880", "MT8880Line", "MT8880Options"),
    "modem": ("gateway.lines.modem", "ModemLine", "ModemOptions"),
}


@dataclass(frozen=True)
class DriverSpec:
    name: str
    driver: type[LineDriver]
    options: type[Any]


def driver_spec(name: str) -> DriverSpec:
    """The classes behind a driver name; ``KeyError`` for an unknown one."""
    module_name, driver_name, options_name = DRIVERS[name]
    module = importlib.import_module(module_name)
    return DriverSpec(name, getattr(module, driver_name), getattr(module, options_name))


__all__ = ["DRIVERS", "DriverSpec", "LineDriver", "Party", "driver_spec"]
