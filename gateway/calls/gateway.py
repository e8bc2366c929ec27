"""The gateway: its lines and their calls, and the commands the API runs on them.

Every command that touches a line runs on that line's worker, so commands on
one line are strictly first-in first-out and the tones of two requests never
interleave, while different lines work in parallel. The parts it stands on
each do one job: :mod:`~gateway.calls.line` (a line's lifecycle and fault
policy), :mod:`~gateway.calls.registry` (the calls),
:mod:`~gateway.calls.notifications` (Ozeki's notifications) and
:mod:`~gateway.calls.script` (running OzML).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from gateway import media, notify, ozml
from gateway.calls import notifications, script
from gateway.calls.line import Line, LineSnapshot
from gateway.calls.notifications import Notifier
from gateway.calls.record import Recording
from gateway.calls.registry import Call, CallRegistry, CallState
from gateway.codes import Code
from gateway.config import Config
from gateway.errors import (
    CallEnded,
    CallFailed,
    CallNotFound,
    Inappropriate,
    KeyStringError,
    LineBusy,
    LineFault,
    NotifyError,
    NotSupported,
    OzmlError,
    describe,
)
from gateway.keys import Tone, parse_keys
from gateway.lines import BuiltLine, build_line
from gateway.lines.base import Party
from gateway.lines.recording import recording_fault
from gateway.logs import escape
from gateway.metrics import Metrics
from gateway.tones import TonePlan

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Beyond a command's own time on the line (twice it, for a loaded machine),
#: how long its answer may take: a driver's own bounded waits.
RUN_MARGIN_S = 30.0

class Gateway:
    """Lines, their calls and their workers, built from a Config. The API and
    the console talk to this and to line snapshots, nothing below."""

    def __init__(
        self,
        config: Config,
        built: dict[str, BuiltLine] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.timing = config.tones.timing
        self.metrics = metrics or Metrics()
        self.registry = CallRegistry()
        self.notifier = Notifier(config.server.notify_timeout_s, self.metrics, notify.Policy(
            config.server.notify_allow, listen_host=config.server.host,
            api_port=config.server.port))
        self.lines: dict[str, Line] = {}
        self._stop = threading.Event()
        for line_config in config.lines:
            parts = (built or {}).get(line_config.name) or build_line(
                line_config.driver, line_config.name, line_config.options,
                config.tones.settings())
            line = Line(line_config.name, parts, line_config.queue_size, self.metrics)
            line.driver.ring_handler = self._ring_handler(line)
            if line.driver.ears is not None:
                line.driver.ears.handler = _Heard(self, line)
            self.metrics.queue_depth.labels(line.name).set_function(line.worker.depth_gauge)
            self.lines[line.name] = line
        self._supervisor = threading.Thread(target=self._supervise, name="call-supervisor",
                                            daemon=True)

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> dict[str, str | None]:
        """Open every line; a line that fails stays faulted and is tried again
        by its next command. Returns each line's fault (None when open)."""
        faults: dict[str, str | None] = {}
        for line in self.lines.values():
            try:
                line.open()
                faults[line.name] = None
            except LineFault as exc:
                faults[line.name] = str(exc)
                log.error("line %s: %s", line.name, exc)
        if not self._supervisor.is_alive():
            self._supervisor.start()
        return faults

    def close(self, timeout: float = 10.0) -> None:
        """Let running commands finish (within ``timeout``), end every call,
        put every line on hook and release the hardware."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for line in self.lines.values():
            stopping = LineBusy("the gateway is stopping")
            stopping.line = line.name
            line.worker.cancel_pending(stopping)
        for line in self.lines.values():
            if line.call is not None:
                line.call.hangup.set()
            line.worker.stop(max(0.1, deadline - time.monotonic()))
        for line in self.lines.values():
            if line.call is not None:
                self._end_call(line, line.call, "gateway stopped")
            line.release()
        self.notifier.close()

    def on_hook_all(self) -> None:
        """Drop every line now (signal handlers, crash paths). Never raises."""
        for line in self.lines.values():
            line.on_hook()

    def snapshots(self) -> list[LineSnapshot]:
        return [line.snapshot() for line in self.lines.values()]

    # -- calls ---------------------------------------------------------------
    @property
    def record_dir(self) -> Path:
        """Where Record writes its recordings (and whence they are downloaded)."""
        return self.config.path(self.config.calls.record_dir)

    def find(self, call_id: str | None, command: str = "") -> Call:
        return self.registry.find(call_id, command)

    def active_calls(self) -> list[Call]:
        return self.registry.active()

    @property
    def recent(self) -> list[Call]:
        """Ended calls, oldest first."""
        return list(self.registry.recent)

    def _run(self, line: Line, job: Callable[[], T], *, expected_s: float) -> T:
        """Run ``job`` on the line's worker and wait for it.

        It may wait ``server.command_timeout_s`` for its turn; once it has
        started, its answer waits for it to end (``expected_s`` is its own time
        on the line), so a command whose keys went out never answers a failure.
        """
        started = threading.Event()

        def run() -> T:
            started.set()
            return job()

        future = line.worker.submit(run)
        if not started.wait(self.config.server.command_timeout_s) and future.cancel():
            late = LineBusy("the line did not get to the command in time; nothing of it was done")
            late.line = line.name
            raise late
        bound = 2 * expected_s + RUN_MARGIN_S
        try:
            return future.result(timeout=bound)
        except TimeoutError:
            stuck = LineBusy(f"the command is still running after {bound:.0f} s")
            stuck.line = line.name
            raise stuck from None

    def _guarded(self, line: Line, call: Call, action: Callable[[], T]) -> T:
        return line.guarded(call, action, lambda reason: self._end_call(line, call, reason))

    def _emit(self, line: Line, call: Call, plan: TonePlan, party: Party) -> None:
        """Keys into ``call`` (guarded like every hardware action), counted; a
        hook flash among them is the line's own break of its loop."""
        driver = line.driver
        for part in plan.split():
            if part is None:
                try:
                    self._guarded(line, call, functools.partial(driver.flash,
                                                                driver.call_timing.flash_ms))
                except NotSupported as exc:
                    exc.command = exc.command or "SendDTMF"
                    raise
                continue
            self._guarded(line, call, functools.partial(driver.emit, part, party))
            self.metrics.digits.labels(line.name).inc(
                sum(1 for s in part.symbols if isinstance(s, Tone)))

    def _connect(self, line: Line, call: Call) -> bool:
        """The call is answered: talk time starts, the recording begins. False
        if the call ended meanwhile."""
        with self.registry.lock:
            if call.over:
                return False
            call.connect()
        recorder = line.recorder
        if recorder is not None:
            self._guarded(line, call, lambda: recorder.begin(call.call_id))
        return True

    def _end_call(self, line: Line, call: Call, reason: str) -> None:
        """On hook, close the recording, unregister, tell FinishedUrl. Idempotent."""
        if not self.registry.finish(call, reason):
            return
        try:
            self._put_down(line, call)
        finally:
            self.registry.retire(call)
        end = "fault" if reason.startswith("line fault") else "normal"
        self.metrics.calls.labels(call.direction, end).inc()
        log.info("call %s on %s ended: %s", call.call_id, line.name, reason)
        if call.finished_url:
            self.notifier.send_later(call.finished_url, notifications.call_finished(call))

    def _put_down(self, line: Line, call: Call) -> None:
        """The ended ``call``'s hardware side: hooks, on hook, the recording."""
        try:
            for hook in call.hangup_hooks:
                hook()
            line.on_hook()
        finally:
            # Free only once on hook: a Call let onto the line sooner could go
            # off hook before this on_hook, which would then drop it.
            with self.registry.lock:
                if line.call is call:
                    line.call = None
        if line.recorder is not None:
            try:
                line.recorder.end(call.call_id)
            except LineFault as exc:
                # The recording could not be finished (a full disk): the line
                # cannot do what it promises until that is mended.
                line.faulted(exc)
            except Exception:
                log.exception("line %s: ending the recording of %s failed", line.name,
                              call.call_id)

    def report_error(self, call: Call, exc: BaseException) -> None:
        """What went wrong in ``call`` outside any request: logged, and sent to
        its ErrorUrl in the API's own code and message."""
        described = describe(exc)
        log.warning("call %s: %d %s", call.call_id, described.code, described.text)
        if call.error_url:
            self.notifier.send_later(call.error_url, notifications.error(call, described))

    # -- commands ------------------------------------------------------------
    def _on_call(self, call_id: str | None, command: str, expected_s: float,
                 action: Callable[[Line, Call], None]) -> Call:
        """Run ``action`` on the call's line, in its turn, while the call is up;
        return when it is done (``expected_s``: its own time on the line)."""
        call = self.find(call_id, command)
        if call.state is CallState.RINGING:
            raise Inappropriate(command, "the call is ringing and has not been answered")
        line = self.lines[call.line]
        call.touch()

        def job() -> None:
            if call.over:
                raise CallEnded(call.call_id, call.end_reason)
            if call.state is not CallState.IN_CALL:
                raise CallNotFound(call.call_id)
            call.touch()
            try:
                action(line, call)
            finally:
                call.touch()

        self._run(line, job, expected_s=expected_s)
        return call

    def send_dtmf(self, call_id: str | None, plan: TonePlan, party: Party) -> Call:
        """Put ``plan`` on the call's line; returns when the last gap has passed."""
        flashes_s = plan.flashes * 1.2  # the longest flash_ms a line may have
        return self._on_call(call_id, "SendDTMF", plan.seconds + flashes_s,
                             lambda line, call: self._emit(line, call, plan, party))

    def speak(self, call_id: str | None, text: str, language: str | None, party: Party) -> Call:
        """Say ``text`` into the call; returns when it has been said."""

        return self._on_call(call_id, "Speak", len(text) / ozml.SPEECH_CHARS_PER_S,
                             lambda line, call: self._speak(line, call, text, language, party))

    def _speak(self, line: Line, call: Call, text: str, language: str | None,
               party: Party) -> None:
        """Say ``text`` on the line (over HTTP and in OzML); a line that
        cannot speak says so as Speak's."""
        try:
            self._guarded(line, call, lambda: line.driver.speak(text, language, party))
        except NotSupported as exc:
            exc.command = "Speak"
            raise

    def record(self, call_id: str | None, command: ozml.Record) -> tuple[Call, Recording]:
        """Start recording what the call's line hears (see :mod:`gateway.calls.record`);
        returns at once, the recording goes on by itself."""
        call = self.find(call_id, "Record")
        if call.state is not CallState.IN_CALL:
            raise Inappropriate("Record", "the call has not been answered")
        return call, self._record(self.lines[call.line], call, command)

    def _record(self, line: Line, call: Call, command: ozml.Record) -> Recording:
        ears = line.driver.ears
        if ears is None or not ears.captures_audio:
            raise Inappropriate("Record", f"a {line.driver.driver_name} line records nothing "
                                "(it has no capture of the far end)")
        with self.registry.lock:
            call.recordings += 1
            name = f"{call.call_id}-{call.recordings}.wav"
        path = self.record_dir / name

        def done(recording: Recording) -> None:
            ears.remove_tap(recording)
            log.info("call %s: recording %s ended (%s), %.1f s", call.call_id, name,
                     recording.reason, recording.seconds)
            if command.finished_url:
                self.notifier.send_later(command.finished_url, notifications.record_completed(
                    call, name, recording.seconds, recording.reason))

        try:
            recording = Recording(name, path, ears.rate, command, done)
        except OSError as exc:
            fault = recording_fault("creating", path, exc)
            fault.line = line.name
            raise fault from exc
        ears.add_tap(recording)
        call.hangup_hooks.append(lambda: recording.stop("the call ended"))
        return recording

    def blind_transfer(self, call_id: str | None, target: str) -> Call:
        """Hand the call to ``target`` (see :meth:`LineDriver.transfer`); the
        call is over once it is done."""
        plan = TonePlan(parse_keys(target), self.timing)

        def transfer(line: Line, call: Call) -> None:
            self._transfer(line, call, target)

        waits = 1.2 + 30.0 + plan.seconds  # flash, recall dial tone, the target's keys
        return self._on_call(call_id, "BlindTransfer", waits, transfer)

    def _transfer(self, line: Line, call: Call, target: str) -> None:
        driver = line.driver
        try:
            self._guarded(line, call, lambda: driver.transfer(target, self.timing))
        except NotSupported as exc:
            exc.command = "BlindTransfer"
            raise
        self._end_call(line, call, f"transferred to {target}")

    def play(self, call_id: str | None, command: ozml.Play) -> Call:
        """Play an audio file into the call; returns when it has played."""
        return self._on_call(call_id, "Play", command.timeout_s or ozml.MAX_PLAY_S,
                             lambda line, call: self._play(line, call, command))

    def _play(self, line: Line, call: Call, command: ozml.Play) -> None:
        """On the line's worker: fetch, decode and play ``command``'s file."""
        driver = line.driver
        rate = driver.audio_rate
        if rate is None:
            refused = NotSupported(f"a {driver.driver_name} line plays no audio")
            refused.command = "Play"
            raise refused
        calls = self.config.calls
        samples = media.load(command.audio_file, rate,
                             media_dir=self.config.path(calls.media_dir),
                             max_bytes=calls.max_media_bytes,
                             timeout=self.config.server.notify_timeout_s,
                             policy=self.notifier.policy)
        # Timeout counts the audio's own time (the line's), not the wall clock.
        budget = round(command.timeout_s * rate) if command.timeout_s else None
        played = 0
        while (command.times == 0 or played < command.times) and not call.hangup.is_set():
            part = samples if budget is None else samples[:budget]
            if len(part) == 0:
                return
            self._guarded(line, call, functools.partial(driver.play_audio, part, command.party))
            played += 1
            if budget is not None:
                budget -= len(part)

    def place_call(
        self,
        dialed: str,
        *,
        url: str = "",
        script: tuple[ozml.Command, ...] | None = None,
        error_url: str = "",
        finished_url: str = "",
        ring_time_s: float | None = None,
        dtmf_url: str = "",
    ) -> Call:
        """Seize a free line, dial, and return the connected call.

        With ``url`` the CallConnected notification is posted there and the
        OzML it answers runs on the call; with ``script`` that OzML runs.
        Without either the call stays up until HangUp. On a line that hears,
        the call is connected when the far end answers, and ``ring_time_s``
        bounds how long it may ring (402 ``NoAnswer``). Each key the far end
        presses goes to ``dtmf_url`` as a DtmfEntered notification.
        """
        dial = TonePlan(parse_keys(dialed), self.timing)  # checked by the caller too
        if dial.flashes:
            raise KeyStringError("a hook flash cannot be dialled (it needs a call up)")
        if script is not None:
            self.check_script(script, "ResponseOzML")
        with self.registry.lock:
            free = [ln for ln in self.lines.values() if ln.call is None]
            if not free:
                raise CallFailed(dialed, "NoFreeLine", "every line has a call")
            # A line whose last command faulted (a modem unplugged, a card gone)
            # is tried again only when no healthy line is free.
            line = next((ln for ln in free if ln.fault is None), free[0])
            call = Call(self.registry.new_id(), line.name, "outbound", dialed=dialed, url=url,
                        error_url=error_url, finished_url=finished_url, dtmf_url=dtmf_url)
            self.registry.add(call)
            line.call = call

        def setup() -> None:
            if call.over:
                return
            self._guarded(line, call, lambda: line.driver.place_call(
                dialed, self.timing, no_answer_s=ring_time_s))
            self._connect(line, call)

        waits = line.driver.call_timing
        if line.driver.hears:
            # Waits for dial tone, then rings (at most RingTime).
            setup_s = (waits.dial_tone_wait_ms / 1000
                       + (ring_time_s or waits.no_answer_ms / 1000)) * line.driver.wall_factor
        else:
            setup_s = (waits.dial_tone_ms + waits.answer_wait_ms) / 1000
        try:
            self._run(line, setup, expected_s=dial.seconds + setup_s)
        except CallFailed as exc:
            self._end_call(line, call, f"call failed: {exc.state}")
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

    def _connected(self, line: Line, call: Call, commands: tuple[ozml.Command, ...] | None
                   ) -> None:
        if call.state is not CallState.IN_CALL:
            return
        if call.url:
            commands = self._fetch_script(line, call, call.url,
                                          notifications.call_connected(call))
            if commands is None:
                return
        self.run_script(line, call, commands or (), "CallConnected")

    def _fetch_script(
        self, line: Line, call: Call, url: str, fields: dict[str, str]
    ) -> tuple[ozml.Command, ...] | None:
        """The OzML a notification answers; on failure the call is hung up (as
        Ozeki does) and the error goes to ErrorUrl."""
        name = fields["NotificationName"]
        try:
            body = self.notifier.fetch(url, fields)
        except NotifyError as exc:
            self.report_error(call, CallFailed(call.destination, "NotificationFailed",
                                               cause=str(exc)))
            self._end_call(line, call, f"{name} failed: {exc}")
            return None
        where = notify.redacted_url(url)
        try:
            commands = ozml.parse(body, self.timing)
        except OzmlError as exc:
            # The details (an element's name, a parse position) describe what
            # the URL answered, which may be some service on the LAN: they are
            # for the log, ErrorUrl hears only the class of failure.
            log.warning("call %s: the answer of %s to %s is not OzML it can run: %s",
                        call.call_id, where, name, exc)
            self.report_error(call, OzmlError(Code.PARSE_ERROR, f"the answer to {name} is not "
                                              "OzML this gateway runs (its log says why)"))
            self._end_call(line, call, f"bad OzML from {where}")
            return None
        try:
            self.check_script(commands, "Url")
        except OzmlError as exc:
            self.report_error(call, exc)
            self._end_call(line, call, f"OzML from {where} is too long")
            return None
        return commands

    def check_script(self, commands: tuple[ozml.Command, ...], parameter: str) -> None:
        """Refuse a script that would hold its line longer than ``calls.max_script_s``."""
        seconds = ozml.line_seconds(commands)
        limit = self.config.calls.max_script_s
        if seconds > limit:
            raise OzmlError(Code.INVALID_PARAMETER, f"the script would hold the line for "
                            f"{seconds:.0f} s, more than calls.max_script_s ({limit:g} s)",
                            parameter, "Call")

    def run_script(
        self, line: Line, call: Call, commands: tuple[ozml.Command, ...], notification: str
    ) -> None:
        """Run OzML on the call (on its line's worker); hang up at the end."""
        call.scripted = True
        try:
            script.run_block(_Control(self, line, call), commands)
        except CallEnded:
            pass  # hung up (or timed out) inside a command: nothing to report
        except LineFault as exc:
            self.report_error(call, exc)
        except Exception as exc:
            log.exception("call %s: script failed", call.call_id)
            self.report_error(call, exc)
        finally:
            self._end_call(line, call, f"{notification} script ended")

    def hang_up(self, call_id: str | None) -> Call:
        call = self.find(call_id, "HangUp")
        self._hang_up(self.lines[call.line], call, "hung up by API")
        return call

    def _hang_up(self, line: Line, call: Call, reason: str) -> None:
        """End ``call`` now, whatever its line is doing: not behind the running
        command but over it. Going on hook stops the driver (tones stop
        mid-digit, dialling stops); the command's own answer says the call
        ended. A second hang-up of the same call finds it gone (601) at once."""
        call.hangup.set()  # a script's Delay wakes, queued commands of it give up
        self._end_call(line, call, reason)

    # -- incoming ------------------------------------------------------------
    def _ring_handler(self, line: Line) -> Callable[[str | None], None]:
        def on_ring(caller_id: str | None) -> None:
            try:
                self._on_ring(line, caller_id)
            except Exception:
                log.exception("line %s: ring handling failed", line.name)

        return on_ring

    def _on_ring(self, line: Line, caller_id: str | None) -> None:
        with self.registry.lock:
            if line.call is not None:
                if line.call.state is CallState.RINGING:
                    line.call.last_ring = time.monotonic()
                return
            call = Call(self.registry.new_id(), line.name, "inbound", caller_id=caller_id or "",
                        state=CallState.RINGING)
            self.registry.add(call)
            line.call = call
        log.info("line %s: incoming call %s from %s", line.name, call.call_id,
                 escape(caller_id) if caller_id else "unknown")
        if self.config.server.incoming_url:
            try:
                line.worker.submit(lambda: self._answer(line, call))
            except LineBusy as exc:
                log.warning("line %s: cannot answer %s: %s", line.name, call.call_id, exc)

    def _answer(self, line: Line, call: Call) -> None:
        if call.state is not CallState.RINGING:
            return
        call.answering = True
        commands = self._fetch_script(line, call, self.config.server.incoming_url,
                                      notifications.incoming_call(call))
        if commands is None:
            return
        try:
            self._guarded(line, call, line.driver.answer)
            if not self._connect(line, call):
                return
        except LineFault:
            return
        self.run_script(line, call, commands, "IncomingCall")

    def _supervise(self) -> None:
        """End calls nobody ends: incoming calls whose ringing stopped before
        anyone answered, calls past ``calls.max_call_s``, and calls without a
        script that no command used for ``calls.idle_s``."""
        limits = self.config.calls
        while True:
            ring_timeout = {name: line.driver.call_timing.ring_timeout_ms / 1000
                            for name, line in self.lines.items()}
            # A tenth of the shortest timeout: a call ends within 10 % of its time.
            if self._stop.wait(min([10.0, *ring_timeout.values()]) / 10):
                return
            now = time.monotonic()
            for call in self.registry.active():
                line = self.lines[call.line]
                if call.state is CallState.RINGING and call.direction == "inbound":
                    if not call.answering and now - call.last_ring > ring_timeout[call.line]:
                        self._end_call(line, call, "caller gave up")
                elif call.state is CallState.RINGING:
                    pass  # an outbound call rings until its own RingTime
                elif call.connected is not None and now - call.connected > limits.max_call_s:
                    self._hang_up(line, call, f"longer than calls.max_call_s "
                                  f"({limits.max_call_s:g} s)")
                elif (limits.idle_s and call.state is CallState.IN_CALL and not call.scripted
                      and now - call.last_activity > limits.idle_s):
                    self._hang_up(line, call, f"no command for calls.idle_s "
                                  f"({limits.idle_s:g} s)")


    # -- what a line hears -----------------------------------------------------------
    def _ringing(self, line: Line) -> None:
        with self.registry.lock:
            call = line.call
            if call is not None and call.direction == "outbound" and call.state is CallState.SETUP:
                call.state = CallState.RINGING

    def _far_end_left(self, line: Line, why: str) -> None:
        call = line.call
        if call is not None and call.state is CallState.IN_CALL:
            self._hang_up(line, call, f"the far end hung up ({why})")

    def _key_heard(self, line: Line, key: str, duration_ms: int) -> None:
        call = line.call
        if call is None or call.state is not CallState.IN_CALL:
            return
        log.info("call %s on %s: the far end pressed %s (%d ms)", call.call_id, line.name,
                 key, duration_ms)
        call.keys.put(key)
        if call.dtmf_url:
            self.notifier.send_later(call.dtmf_url, notifications.dtmf_entered(call, key),
                                     stream=call.call_id)

    def _hearing_failed(self, line: Line, exc: LineFault) -> None:
        """The line's capture failed: a hardware fault like any other, handled
        on the line's worker so it does not race the command running there."""
        def fail() -> None:
            call = line.call
            if call is not None and not call.over:
                self._guarded(line, call, lambda: _raise(exc))
            else:
                line.faulted(exc)
                line.close_driver()

        try:
            line.worker.submit(fail)
        except LineBusy:
            line.faulted(exc)


def _raise(exc: BaseException) -> None:
    raise exc


class _Heard:
    """What a line's hearing tells the gateway. Called on the line's hearing
    thread, which ending a call would stop: that work goes to a thread of its own."""

    def __init__(self, gateway: Gateway, line: Line) -> None:
        self._gateway = gateway
        self._line = line

    def ringing(self) -> None:
        self._gateway._ringing(self._line)

    def far_end_left(self, why: str) -> None:
        threading.Thread(target=self._gateway._far_end_left, args=(self._line, why),
                         name=f"{self._line.name}-far-end", daemon=True).start()

    def key(self, key: str, duration_ms: int) -> None:
        self._gateway._key_heard(self._line, key, duration_ms)

    def fault(self, exc: LineFault) -> None:
        self._gateway._hearing_failed(self._line, exc)


class _Control:
    """A script's hold on its call (see :class:`gateway.calls.script.CallControl`)."""

    def __init__(self, gateway: Gateway, line: Line, call: Call) -> None:
        self._gateway = gateway
        self._line = line
        self._call = call
        self._barging = False

    @property
    def ended(self) -> bool:
        return self._call.hangup.is_set() or self._call.state is not CallState.IN_CALL

    def emit(self, plan: TonePlan, party: Party) -> None:
        self._gateway._emit(self._line, self._call, plan, party)

    def speak(self, text: str, language: str | None, party: Party) -> None:
        self._gateway._speak(self._line, self._call, text, language, party)

    def play(self, command: ozml.Play) -> None:
        self._gateway._play(self._line, self._call, command)

    def transfer(self, target: str) -> None:
        self._gateway._transfer(self._line, self._call, target)

    def record(self, command: ozml.Record) -> None:
        recording = self._gateway._record(self._line, self._call, command)
        # A script's Record holds the script until the recording ends (or the call).
        while not recording.done.wait(0.5):
            self._line.worker.progress()
            if self.ended:
                recording.stop("the call ended")

    def wait(self, seconds: float) -> None:
        if self._barging:
            self._call.keys.wait(seconds)  # a key (or the call's end) ends it
        else:
            self._call.hangup.wait(seconds)

    def progress(self) -> None:
        self._line.worker.progress()

    def report(self, exc: Exception) -> None:
        self._gateway.report_error(self._call, exc)

    @contextlib.contextmanager
    def barge_in(self) -> Iterator[None]:
        keys = self._call.keys
        driver = self._line.driver
        self._barging = True
        keys.on_key = driver.cut_output
        try:
            yield
        finally:
            keys.on_key = None
            self._barging = False

    @property
    def key_waiting(self) -> bool:
        return self._call.keys.waiting

    def take_key(self, timeout: float | None) -> str | None:
        return self._call.keys.take(timeout)

    def flush_keys(self) -> None:
        self._call.keys.flush()

    def fetch(self, url: str, notification: str,
              extra: dict[str, str]) -> tuple[ozml.Command, ...] | None:
        fields = {**notifications.call_fields(self._call, notification), **extra}
        return self._gateway._fetch_script(self._line, self._call, url, fields)
