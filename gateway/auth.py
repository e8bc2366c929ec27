"""Users, passwords, address lists and lock-out for the API.

Passwords are stored as salted scrypt hashes (``hashlib.scrypt``) in a TOML
file, one table per user::

    [users.HTTP_User_1]
    password = "scrypt$8192$8$2$<salt base64>$<hash base64>"
    commands = ["*"]            # or e.g. ["SendDTMF", "ListActiveCalls"]

scrypt costs 0.4 s on a Pi Zero 2 W on purpose, so a successful
check is remembered for a while, keyed by a keyed hash of the user, the
password and the stored hash (never the password itself); the same name and
password sent again while their check runs wait for that check instead of
running scrypt again. An unknown user costs the same scrypt as a wrong
password, so the time of an answer does not tell which it was.

Every password check goes through :func:`check_login`, which takes a place in the
address's lock-out budget (:class:`Lockout`) before the check runs.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import ConfigError

#: The API's commands, as Ozeki spells them. A user's ``commands`` lists some
#: of them (matched without regard to case, as the API matches them) or ``*``.
#: The shortest password ``passwd`` accepts unless ``auth.min_password_length`` says less.
MIN_PASSWORD_LENGTH = 8

COMMAND_NAMES = ("SendDTMF", "Call", "HangUp", "ListActiveCalls", "Speak", "Play",
                 "Record", "BlindTransfer", "Hold", "Unhold", "AttendedTransfer", "Forward")

#: The cost of a new password's hash (a stored hash keeps its own, so these
#: change no existing password): 8 MiB and about 40 ms a check here, 0.4 s
#: on a Pi Zero 2 W. The same work as 16384/8/1 (two passes over 8 MiB
#: instead of one over 16) in half the memory; why, and what an attacker
#: gains, is in the README (Sizing for a Pi Zero 2 W).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 8192, 8, 2
CACHE_SECONDS = 300.0
#: scrypt takes 128 * r * N bytes while it runs. Run in the server's own
#: threads, a burst of wrong passwords grew the process by hundreds of MiB
#: (48 at once: 790 MiB) on a box that may have 512 MiB; these threads are
#: the only ones that run it, the rest wait their turn.
SCRYPT_THREADS = 2
SCRYPT_WAIT_S = 30.0
#: glibc's mallopt(3) parameter: blocks at least this large get pages of
#: their own, given back to the system when freed.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024
#: The cores the checking threads run on (None: their starter's).
_check_cores: set[int] | None = None


def check_on_cores(cores: set[int] | None) -> None:
    """Run the password checks started from now on on ``cores``. scrypt is C
    that holds no GIL: while the gateway's own threads keep to one core
    (``serve --cpus one``), a flood of wrong passwords need not take it."""
    global _check_cores
    _check_cores = set(cores) if cores else None


def _give_back_scrypt_memory() -> None:
    """Every scrypt check's memory goes back to the system when it ends.

    glibc serves such a block with pages of its own and unmaps them when it
    is freed, but that first free raises its threshold to the block's size,
    and from then on each checking thread keeps the block for good (a burst
    of logins left the process 50 MB larger). A fixed threshold, as
    ``MALLOC_MMAP_THRESHOLD_`` sets it, turns that rise off; the pages are
    then mapped afresh for each check (6 ms of CPU at 8 MiB, 10 at 16).
    Other C libraries decide for themselves."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _start_checking_thread() -> None:
    _give_back_scrypt_memory()
    if _check_cores:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, _check_cores)


_scrypt_pool = ThreadPoolExecutor(max_workers=SCRYPT_THREADS, thread_name_prefix="scrypt",
                                  initializer=_start_checking_thread)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = _scrypt_pool.submit(
            hashlib.scrypt, password.encode(), salt=base64.b64decode(salt), n=int(n),
            r=int(r), p=int(p), dklen=len(want),
        ).result(timeout=SCRYPT_WAIT_S)
    except (ValueError, TypeError, FutureTimeout):
        return False
    return hmac.compare_digest(got, want)


def dummy_hash(like: str | None = None) -> str:
    """What an unknown user's password is checked against: a hash of the
    cost of ``like`` (a stored hash; by default a new one's) that no password
    matches, as no scrypt digest is all zeros. Made without running scrypt."""
    cost = f"{SCRYPT_N}${SCRYPT_R}${SCRYPT_P}"
    parts = (like or "").split("$")
    if len(parts) == 6 and parts[0] == "scrypt" and all(x.isdigit() for x in parts[1:4]):
        cost = "$".join(parts[1:4])
    b64 = base64.b64encode
    return f"scrypt${cost}${b64(bytes(16)).decode()}${b64(bytes(32)).decode()}"


@dataclass
class User:
    name: str
    password_hash: str
    commands: frozenset[str] = frozenset({"*"})

    def may(self, command: str) -> bool:
        return "*" in self.commands or command.lower() in self.commands


def command_names(names: Iterable[str]) -> list[str]:
    """``names`` as :data:`COMMAND_NAMES` spells them (``*`` stays ``*``).

    Raises ConfigError, naming the known commands, for a name that is none of
    them and for an empty list (a user who could run nothing)."""
    spelled = {name.lower(): name for name in COMMAND_NAMES}
    known = f"the commands are {', '.join(COMMAND_NAMES)}, or * for all"
    checked = []
    for name in names:
        if name != "*" and name.lower() not in spelled:
            raise ConfigError(f"unknown command {name!r}; {known}")
        checked.append(spelled.get(name.lower(), name))
    if not checked:
        raise ConfigError(f"no command named; {known}")
    return checked


def _valid_username(name: str) -> bool:
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._-@" for c in name)


def load_users(path: Path) -> dict[str, User]:
    """The users file, or no users when it does not exist."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    users: dict[str, User] = {}
    for name, table in data.get("users", {}).items():
        if not isinstance(table, dict) or not isinstance(table.get("password"), str):
            raise ConfigError(f"{path}: users.{name}.password: missing")
        commands = table.get("commands", ["*"])
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise ConfigError(f"{path}: users.{name}.commands: expected a list of command names")
        users[name] = User(name, table["password"], frozenset(c.lower() for c in commands))
    return users


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_user(path: Path, name: str, password: str, commands: list[str] | None = None) -> None:
    """Create or change one user, keeping the others; written atomically, mode 0600.

    ``commands`` must name known commands (:func:`command_names`); the other
    users' are kept as the file has them."""
    if not _valid_username(name):
        raise ConfigError(f"user name {name!r}: use letters, digits and . _ - @ (at most 64)")
    if commands is not None:
        commands = command_names(commands)
    users = load_users(path)
    old = users.get(name)
    users[name] = User(
        name,
        hash_password(password),
        frozenset(c.lower() for c in commands) if commands is not None
        else (old.commands if old else frozenset({"*"})),
    )
    lines = ["# dtmf-gateway users: `dtmf-gateway passwd USER` changes them.", ""]
    for user in users.values():
        lines.append(f"[users.{_toml_string(user.name)}]")
        lines.append(f"password = {_toml_string(user.password_hash)}")
        listed = ", ".join(_toml_string(c) for c in sorted(user.commands))
        lines.append(f"commands = [{listed}]")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)


class Users:
    """The users file, reloaded when it changes, with a cache of good checks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int] | None = None
        self._cache: dict[bytes, float] = {}
        #: Checks running now, by cache key: the same name and password meanwhile
        #: wait for the check's result instead of running scrypt again.
        self._checks: dict[bytes, Future[bool]] = {}
        # Unknown users are checked at the cost of the file's users.
        self._dummy = dummy_hash()
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._users = load_users(self.path)
            self._stamp = stamp
            self._cache.clear()
            first = next(iter(self._users.values()), None)
            self._dummy = dummy_hash(first.password_hash if first else None)

    def _cache_key(self, name: str, password: str, stored: str) -> bytes:
        # The stored hash is part of it: a password that passed against the
        # old hash is not remembered for the new one.
        return hmac.new(self._key, f"{name}\0{password}\0{stored}".encode(), "sha256").digest()

    def cached(self, name: str, password: str) -> User | None:
        """The user if this very password passed a check in the last
        ``CACHE_SECONDS``, else None (which says nothing about the password)."""
        with self._lock:
            self._reload()
            user = self._users.get(name)
            if user is None:
                return None
            expiry = self._cache.get(self._cache_key(name, password, user.password_hash))
            if expiry is not None and expiry > time.monotonic():
                return user
        return None

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is right, else None."""
        found = self.cached(name, password)
        if found is not None:
            return found
        with self._lock:
            user = self._users.get(name)
            stored = user.password_hash if user else self._dummy
            key = self._cache_key(name, password, stored)
            running = self._checks.get(key)
            first = running is None
            if running is None:
                running = self._checks[key] = Future()
        if first:
            # scrypt outside the lock: concurrent logins must not queue behind it.
            try:
                running.set_result(check_password(password, stored))
            except BaseException as exc:
                running.set_exception(exc)
                raise
            finally:
                with self._lock:
                    del self._checks[key]
        try:
            ok = running.result(timeout=2 * SCRYPT_WAIT_S)
        except FutureTimeout:
            ok = False
        if user is None or not ok:
            return None
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[key] = time.monotonic() + CACHE_SECONDS
        return user

    def get(self, name: str) -> User | None:
        """The user as the file has it now (a console session re-reads its
        user on every request, so removing the user or changing the password
        ends the session)."""
        with self._lock:
            self._reload()
            return self._users.get(name)

    def __len__(self) -> int:
        with self._lock:
            self._reload()
            return len(self._users)


@functools.lru_cache(maxsize=256)
def client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address as the server reports it, or None if it is not one.

    A zone (``fe80::1%eth0``) is dropped, and an IPv4 client on a dual-stack
    socket (``::ffff:10.0.0.5``) is its IPv4 address, so IPv4 lists match it.
    Remembered for the last 256 addresses: each request asks three times.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


@dataclass
class AddressPolicy:
    """``server.allow`` / ``server.deny`` as networks."""

    allow: list[str] = field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    deny: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._allow = [ipaddress.ip_network(n, strict=False) for n in self.allow]
        self._deny = [ipaddress.ip_network(n, strict=False) for n in self.deny]

    def permits(self, address: str) -> bool:
        ip = client_ip(address)
        if ip is None:
            return False
        return any(ip in n for n in self._allow) and not any(ip in n for n in self._deny)


#: Failed logins (and checks running) the lock-out table holds at most, over
#: all addresses: at most 250 bytes each, 5 MB. The two scrypt threads check
#: a few tens of passwords a second at best (bench/bench_logins.py), so in
#: the default 300 s window they cannot fill it; should a longer window let
#: them, a check that could add a failure is refused (307) until the oldest
#: expire, rather than any failure being forgotten early.
LOCKOUT_RECORDS = 20_000


class LockedOut(Exception):
    """The address may not have a password checked now (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def lockout_key(address: str) -> int:
    """What failures are counted against: an IPv4 address, or the /64 an IPv6
    address is in (one machine gets a whole /64 and can pick any address in
    it). All that is not an address shares one key."""
    ip = client_ip(address)
    if ip is None:
        return -1
    if ip.version == 6:
        return (1 << 64) | (int(ip) >> 64)
    return int(ip)


class _Entry:
    __slots__ = ("failures", "locked_until", "pending")

    def __init__(self) -> None:
        self.failures = 0  # failed checks still in their window
        self.pending = 0  # checks running now
        self.locked_until = float("-inf")


class Lockout:
    """Failed logins per address (per /64 for IPv6): from one, at most
    ``failures`` wrong passwords are checked in any ``seconds``.

    A check takes a place in its address's budget before it runs
    (:meth:`reserve`) and gives it back when it is right (:meth:`settle`), so
    concurrent guesses cannot overrun the budget. The failure that fills it
    locks the address for ``seconds`` from then. A right password, whoever
    it is for, wipes nothing: each failure ends ``seconds`` after it
    happened. Nothing is dropped before its time; the table is bounded by
    ``capacity`` failures and running checks together.
    """

    def __init__(self, failures: int, seconds: float, *, capacity: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.seconds = seconds
        self.capacity = LOCKOUT_RECORDS if capacity is None else capacity
        self._clock = clock
        self._entries: dict[int, _Entry] = {}
        # Every failure in its window, oldest first: (when, key).
        self._log: deque[tuple[float, int]] = deque()
        self._pending = 0
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        cutoff = now - self.seconds
        while self._log and self._log[0][0] <= cutoff:
            _, key = self._log.popleft()
            entry = self._entries[key]
            entry.failures -= 1
            # The last failure ends with its lock (locked_until is its time + seconds).
            if entry.failures == 0 and entry.pending == 0:
                del self._entries[key]

    def locked(self, address: str) -> bool:
        """True while the address is locked out."""
        key = lockout_key(address)
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._entries.get(key)
            return entry is not None and entry.locked_until > now

    def reserve(self, address: str) -> int:
        """A place for one check from ``address``; its key, for :meth:`settle`."""
        key = lockout_key(address)
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._entries.get(key)
            if entry is not None and entry.locked_until > now:
                raise LockedOut("locked out after repeated failures")
            if entry is not None and entry.failures + entry.pending >= self.failures:
                raise LockedOut("locked out after repeated failures (checks still running)")
            if len(self._log) + self._pending >= self.capacity:
                raise LockedOut(f"the table of failed logins is full ({self.capacity})")
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.pending += 1
            self._pending += 1
        return key

    def settle(self, key: int, *, failed: bool) -> None:
        """The check :meth:`reserve` made room for is done: a failure is kept
        for ``seconds``, anything else leaves nothing behind."""
        with self._lock:
            now = self._clock()
            entry = self._entries[key]
            entry.pending -= 1
            self._pending -= 1
            if failed:
                entry.failures += 1
                self._log.append((now, key))
                if entry.failures >= self.failures:
                    entry.locked_until = now + self.seconds
            self._expire(now)
            if entry.failures == 0 and entry.pending == 0:
                self._entries.pop(key, None)

    def __len__(self) -> int:
        """Addresses in the table now."""
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)


def check_login(users: Users, lockout: Lockout, address: str, name: str,
                password: str) -> User | None:
    """The user if ``password`` is theirs, else None; :class:`LockedOut` when
    ``address`` may not try. The one path every password check takes.

    A password that passed a check a moment ago is known without a new one,
    so it takes no place in the budget: a client that is signed in keeps
    working while others fill the table."""
    if lockout.locked(address):
        raise LockedOut("locked out after repeated failures")
    user = users.cached(name, password)
    if user is not None:
        return user
    key = lockout.reserve(address)
    user = None
    try:
        user = users.verify(name, password)
    except BaseException:
        # No check was made (the users file could not be read): nothing to count.
        lockout.settle(key, failed=False)
        raise
    lockout.settle(key, failed=user is None)
    return user
