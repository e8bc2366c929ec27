"""The calls the gateway knows of: active ones by id, and the last ended ones."""

from __future__ import annotations

import enum
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import AmbiguousCall, CallNotFound

#: Ended calls remembered, so a CallId is not reused soon after its call.
RECENT_CALLS = 100
CALL_ID_ALPHABET = string.ascii_letters + string.digits


class HeardKeys:
    """Keys the far end pressed during a call: all of them in order (what
    ListActiveCalls shows), and a queue a waiting UserInput takes them from."""

    def __init__(self) -> None:
        self.all: list[str] = []
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._closed = False
        #: Called with each key while set (a menu prompt that a key cuts short).
        self.on_key: Callable[[], None] | None = None

    def put(self, key: str) -> None:
        with self._cond:
            if self._closed:
                return
            self.all.append(key)
            self._queue.append(key)
            callback = self.on_key
            self._cond.notify_all()
        if callback is not None:
            callback()

    @property
    def waiting(self) -> bool:
        """A key is in the queue, not yet taken."""
        with self._cond:
            return bool(self._queue)

    def take(self, timeout: float | None) -> str | None:
        """The next key, waiting up to ``timeout`` s (None: until the call
        ends); None on a timeout or when the call ended."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._queue) or self._closed, timeout)
            return self._queue.popleft() if self._queue and not self._closed else None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a key (or the call's end); True if one came."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._queue) or self._closed, timeout)
            return bool(self._queue)

    def flush(self) -> None:
        with self._cond:
            self._queue.clear()

    def close(self) -> None:
        """The call ended: every wait ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class CallState(enum.Enum):
    """``CallState`` as ``ListActiveCalls`` reports it."""

    SETUP = "Setup"
    RINGING = "Ringing"
    IN_CALL = "InCall"
    COMPLETED = "Completed"


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
    connected_at: datetime | None = None
    ended: float | None = None
    last_ring: float = field(default_factory=time.monotonic)
    end_reason: str = ""
    answering: bool = False
    #: When a command last used the call (monotonic): the idle limit's clock.
    last_activity: float = field(default_factory=time.monotonic)
    #: An OzML script is running on the call (a script is never idle).
    scripted: bool = False
    #: Keys the far end pressed (on lines that hear them).
    keys: HeardKeys = field(default_factory=HeardKeys)
    #: Where each far-end key goes as a DtmfEntered notification (our
    #: extension of Call, for clients without a script).
    dtmf_url: str = ""
    #: How many Record commands the call has had (it names their files).
    recordings: int = 0
    #: Called once when the call ends (a recording in progress stops).
    hangup_hooks: list[Callable[[], None]] = field(default_factory=list)
    hangup: threading.Event = field(default_factory=threading.Event)

    @property
    def over(self) -> bool:
        # A method, not a field test, so type checkers do not narrow it away
        # between two looks: other threads end calls.
        return self.state is CallState.COMPLETED

    def connect(self) -> None:
        """The far end answered (or we answered): the talk time starts."""
        self.state = CallState.IN_CALL
        self.connected = self.last_activity = time.monotonic()
        self.connected_at = datetime.now()

    def touch(self) -> None:
        """A command uses the call now."""
        self.last_activity = time.monotonic()

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


class CallRegistry:
    """Active calls by id; thread-safe. Ending a call is done once only."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._active: dict[str, Call] = {}
        #: Calls finished but not yet retired (their line is going on hook).
        self._ending: dict[str, Call] = {}
        self.recent: deque[Call] = deque(maxlen=RECENT_CALLS)

    def new_id(self) -> str:
        """Six random URL-safe characters, like Ozeki's ``SdwQD``, not in use
        and not among the recently ended calls."""
        with self.lock:
            taken = set(self._active) | set(self._ending) | {c.call_id for c in self.recent}
        while True:
            call_id = "".join(secrets.choice(CALL_ID_ALPHABET) for _ in range(6))
            if call_id not in taken:
                return call_id

    def add(self, call: Call) -> None:
        with self.lock:
            self._active[call.call_id] = call

    def find(self, call_id: str | None, command: str) -> Call:
        """The call ``call_id`` names, or the only active call when it is left out."""
        with self.lock:
            if call_id:
                call = self._active.get(call_id)
                if call is None:
                    raise CallNotFound(call_id)
                return call
            if len(self._active) != 1:
                raise AmbiguousCall(
                    command, f"there are {len(self._active)} active calls; say which with CallId"
                )
            return next(iter(self._active.values()))

    def active(self) -> list[Call]:
        with self.lock:
            return sorted(self._active.values(), key=lambda c: c.started)

    def finish(self, call: Call, reason: str) -> bool:
        """Mark ``call`` ended with ``reason``; False if it had ended already.
        It is no longer active, and joins the recent calls when :meth:`retire`
        says its line is on hook."""
        with self.lock:
            if call.over:
                return False
            call.state = CallState.COMPLETED
            call.ended = time.monotonic()
            call.end_reason = reason
            call.hangup.set()
            call.keys.close()
            self._active.pop(call.call_id, None)
            self._ending[call.call_id] = call
            return True

    def retire(self, call: Call) -> None:
        """``call``'s line is on hook: it is one of the recent calls, so
        whoever sees it there sees a line that is free."""
        with self.lock:
            if self._ending.pop(call.call_id, None) is not None:
                self.recent.append(call)
