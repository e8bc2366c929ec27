"""Prometheus metrics, one registry per gateway (so tests can build many)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: Each (command, code)'s counter and its command's timer: looking a
        #: child up by its labels takes a lock and builds a key every time.
        self._answered: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._answered_lock = threading.Lock()
        self.commands = Counter(
            "dtmf_gateway_commands", "API commands answered, by command and code",
            ["command", "code"], registry=self.registry,
        )
        self.request_seconds = Histogram(
            "dtmf_gateway_request_seconds", "Time to answer an API request",
            ["command"], registry=self.registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.digits = Counter(
            "dtmf_gateway_digits", "DTMF digits put on a line", ["line"], registry=self.registry
        )
        self.busy_seconds = Counter(
            "dtmf_gateway_line_busy_seconds", "Time a line spent running commands",
            ["line"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "dtmf_gateway_queue_depth", "Commands waiting for a line", ["line"],
            registry=self.registry,
        )
        self.line_faults = Counter(
            "dtmf_gateway_line_faults", "Hardware faults on a line", ["line"],
            registry=self.registry,
        )
        self.notification_failures = Counter(
            "dtmf_gateway_notification_failures", "Notifications that could not be delivered",
            ["notification"], registry=self.registry,
        )
        self.calls = Counter(
            "dtmf_gateway_calls", "Calls, by direction and how they ended",
            ["direction", "end"], registry=self.registry,
        )

    def command_answered(self, command: str, code: int, seconds: float) -> None:
        """One command of the API or the console: counted by name and code,
        timed by name. ``command`` must be one of a few names (the API's, or
        ``other``): each becomes a label."""
        children = self._answered.get((command, code))
        if children is None:
            with self._answered_lock:
                children = self._answered.setdefault((command, code), (
                    self.commands.labels(command, str(code)),
                    self.request_seconds.labels(command)))
        counted, timed = children
        counted.inc()
        timed.observe(seconds)
