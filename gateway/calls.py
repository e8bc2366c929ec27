"""Calls on lines: the registry behind the API, and the per-line order of work.

Every command that touches a line runs on that line's :class:`LineWorker`,
so commands on one line are strictly first-in first-out and tones of two
requests never interleave, while different lines work in parallel. A
hardware fault ends the call and puts the line on hook before the error
reaches the client.

Notifications whose answer is needed (``CallConnected``, ``IncomingCall``)
are fetched on the line's own worker, so a slow integrator URL delays only
that line; the others (``Error``, ``CallFinished``) go out on a small pool.
"""

from __future__ import annotations

import enum
import logging
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from gateway import notify, ozml
from gateway.config import Config
from gateway.errors import (
    CallFailed,
    CallNotFound,
    GatewayError,
    LineBusy,
    LineFault,
    NotSupported,
)
from gateway.keys import Tone, parse_keys
from gateway.lines import BuiltLine, CallRecorder, LineDriver, build_line
from gateway.lines.base import Party
from gateway.metrics import Metrics
from gateway.tones import TonePlan
from gateway.worker import LineWorker

log = logging.getLogger(__name__)

T = TypeVar("T")

#: An incoming call is over when the line has not rung for this long: longer
#: than the silence of any national cadence (4 s in the US, 2 s in the UK).
RING_TIMEOUT_S = 8.0
RECENT_CALLS = 100
CALL_ID_ALPHABET = string.ascii_letters + string.digits


class CallState(enum.Enum):
    SETUP = "Setup"
    RINGING = "Ringing"
    IN_CALL = "InCall"
    COMPLETED = "Completed"


class Inappropriate(GatewayError):
    """The command cannot be used on this call now (API code 303)."""

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(detail)
        self.command = command


class AmbiguousCall(GatewayError, ValueError):
    """CallId was omitted and there is not exactly one active call (code 302)."""


@dataclass
class Call:
    call_id: str
    line: str
    direction: str  # "outbound" or "inbound"
    dialed: str = ""
    caller_id: str = ""
    url: str = ""
    error_url: str = ""
    finished_url: str = ""
    state: CallState = CallState.SETUP
    started_at: datetime = field(default_factory=datetime.now)
    started: float = field(default_factory=time.monotonic)
    connected: float | None = None
    ended: float | None = None
    last_ring: float = field(default_factory=time.monotonic)
    end_reason: str = ""
    answering: bool = False
    hangup: threading.Event = field(default_factory=threading.Event)

    @property
    def over(self) -> bool:
        # A method, not a field test, so type checkers do not narrow it away
        # between two looks: other threads end calls.
        return self.state is CallState.COMPLETED

    @property
    def ring_seconds(self) -> float:
        until = self.connected or self.ended or time.monotonic()
        return max(0.0, until - self.started)

    @property
    def talk_seconds(self) -> float:
        if self.connected is None:
            return 0.0
        return max(0.0, (self.ended or time.monotonic()) - self.connected)

    @property
    def source(self) -> str:
        if self.direction == "inbound":
            return self.caller_id or "unknown"
        return self.line

    @property
    def destination(self) -> str:
        return self.line if self.direction == "inbound" else self.dialed


@dataclass
class Line:
    name: str
    driver: LineDriver
    worker: LineWorker
    recorder: CallRecorder | None = None
    call: Call | None = None
    opened: bool = False


def new_call_id(taken: Callable[[str], bool]) -> str:
    """Six random URL-safe characters, like Ozeki's ``SdwQD``."""
    while True:
        call_id = "".join(secrets.choice(CALL_ID_ALPHABET) for _ in range(6))
        if not taken(call_id):
            return call_id


class Gateway:
    """Lines, their calls and their workers. Built from a Config; the API and
    the console talk to this and nothing below it."""

    def __init__(
        self,
        config: Config,
        built: dict[str, BuiltLine] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.timing = config.tones.timing
        self.metrics = metrics or Metrics()
        self._lock = threading.RLock()
        self.calls: dict[str, Call] = {}
        self.recent: deque[Call] = deque(maxlen=RECENT_CALLS)
        self.lines: dict[str, Line] = {}
        self._notifier = ThreadPoolExecutor(max_workers=4, thread_name_prefix="notify")
        self._stop = threading.Event()
        for line_config in config.lines:
            parts = (built or {}).get(line_config.name) or build_line(
                line_config.driver, line_config.name, line_config.options,
                config.tones.settings())
            driver = parts.driver
            worker = LineWorker(line_config.name, line_config.queue_size)
            line = Line(line_config.name, driver, worker, parts.recorder)
            driver.ring_handler = self._ring_handler(line)
            self.metrics.queue_depth.labels(line.name).set_function(worker.depth_gauge)
            self.lines[line.name] = line
        self._reaper = threading.Thread(target=self._reap, name="ring-reaper", daemon=True)

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> dict[str, str | None]:
        """Open every line; a line that fails stays faulted and is tried again
        by its next command. Returns each line's fault (None when open)."""
        faults: dict[str, str | None] = {}
        for line in self.lines.values():
            try:
                self._ensure_open(line)
                faults[line.name] = None
            except LineFault as exc:
                faults[line.name] = str(exc)
                log.error("line %s: %s", line.name, exc)
        if not self._reaper.is_alive():
            self._reaper.start()
        return faults

    def _ensure_open(self, line: Line) -> None:
        if line.opened:
            return
        try:
            line.driver.open()
        except LineFault as exc:
            line.driver.fault = str(exc)
            self.metrics.line_faults.labels(line.name).inc()
            raise
        line.opened = True
        line.driver.fault = None

    def close(self, timeout: float = 10.0) -> None:
        """Let running commands finish (within ``timeout``), end every call,
        put every line on hook and release the hardware."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for line in self.lines.values():
            line.worker.cancel_pending(LineBusy(f"line {line.name!r} is shutting down"))
        for line in self.lines.values():
            if line.call is not None:
                line.call.hangup.set()
            line.worker.stop(max(0.1, deadline - time.monotonic()))
        for line in self.lines.values():
            if line.call is not None:
                self._end_call(line, line.call, "gateway stopped")
            try:
                line.driver.close()
            except Exception:
                log.exception("line %s: closing failed", line.name)
        self._notifier.shutdown(wait=False, cancel_futures=True)

    def on_hook_all(self) -> None:
        """Drop every line now (signal handlers, crash paths). Never raises."""
        for line in self.lines.values():
            try:
                line.driver.on_hook()
            except Exception:
                log.exception("line %s: on hook failed", line.name)

    # -- helpers -------------------------------------------------------------
    def _run(self, line: Line, job: Callable[[], T], *, urgent: bool = False) -> T:
        """Run ``job`` on the line's worker and wait for it."""
        future = line.worker.submit(job, urgent=urgent)
        try:
            return future.result(timeout=self.config.server.command_timeout_s)
        except FutureTimeout:
            future.cancel()
            raise LineBusy(f"line {line.name!r} did not get to the command in time") from None

    def _guarded(self, line: Line, call: Call, action: Callable[[], T]) -> T:
        """Run a hardware action of ``call``. A fault ends the call on hook, and
        so does any unexpected error: a bug must not leave a line seized."""
        started = time.monotonic()
        try:
            self._ensure_open(line)
            result = action()
        except NotSupported:
            raise
        except LineFault as exc:
            line.driver.fault = str(exc)
            self.metrics.line_faults.labels(line.name).inc()
            log.error("line %s: fault during call %s: %s", line.name, call.call_id, exc)
            self._end_call(line, call, f"line fault: {exc}")
            # The driver may have lost its hardware: open it afresh next time.
            line.opened = False
            try:
                line.driver.close()
            except Exception:
                log.exception("line %s: closing after a fault failed", line.name)
            raise
        except Exception as exc:
            self._end_call(line, call, f"internal error: {type(exc).__name__}")
            raise
        finally:
            self.metrics.busy_seconds.labels(line.name).inc(time.monotonic() - started)
        line.driver.fault = None
        return result

    def _emit(self, line: Line, call: Call, plan: TonePlan, party: Party) -> None:
        """Keys into ``call`` (guarded like every hardware action), counted."""
        self._guarded(line, call, lambda: line.driver.emit(plan, party))
        self.metrics.digits.labels(line.name).inc(
            sum(1 for s in plan.symbols if isinstance(s, Tone))
        )

    def find(self, call_id: str | None) -> Call:
        with self._lock:
            if call_id:
                call = self.calls.get(call_id)
                if call is None:
                    raise CallNotFound(call_id)
                return call
            if len(self.calls) != 1:
                raise AmbiguousCall(
                    f"there are {len(self.calls)} active calls; say which with CallId"
                )
            return next(iter(self.calls.values()))

    def active_calls(self) -> list[Call]:
        with self._lock:
            return sorted(self.calls.values(), key=lambda c: c.started)

    def _register(self, line: Line, call: Call) -> None:
        self.calls[call.call_id] = call
        line.call = call

    def _new_id(self) -> str:
        recent = {c.call_id for c in self.recent}
        return new_call_id(lambda i: i in self.calls or i in recent)

    def _end_call(self, line: Line, call: Call, reason: str) -> None:
        """On hook, close the recording, unregister, tell FinishedUrl. Idempotent."""
        with self._lock:
            if call.over:
                return
            call.state = CallState.COMPLETED
            call.ended = time.monotonic()
            call.end_reason = reason
            call.hangup.set()
            self.calls.pop(call.call_id, None)
            if line.call is call:
                line.call = None
            self.recent.append(call)
        try:
            line.driver.on_hook()
        except Exception:
            log.exception("line %s: on hook failed", line.name)
        if line.recorder is not None:
            try:
                line.recorder.end(call.call_id)
            except Exception:
                log.exception("line %s: ending the recording of %s failed", line.name,
                              call.call_id)
        end = "fault" if reason.startswith("line fault") else "normal"
        self.metrics.calls.labels(call.direction, end).inc()
        log.info("call %s on %s ended: %s", call.call_id, line.name, reason)
        if call.finished_url:
            self._notify_later(call.finished_url, {
                "NotificationName": "CallFinished",
                "CallId": call.call_id,
                "Line": line.name,
                "Dialed": call.dialed,
                "Reason": reason,
                "RingDuration": f"{call.ring_seconds:.3f}",
                "TalkDuration": f"{call.talk_seconds:.3f}",
            })

    def _notify_later(self, url: str, fields: dict[str, str]) -> None:
        def send() -> None:
            try:
                notify.post(url, fields, self.config.server.notify_timeout_s)
            except notify.NotifyError as exc:
                self.metrics.notification_failures.labels(fields["NotificationName"]).inc()
                log.warning("%s", exc)

        if not self._stop.is_set():
            self._notifier.submit(send)

    def report_error(self, call: Call, code: int, message: str) -> None:
        log.warning("call %s: %s %s", call.call_id, code, message)
        if call.error_url:
            self._notify_later(call.error_url, {
                "NotificationName": "Error", "CallId": call.call_id,
                "Code": str(code), "Message": message,
            })

    # -- commands ------------------------------------------------------------
    def send_dtmf(self, call_id: str | None, plan: TonePlan, party: Party) -> Call:
        """Put ``plan`` on the call's line; returns when the last gap has passed."""
        call = self.find(call_id)
        if call.state is CallState.RINGING:
            raise Inappropriate("SendDTMF", "the call is ringing and has not been answered")
        line = self.lines[call.line]

        def job() -> None:
            if call.state is not CallState.IN_CALL:
                raise CallNotFound(call.call_id)
            self._emit(line, call, plan, party)

        self._run(line, job)
        return call

    def place_call(
        self,
        dialed: str,
        *,
        url: str = "",
        script: tuple[ozml.Command, ...] | None = None,
        error_url: str = "",
        finished_url: str = "",
    ) -> Call:
        """Seize a free line, dial, and return the connected call.

        With ``url`` the CallConnected notification is posted there and the
        OzML it answers runs on the call; with ``script`` that OzML runs.
        Without either the call stays up until HangUp.
        """
        parse_keys(dialed)  # the caller checks it; this keeps the driver safe
        with self._lock:
            free = [ln for ln in self.lines.values() if ln.call is None]
            if not free:
                raise CallFailed(dialed, "NoFreeLine", "every line has a call")
            # A line whose last command faulted (a modem unplugged, a card gone)
            # is tried again only when no healthy line is free.
            line = next((ln for ln in free if ln.driver.fault is None), free[0])
            call = Call(self._new_id(), line.name, "outbound", dialed=dialed, url=url,
                        error_url=error_url, finished_url=finished_url)
            self._register(line, call)

        def setup() -> None:
            if call.over:
                return
            self._guarded(line, call, lambda: line.driver.place_call(dialed, self.timing))
            with self._lock:
                if call.over:
                    return
                call.state = CallState.IN_CALL
                call.connected = time.monotonic()
            if line.recorder is not None:
                line.recorder.begin(call.call_id)

        try:
            self._run(line, setup)
        except CallFailed:
            self._end_call(line, call, "call failed")
            raise
        except BaseException:
            self._end_call(line, call, "call setup failed")
            raise
        if call.state is not CallState.IN_CALL:
            raise CallNotFound(call.call_id)
        if url or script is not None:
            try:
                line.worker.submit(lambda: self._connected(line, call, script))
            except LineBusy:
                self._end_call(line, call, "no room to run its script")
                raise
        return call

    def _connected(self, line: Line, call: Call, script: tuple[ozml.Command, ...] | None) -> None:
        if call.state is not CallState.IN_CALL:
            return
        if call.url:
            fields = {
                "NotificationName": "CallConnected", "CallId": call.call_id,
                "Dialed": call.dialed, "Line": line.name, "Direction": "outbound",
                "StartTime": call.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                "ConnectTime": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            }
            script = self._fetch_script(line, call, call.url, fields)
            if script is None:
                return
        self.run_script(line, call, script or (), "CallConnected")

    def _fetch_script(
        self, line: Line, call: Call, url: str, fields: dict[str, str]
    ) -> tuple[ozml.Command, ...] | None:
        """The OzML a notification answers; on failure the call is hung up (as
        Ozeki does) and the error goes to ErrorUrl."""
        try:
            body = notify.post(url, fields, self.config.server.notify_timeout_s)
        except notify.NotifyError as exc:
            self.metrics.notification_failures.labels(fields["NotificationName"]).inc()
            self.report_error(call, 402, str(exc))
            self._end_call(line, call, f"{fields['NotificationName']} failed: {exc}")
            return None
        try:
            return ozml.parse(body, self.timing)
        except ozml.OzmlError as exc:
            self.report_error(call, exc.code, f"OzML from {url}: {exc.detail}")
            self._end_call(line, call, f"bad OzML from {url}")
            return None

    def run_script(
        self, line: Line, call: Call, script: tuple[ozml.Command, ...], notification: str
    ) -> None:
        """Run OzML on the call (on its line's worker); hang up at the end."""
        try:
            for command in script:
                if call.hangup.is_set() or call.state is not CallState.IN_CALL:
                    return
                # A script is one job; each command bounds its own time.
                line.worker.progress()
                if isinstance(command, ozml.SendDTMF):
                    self._emit(line, call, command.plan, command.party)
                elif isinstance(command, ozml.Delay):
                    call.hangup.wait(command.seconds)
                elif isinstance(command, ozml.Speak):
                    try:
                        speak = command
                        self._guarded(line, call, lambda s=speak: line.driver.speak(  # type: ignore[misc]
                            s.text, s.language, s.party))
                    except NotSupported as exc:
                        self.report_error(call, 303, f"Command 'Speak' cannot be used here: {exc}")
                elif isinstance(command, ozml.Hangup):
                    break
        except LineFault as exc:
            self.report_error(call, 801, f"Line '{line.name}' fault: {exc}")
        except Exception as exc:
            log.exception("call %s: script failed", call.call_id)
            self.report_error(call, 800, f"internal error: {type(exc).__name__}")
        finally:
            self._end_call(line, call, f"{notification} script ended")

    def hang_up(self, call_id: str | None) -> Call:
        call = self.find(call_id)
        line = self.lines[call.line]
        # Wake a script sleeping in Delay, then go on hook ahead of queued work.
        call.hangup.set()
        self._run(line, lambda: self._end_call(line, call, "hung up by API"), urgent=True)
        return call

    # -- incoming ------------------------------------------------------------
    def _ring_handler(self, line: Line) -> Callable[[str | None], None]:
        def on_ring(caller_id: str | None) -> None:
            try:
                self._on_ring(line, caller_id)
            except Exception:
                log.exception("line %s: ring handling failed", line.name)

        return on_ring

    def _on_ring(self, line: Line, caller_id: str | None) -> None:
        with self._lock:
            if line.call is not None:
                if line.call.state is CallState.RINGING:
                    line.call.last_ring = time.monotonic()
                return
            call = Call(self._new_id(), line.name, "inbound", caller_id=caller_id or "",
                        state=CallState.RINGING)
            self._register(line, call)
        log.info("line %s: incoming call %s from %s", line.name, call.call_id,
                 caller_id or "unknown")
        if self.config.server.incoming_url:
            try:
                line.worker.submit(lambda: self._answer(line, call))
            except LineBusy as exc:
                log.warning("line %s: cannot answer %s: %s", line.name, call.call_id, exc)

    def _answer(self, line: Line, call: Call) -> None:
        if call.state is not CallState.RINGING:
            return
        call.answering = True
        fields = {
            "NotificationName": "IncomingCall", "CallId": call.call_id, "Line": line.name,
            "Caller": call.caller_id, "CallerId": call.caller_id,
            "StartTime": call.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        }
        script = self._fetch_script(line, call, self.config.server.incoming_url, fields)
        if script is None:
            return
        try:
            self._guarded(line, call, line.driver.answer)
        except LineFault:
            return
        with self._lock:
            if call.state is not CallState.RINGING:
                return
            call.state = CallState.IN_CALL
            call.connected = time.monotonic()
        if line.recorder is not None:
            line.recorder.begin(call.call_id)
        self.run_script(line, call, script, "IncomingCall")

    def _reap(self) -> None:
        """End incoming calls whose ringing stopped before anyone answered."""
        while not self._stop.wait(1.0):
            now = time.monotonic()
            with self._lock:
                stale = [
                    c for c in self.calls.values()
                    if c.state is CallState.RINGING and not c.answering
                    and now - c.last_ring > RING_TIMEOUT_S
                ]
            for call in stale:
                self._end_call(self.lines[call.line], call, "caller gave up")
