"""The calls the gateway knows of: active ones by id, and the last ended ones."""

from __future__ import annotations

import enum
import secrets
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import AmbiguousCall, CallNotFound

#: Ended calls remembered, so a CallId is not reused soon after its call.
RECENT_CALLS = 100
CALL_ID_ALPHABET = string.ascii_letters + string.digits


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
    #: Keys the far end pressed, in order (on lines that hear them).
    keys_heard: list[str] = field(default_factory=list)
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
        self.recent: deque[Call] = deque(maxlen=RECENT_CALLS)

    def new_id(self) -> str:
        """Six random URL-safe characters, like Ozeki's ``SdwQD``, not in use
        and not among the recently ended calls."""
        with self.lock:
            taken = set(self._active) | {c.call_id for c in self.recent}
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
        """Mark ``call`` ended with ``reason``; False if it had ended already."""
        with self.lock:
            if call.over:
                return False
            call.state = CallState.COMPLETED
            call.ended = time.monotonic()
            call.end_reason = reason
            call.hangup.set()
            self._active.pop(call.call_id, None)
            self.recent.append(call)
            return True
