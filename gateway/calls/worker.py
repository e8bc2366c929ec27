"""One worker thread per line: commands run strictly in order, one at a time.

The queue is bounded so a flood of requests is refused (:class:`LineBusy`)
instead of growing without limit. Hang-ups do not queue at all: they put the
line on hook over whatever runs (see :meth:`gateway.calls.Gateway.hang_up`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from gateway.errors import LineBusy, LineError

log = logging.getLogger(__name__)

T = TypeVar("T")


class LineWorker:
    def __init__(self, name: str, queue_size: int) -> None:
        self.name = name
        self.queue_size = queue_size
        self._jobs: collections.deque[tuple[Future[Any], Callable[[], Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.busy = False
        #: When the running job started or last reported progress (monotonic);
        #: None when idle. The health loop calls a line stuck from this.
        self.busy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"line-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting, not counting the one running."""
        with self._cond:
            return len(self._jobs)

    def depth_gauge(self) -> float:
        return float(self.depth)

    @property
    def alive(self) -> bool:
        """The worker thread runs (it ends only after :meth:`stop`)."""
        return self._thread.is_alive()

    def progress(self) -> None:
        """The running job moved on (an OzML script between commands)."""
        if self.busy:
            self.busy_since = time.monotonic()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue ``job``; its Future has the result."""
        future: Future[T] = Future()
        with self._cond:
            if self._stopping:
                raise self._busy("the gateway is stopping")
            if len(self._jobs) >= self.queue_size:
                raise self._busy(f"{len(self._jobs)} commands are waiting (the limit)")
            self._jobs.append((future, job))
            self._cond.notify()
        return future

    def _busy(self, why: str) -> LineBusy:
        exc = LineBusy(why)
        exc.line = self.name
        return exc

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    return
                future, job = self._jobs.popleft()
                self.busy = True
                self.busy_since = time.monotonic()
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job())
                    except BaseException as exc:
                        if isinstance(exc, LineError) and exc.line is None:
                            # Whatever went wrong on this worker went wrong on its line.
                            exc.line = self.name
                        future.set_exception(exc)
            finally:
                with self._cond:
                    self.busy = False
                    self.busy_since = None
                    self._cond.notify_all()

    def stop(self, timeout: float) -> bool:
        """Refuse new jobs, let queued ones finish within ``timeout``; True if done."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel_pending(self, reason: Exception) -> int:
        """Fail every job that has not started (used at shutdown)."""
        with self._cond:
            jobs = list(self._jobs)
            self._jobs.clear()
        for future, _ in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(reason)
        return len(jobs)
