"""Slow clients, as an attacker on the LAN would open them, and what the server accepted of them.

A slow client holds a connection from its first byte, and a server thread
only once its request has arrived whole: a flood of half-sent requests is a
flood of connections. Used by the tests and by ``bench/bench_connections.py``.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from pathlib import Path

#: Half a request: the request line and a header that never ends.
HALF = b"GET /api?command=ListActiveCalls HTTP/1.1\r\nHost: gateway\r\nX-Slow: "


class SlowClients:
    """``count`` connections that each send ``HALF``, then a byte every ``every_s``.

    With ``reconnect`` a connection the server closes is opened again at the
    next round, as an attacker keeping the table full would. ``closed`` holds,
    for each connection the server closed, seconds from its first byte."""

    def __init__(self, port: int, count: int, *, every_s: float = 0.5,
                 reconnect: bool = False) -> None:
        self.port = port
        self.every_s = every_s
        self.reconnect = reconnect
        self.closed: list[float] = []
        self._socks: dict[socket.socket, float] = {}
        for _ in range(count):
            self._open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _open(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(HALF)
        self._socks[sock] = time.monotonic()

    def _gone(self) -> list[socket.socket]:
        # poll, not select: it is not limited to descriptors below 1024.
        poller = select.poll()
        by_fd = {sock.fileno(): sock for sock in self._socks}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        # The server sends nothing to a half request: readable means closed.
        return [by_fd[fd] for fd, _ in poller.poll(0)]

    def _trickle(self) -> None:
        # Spread over the round, as independent clients would be: each byte
        # then costs the server's loop a pass of its own, the worst case.
        while not self._stop.is_set():
            if not self._socks:
                self._stop.wait(self.every_s)
                continue
            gone = set(self._gone())
            pause = self.every_s / max(1, len(self._socks))
            for sock, started in list(self._socks.items()):
                if self._stop.wait(pause):
                    return
                if sock not in gone:
                    try:
                        sock.send(b"a")
                        continue
                    except OSError:
                        pass
                self.closed.append(time.monotonic() - started)
                del self._socks[sock]
                sock.close()
                if self.reconnect:
                    with contextlib.suppress(OSError):
                        self._open()

    @property
    def open(self) -> int:
        return len(self._socks)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self._socks:
            sock.close()

    def __enter__(self) -> SlowClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connections(pid: int, port: int) -> int:
    """The connections to ``port`` that process ``pid`` has accepted.

    The kernel completes a connection before the server accepts it, so the
    client cannot tell; the kernel's table can: a connection still waiting
    to be accepted belongs to no process's file descriptors."""
    owned = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                owned.add(link[len("socket:["):-1])
    count = 0
    for row in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
        count += local_port == port and state == "01" and inode in owned  # 01: ESTABLISHED
    return count


def wait_for_connections(pid: int, port: int, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (held := connections(pid, port)) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server has accepted {held} connections, not "
                                 f"{at_least}, after {timeout} s")
        time.sleep(0.05)
