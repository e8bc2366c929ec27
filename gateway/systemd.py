"""The service manager's notification protocol (``sd_notify(3)``), spoken directly.

systemd passes ``NOTIFY_SOCKET`` (a Unix datagram socket: a path, or an
abstract name written with a leading ``@``) to a ``Type=notify`` service, and
``WATCHDOG_USEC``/``WATCHDOG_PID`` when the unit has ``WatchdogSec=``. Each
notification is one datagram of newline-separated ``KEY=value`` lines:
``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``, ``WATCHDOG=trigger``, ``STATUS=...``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so ``serve``
runs the same on a laptop. A failure to notify is logged once and never
raised: the service manager going away must not stop a call in progress.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

#: What systemd exports to a notify service; removed from our environment
#: so the child processes we run (espeak-ng) cannot talk to the manager.
ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | None:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value, or None if unusable.

    ``@name`` is Linux's abstract namespace (a leading NUL byte on the wire);
    a path must be absolute. Other forms (systemd 253's ``vsock:``) are for
    virtual machines, not this appliance.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_seconds(environ: MutableMapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog period systemd expects pings within, or None when there is none.

    ``WATCHDOG_PID`` names the process the watchdog is for: when it is set and
    is another process (we were forked by a wrapper), the watchdog is not ours.
    """
    text = environ.get("WATCHDOG_USEC", "")
    if not text:
        return None
    try:
        usec = int(text)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", text)
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return None
    return usec / 1_000_000 if usec > 0 else None


class Notifier:
    """Notifications to the service manager at ``address`` (None: nobody listens)."""

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = address
        #: The watchdog period (None: no watchdog). Pings go out at half of it,
        #: as sd_watchdog_enabled(3) advises.
        self.watchdog_s = watchdog_s
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read (and remove, like ``sd_notify(unset_environment=1)``) systemd's variables."""
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = socket_address(raw) if raw else None
        if raw and address is None:
            log.warning("ignoring NOTIFY_SOCKET=%r: not a path or @abstract name", raw)
        watchdog = watchdog_seconds(env) if address is not None else None
        for name in ENVIRONMENT:
            env.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def ping_interval(self) -> float | None:
        return self.watchdog_s / 2 if self.watchdog_s else None

    def send(self, **fields: str) -> bool:
        """Send one datagram; ``STATUS="x"`` becomes ``STATUS=x``. True if sent."""
        if self.address is None:
            return False
        # A newline would start a new assignment: a status text must not forge one.
        message = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager at %r: %s",
                            self.address.replace("\0", "@"), exc.strerror or exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def stopping(self, status: str = "stopping: finishing the commands in progress") -> bool:
        return self.send(STOPPING="1", STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def watchdog_trigger(self, status: str) -> bool:
        """Ask the manager to act as if the watchdog expired (systemd 243+)."""
        return self.send(WATCHDOG="trigger", STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
