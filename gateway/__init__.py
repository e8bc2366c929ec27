"""dtmf-gateway: an Ozeki-compatible HTTP API that sends DTMF into calls on a phone line."""

__version__ = "0.1.0"
