"""Calls on lines: the registry behind the API, the per-line order of work,
the fault policy, Ozeki's notifications and the OzML runner.

The HTTP layer and the console use :class:`Gateway`, the calls it returns,
and :class:`LineSnapshot` for display; nothing below.
"""

from __future__ import annotations

from gateway.calls.gateway import Gateway
from gateway.calls.line import Line, LineSnapshot
from gateway.calls.registry import Call, CallState

__all__ = ["Call", "CallState", "Gateway", "Line", "LineSnapshot"]
