"""One phone line as the call layer keeps it: its driver, worker and recorder,
when it is open, what faulted it, and a snapshot for whoever looks.

The fault policy lives here and nowhere else: a hardware fault during a call
ends the call, puts the line on hook and closes the driver, so the line's
next command opens the hardware afresh; any other unexpected error ends the
call too, so a bug never leaves a line seized. The console, ``/healthz``,
the metrics and the service status read :meth:`Line.snapshot`, never the
driver or the worker themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from gateway.calls.worker import LineWorker
from gateway.errors import (
    CallEnded,
    CallFailed,
    LineError,
    LineFault,
    LineInterrupted,
    NotSupported,
)
from gateway.lines import BuiltLine, CallRecorder, LineDriver
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.calls.registry import Call

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class LineSnapshot:
    """A line's state at one moment, for display and health."""

    name: str
    driver: str
    hook: str
    fault: str | None
    opened: bool
    call_id: str | None
    busy: bool
    #: When the running command started or last reported progress (monotonic).
    busy_since: float | None
    queue_depth: int
    worker_alive: bool
    #: The driver's own status() (mode, bus cycles, modem port ...).
    status: dict[str, object] = field(default_factory=dict)

    def report(self) -> dict[str, object]:
        """What ``/healthz`` shows for the line."""
        return {**self.status, "driver": self.driver, "hook": self.hook, "fault": self.fault,
                "open": self.opened, "in_call": self.call_id is not None, "busy": self.busy,
                "queue_depth": self.queue_depth}


class Line:
    def __init__(self, name: str, built: BuiltLine, queue_size: int, metrics: Metrics) -> None:
        self.name = name
        self.driver: LineDriver = built.driver
        self.recorder: CallRecorder | None = built.recorder
        self._release_assembly = built.close
        self.worker = LineWorker(name, queue_size)
        self.call: Call | None = None
        self.opened = False
        self._metrics = metrics

    # -- state -------------------------------------------------------------------------
    @property
    def fault(self) -> str | None:
        """Why the line's last open or command failed; None while it works."""
        return self.driver.fault

    @fault.setter
    def fault(self, text: str | None) -> None:
        self.driver.fault = text

    def snapshot(self) -> LineSnapshot:
        try:
            status = dict(self.driver.status())
        except Exception as exc:  # a broken status() must not break the health page
            log.exception("line %s: status() failed", self.name)
            status = {"fault": f"status unavailable: {type(exc).__name__}"}
        fault = self.fault or status.pop("fault", None)
        status.pop("fault", None)
        call = self.call
        worker = self.worker
        return LineSnapshot(
            name=self.name, driver=self.driver.driver_name, hook=self.driver.hook.value,
            fault=str(fault) if fault else None, opened=self.opened,
            call_id=call.call_id if call is not None else None, busy=worker.busy,
            busy_since=worker.busy_since, queue_depth=worker.depth, worker_alive=worker.alive,
            status=status,
        )

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Open the hardware unless it is open. A failure of any kind leaves the
        line faulted (and on hook) and raises LineFault naming the line."""
        if self.opened:
            return
        try:
            self.driver.open()
        except LineFault as exc:
            self._faulted(exc)
            raise
        except Exception as exc:
            # Not a fault the driver foresaw (a bug, an OSError it let through):
            # still a line that cannot be used, not a gateway that cannot start.
            log.exception("line %s: opening failed", self.name)
            fault = LineFault(f"opening failed: {type(exc).__name__}: {exc}")
            self._faulted(fault)
            raise fault from exc
        self.opened = True
        self.fault = None

    def release(self) -> None:
        """Close the driver and stop what was assembled beside it (a simulated
        modem): the gateway is done with the line."""
        self.close_driver()
        try:
            self._release_assembly()
        except Exception:
            log.exception("line %s: releasing its simulator failed", self.name)

    def faulted(self, exc: LineFault) -> None:
        """The line's hardware failed outside a command (e.g. writing the
        recording as a call ended): the line shows it until it works again."""
        self._faulted(exc)
        log.error("line %s: %s", self.name, exc)

    def _faulted(self, exc: LineFault) -> None:
        if exc.line is None:
            exc.line = self.name
        self.fault = str(exc)
        self._metrics.line_faults.labels(self.name).inc()

    def close_driver(self) -> None:
        """Release the hardware; the next command opens it afresh."""
        self.opened = False
        try:
            self.driver.close()
        except Exception:
            log.exception("line %s: closing failed", self.name)

    def on_hook(self) -> None:
        """Drop the line now. Never raises."""
        try:
            self.driver.on_hook()
        except Exception:
            log.exception("line %s: on hook failed", self.name)

    # -- the fault policy ------------------------------------------------------------------
    def guarded(self, call: Call, action: Callable[[], T], end_call: Callable[[str], None]) -> T:
        """Run a hardware action of ``call``. A fault ends the call (through
        ``end_call(reason)``) and closes the driver; so does any unexpected
        error. What the caller must judge (a call that did not connect, a
        command the line cannot do) is passed on with the call still up."""
        started = time.monotonic()
        try:
            self.open()
            result = action()
        except Exception as exc:
            if isinstance(exc, LineError):
                exc.line = exc.line or self.name
                if call.over:
                    # Hung up (or timed out) while the line was busy: the driver
                    # stopped part-way when the line went on hook. No fault.
                    raise CallEnded(call.call_id, call.end_reason) from exc
            if isinstance(exc, NotSupported | CallFailed):
                raise
            if isinstance(exc, LineFault):
                self._faulted(exc)
                log.error("line %s: fault during call %s: %s", self.name, call.call_id, exc)
                end_call(f"line fault: {exc}")
                # The driver may have lost its hardware: open it afresh next time.
                self.close_driver()
                raise
            end_call("the line went on hook" if isinstance(exc, LineInterrupted)
                     else f"internal error: {type(exc).__name__}")
            raise
        finally:
            self._metrics.busy_seconds.labels(self.name).inc(time.monotonic() - started)
        self.fault = None
        return result
