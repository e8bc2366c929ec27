"""Ozeki's notifications: what each one carries, and how it is sent.

``CallConnected`` and ``IncomingCall`` are answered with OzML, so they are
fetched on the call's own line worker (a slow integrator URL delays only that
line); ``Error`` and ``CallFinished`` need no answer and go out on a small
pool. Every failure is counted in the metrics and logged, never raised into
the work that caused the notification.
"""

from __future__ import annotations

import logging
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


def call_connected(call: Call) -> dict[str, str]:
    return {
        "NotificationName": "CallConnected", "CallId": call.call_id, "Dialed": call.dialed,
        "Line": call.line, "Direction": call.direction, "StartTime": ozeki_time(call.started_at),
        "ConnectTime": ozeki_time(call.connected_at),
    }


def incoming_call(call: Call) -> dict[str, str]:
    return {
        "NotificationName": "IncomingCall", "CallId": call.call_id, "Line": call.line,
        "Caller": call.caller_id, "CallerId": call.caller_id,
        "StartTime": ozeki_time(call.started_at),
    }


def call_finished(call: Call) -> dict[str, str]:
    return {
        "NotificationName": "CallFinished", "CallId": call.call_id, "Line": call.line,
        "Dialed": call.dialed, "Reason": call.end_reason,
        "RingDuration": f"{call.ring_seconds:.3f}", "TalkDuration": f"{call.talk_seconds:.3f}",
    }


def error(call: Call, described: Described) -> dict[str, str]:
    return {
        "NotificationName": "Error", "CallId": call.call_id,
        "Code": str(int(described.code)), "Message": described.text,
    }


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

    def fetch(self, url: str, fields: dict[str, str]) -> str:
        """POST now and return the answer (OzML). Raises NotifyError, counted."""
        try:
            return notify.post(url, fields, self.timeout_s, self.policy)
        except NotifyError:
            self._failed(fields)
            raise

    def send_later(self, url: str, fields: dict[str, str]) -> None:
        """POST on the pool; the answer is not needed."""

        def send() -> None:
            try:
                notify.post(url, fields, self.timeout_s, self.policy)
            except NotifyError as exc:
                self._failed(fields)
                log.warning("%s", exc)

        if not self._closed:
            self._pool.submit(send)

    def _failed(self, fields: dict[str, str]) -> None:
        self._metrics.notification_failures.labels(fields["NotificationName"]).inc()

    def close(self) -> None:
        """Stop sending: what has not gone out is dropped (we are stopping)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
