"""Ozeki's notifications: what each one carries, and how it is sent.

``CallConnected`` and ``IncomingCall`` are answered with OzML, so they are
fetched on the call's own line worker (a slow integrator URL delays only that
line); ``Error`` and ``CallFinished`` need no answer and go out on a small
pool. Every failure is counted in the metrics and logged, never raised into
the work that caused the notification.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from gateway import notify
from gateway.calls.registry import Call
from gateway.errors import Described, NotifyError
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

#: Ozeki's timestamps: ``2019-04-09 10:34:07``, local time.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def ozeki_time(when: datetime | None = None) -> str:
    return (when or datetime.now()).strftime(TIME_FORMAT)


# -- what each notification carries ---------------------------------------------------


def call_fields(call: Call, name: str) -> dict[str, str]:
    """What every notification about ``call`` carries: Ozeki's
    ``NotificationName`` and the call's own fields."""
    return {
        "NotificationName": name, "CallId": call.call_id, "Line": call.line,
        "Direction": call.direction, "Caller": call.caller_id, "CallerId": call.caller_id,
        "Dialed": call.dialed, "StartTime": ozeki_time(call.started_at),
    }


def call_connected(call: Call) -> dict[str, str]:
    return {**call_fields(call, "CallConnected"), "ConnectTime": ozeki_time(call.connected_at)}


def incoming_call(call: Call) -> dict[str, str]:
    return call_fields(call, "IncomingCall")


def call_finished(call: Call) -> dict[str, str]:
    return {
        **call_fields(call, "CallFinished"), "Reason": call.end_reason,
        "RingDuration": f"{call.ring_seconds:.3f}", "TalkDuration": f"{call.talk_seconds:.3f}",
    }


def error(call: Call, described: Described) -> dict[str, str]:
    return {**call_fields(call, "Error"), "Code": str(int(described.code)),
            "Message": described.text}


def dtmf_entered(call: Call, digits: str) -> dict[str, str]:
    """Keys the far end entered; ``DtmfDigits`` is the field Ozeki's examples read."""
    return {**call_fields(call, "DtmfEntered"), "DtmfDigits": digits}


# -- sending ------------------------------------------------------------------------


class Notifier:
    """Sends notifications with one timeout and one address policy, counting
    the ones that fail."""

    def __init__(self, timeout_s: float, metrics: Metrics,
                 policy: notify.Policy | None = None) -> None:
        self.timeout_s = timeout_s
        self.policy = policy or notify.Policy()
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="notify")
        self._closed = False
        self._lock = threading.Lock()
        self._streams: dict[str, deque[tuple[str, dict[str, str]]]] = {}

    def fetch(self, url: str, fields: dict[str, str]) -> str:
        """POST now and return the answer (OzML). Raises NotifyError, counted."""
        try:
            return notify.post(url, fields, self.timeout_s, self.policy)
        except NotifyError:
            self._failed(fields)
            raise

    def send_later(self, url: str, fields: dict[str, str], *, stream: str = "") -> None:
        """POST on the pool; the answer is not needed. Notifications of one
        ``stream`` (a call's keys) go out one after another, in order."""
        if self._closed:
            return
        if not stream:
            self._pool.submit(self._send, url, fields)
            return
        with self._lock:
            queued = self._streams.get(stream)
            if queued is not None:
                queued.append((url, fields))
                return
            self._streams[stream] = deque([(url, fields)])
        self._pool.submit(self._drain, stream)

    def _drain(self, stream: str) -> None:
        while True:
            with self._lock:
                queued = self._streams[stream]
                if not queued:
                    del self._streams[stream]
                    return
                url, fields = queued.popleft()
            self._send(url, fields)

    def _send(self, url: str, fields: dict[str, str]) -> None:
        try:
            notify.post(url, fields, self.timeout_s, self.policy)
        except NotifyError as exc:
            self._failed(fields)
            log.warning("%s", exc)

    def _failed(self, fields: dict[str, str]) -> None:
        self._metrics.notification_failures.labels(fields["NotificationName"]).inc()

    def close(self) -> None:
        """Stop sending: what has not gone out is dropped (we are stopping)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
