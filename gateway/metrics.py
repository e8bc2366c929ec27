"""Prometheus metrics, one registry per gateway (so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
