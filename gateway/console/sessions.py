"""Console sessions: kept in memory on the server, named by a random cookie.

The cookie carries 32 random bytes and nothing else; what it stands for lives
here. So logging out really ends a session, and removing a user or changing
their password ends theirs on the next request, where a signed cookie would
stay good until it expired. Nothing is written to disk, so no secret key is
needed and none sits on the SD card: a restart logs everyone out, which on a
box that restarts a few times a year costs one login.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.auth import User

#: A session not used for this long ends (polling a live view does not count).
IDLE_S = 12 * 3600.0
#: Sessions one user may have; one more ends that user's longest unused one.
#: Per user, so that signing in over and over as one user never signs
#: anyone else out (the users file bounds how many users there are).
SESSIONS_PER_USER = 16


@dataclass
class Session:
    user: str
    #: The user's password hash at login: a changed password ends the session.
    password_hash: str
    #: Every POST of this session must carry it (the forms' hidden ``csrf``).
    csrf: str
    seen: float
    #: Messages for the next page shown: (kind, text), kind "ok" or "error".
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def flash(self, kind: str, text: str) -> None:
        self.flashes = [*self.flashes[-4:], (kind, text)]

    def take_flashes(self) -> list[tuple[str, str]]:
        flashes, self.flashes = self.flashes, []
        return flashes


def _key(token: str) -> bytes:
    # Held by digest, so the table never holds a usable cookie value.
    return hashlib.sha256(token.encode()).digest()


class Sessions:
    def __init__(self, idle_s: float = IDLE_S, per_user: int = SESSIONS_PER_USER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.per_user = per_user
        self._clock = clock
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: User) -> tuple[str, Session]:
        """A new session for ``user``; returns the cookie value and the session."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(user.name, user.password_hash, secrets.token_urlsafe(32), now)
        with self._lock:
            for key in [k for k, s in self._sessions.items() if now - s.seen > self.idle_s]:
                del self._sessions[key]
            own = [k for k, s in self._sessions.items() if s.user == user.name]
            own.sort(key=lambda k: self._sessions[k].seen)
            for key in own[:max(0, len(own) - self.per_user + 1)]:
                del self._sessions[key]
            self._sessions[_key(token)] = session
        return token, session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        if not token:
            return None
        key = _key(token)
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle_s:
                del self._sessions[key]
                return None
            if touch:
                session.seen = now
            return session

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_key(token), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
