"""scrypt's cost where it counts (issue 17): none at import, one check for the
same credentials sent at once, the memory of every check given back, and an
unknown user checked at the cost of the users that exist."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from gateway import auth
from gateway.auth import LockedOut, Lockout, Users, check_login, dummy_hash, save_user


def users_file(path: Path, **users: str) -> Users:
    for name, password in users.items():
        save_user(path, name, password)
    return Users(path)


def cheap_hash(password: str, n: int = 2) -> str:
    salt = b"cheap-salt-01234"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=1, p=1, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}$1$1${b64(salt).decode()}${b64(digest).decode()}"


def test_importing_auth_runs_no_scrypt() -> None:
    """It hashed a dummy password at import: 39 ms of every start-up."""
    script = textwrap.dedent("""
        import hashlib
        calls = []
        real = hashlib.scrypt
        hashlib.scrypt = lambda *a, **k: calls.append(1) or real(*a, **k)
        import gateway.auth
        print(len(calls))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.split() == ["0"]


def test_the_dummy_hash_costs_what_a_users_hash_costs_and_matches_nothing() -> None:
    assert dummy_hash().split("$")[:4] == ["scrypt", str(auth.SCRYPT_N), str(auth.SCRYPT_R),
                                           str(auth.SCRYPT_P)]
    assert dummy_hash(cheap_hash("x", n=4)).split("$")[:4] == ["scrypt", "4", "1", "1"]
    # Anything unreadable falls back to a new hash's cost.
    assert dummy_hash("md5$abc").split("$")[1] == str(auth.SCRYPT_N)
    for password in ("", "no such user", "x" * 100):
        assert not auth.check_password(password, dummy_hash(cheap_hash("x", n=4)))


def test_an_unknown_user_is_checked_at_the_files_cost(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "users.toml").write_text(
        f'[users.old]\npassword = "{cheap_hash("old password", n=8)}"\n')
    checked: list[str] = []
    real = auth.check_password
    monkeypatch.setattr(auth, "check_password",
                        lambda password, stored: checked.append(stored) or real(password, stored))
    users = Users(tmp_path / "users.toml")
    assert users.verify("nobody", "old password") is None
    assert users.verify("old", "old password") is not None
    assert [s.split("$")[1] for s in checked] == ["8", "8"]


class Gate:
    """A check_password that counts its calls and holds each until opened."""

    def __init__(self, result: bool) -> None:
        self.result = result
        self.calls = 0
        self.opened = threading.Event()
        self.cond = threading.Condition()

    def __call__(self, password: str, stored: str) -> bool:
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
        assert self.opened.wait(30)
        return self.result

    def until(self, calls: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.calls >= calls, timeout=30), self.calls


@pytest.fixture
def waiting() -> Iterator[Callable[[int], None]]:
    """Counts the threads waiting for another's check; ``until(n)`` returns
    once ``n`` wait."""
    cond = threading.Condition()
    count = [0]

    class Counted(Future[bool]):
        def result(self, timeout: float | None = None) -> bool:
            if not self.done():
                with cond:
                    count[0] += 1
                    cond.notify_all()
            return super().result(timeout)

    def until(n: int) -> None:
        with cond:
            assert cond.wait_for(lambda: count[0] >= n, timeout=30), count[0]

    real = auth.Future
    auth.Future = Counted  # type: ignore[misc]
    try:
        yield until
    finally:
        auth.Future = real  # type: ignore[misc]


def at_once(n: int, run: Callable[[int], Any]) -> tuple[list[threading.Thread], list[Any]]:
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        try:
            results[i] = run(i)
        except LockedOut as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


@pytest.mark.parametrize("right", [True, False])
def test_the_same_credentials_at_once_run_one_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waiting: Callable[[int], None],
    right: bool,
) -> None:
    users = users_file(tmp_path / "users.toml", integrator="integrator-pw")
    gate = Gate(right)
    monkeypatch.setattr(auth, "check_password", gate)
    threads, results = at_once(8, lambda i: users.verify("integrator", "integrator-pw"))
    waiting(7)  # seven wait for the first one's check
    gate.opened.set()
    for t in threads:
        t.join(30)
    assert gate.calls == 1
    assert [r is not None for r in results] == [right] * 8
    # Remembered as any good check is; a failure is not.
    assert (users.cached("integrator", "integrator-pw") is not None) == right


def test_other_credentials_do_not_wait_for_a_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    users = users_file(tmp_path / "users.toml", a="a-password", b="b-password")
    gate = Gate(True)
    monkeypatch.setattr(auth, "check_password", gate)
    threads, _ = at_once(3, lambda i: users.verify(*[("a", "a-password"), ("a", "wrong"),
                                                     ("b", "b-password")][i]))
    # Three checks run at once: each is a check of its own.
    gate.until(3)
    gate.opened.set()
    for t in threads:
        t.join(30)


def test_each_request_still_takes_its_place_in_the_lockout_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waiting: Callable[[int], None],
) -> None:
    """Sharing the check saves scrypt, not the budget: 8 identical wrong
    guesses at once from one address are 5 failures and 3 refusals, the
    address is locked, and one scrypt ran."""
    users = users_file(tmp_path / "users.toml", admin="admin-password")
    lockout = Lockout(5, 300)
    gate = Gate(False)
    monkeypatch.setattr(auth, "check_password", gate)
    threads, results = at_once(
        8, lambda i: check_login(users, lockout, "10.0.0.9", "admin", "guess"))
    waiting(4)
    gate.opened.set()
    for t in threads:
        t.join(30)
    assert sorted(type(r).__name__ for r in results) == ["LockedOut"] * 3 + ["NoneType"] * 5
    assert gate.calls == 1
    assert lockout.locked("10.0.0.9")


def test_a_check_against_a_hash_since_replaced_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The password changes while its old one is being checked, and another
    request reloads the file meanwhile: the old password, right against the
    old hash, must not be remembered as right for the new one."""
    path = tmp_path / "users.toml"
    users = users_file(path, admin="old-password")
    real = auth.check_password

    def check_while_changed(password: str, stored: str) -> bool:
        ok = real(password, stored)
        save_user(path, "admin", "new-password")
        users.cached("admin", "anything")  # another request: the file is re-read
        return ok

    monkeypatch.setattr(auth, "check_password", check_while_changed)
    assert users.verify("admin", "old-password") is not None  # right when it was checked
    monkeypatch.setattr(auth, "check_password", real)
    assert users.cached("admin", "old-password") is None
    assert users.verify("admin", "old-password") is None
    assert users.verify("admin", "new-password") is not None


MEMORY = textwrap.dedent("""
    import sys, threading
    from concurrent.futures import ThreadPoolExecutor
    from gateway import auth
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    stored = auth.hash_password("right password")
    if sys.argv[1] == "plain":  # scrypt on two threads, as glibc leaves it
        import hashlib
        pool = ThreadPoolExecutor(2)
        check = lambda: pool.submit(hashlib.scrypt, b"wrong", salt=bytes(16), n=16384, r=8,
                                    p=1, dklen=32).result()
    else:
        check = lambda: auth.check_password("wrong", stored)
    check()
    start = rss()
    for _ in range(4):
        threads = [threading.Thread(target=check) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    print(start, rss())
""")


def test_every_check_gives_its_memory_back() -> None:
    """glibc kept each checking thread's block once its threshold had risen:
    the process grew by tens of MiB after a few logins and never shrank."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def grown_mib(how: str) -> float:
        result = subprocess.run([sys.executable, "-c", MEMORY, how], capture_output=True,
                                text=True, check=True, timeout=120, env=env)
        start, end = (int(x) for x in result.stdout.split())
        return (end - start) / 1024

    if grown_mib("plain") < 12:  # a 16 MiB check kept by a second thread
        pytest.skip("this C library gives the memory back by itself")
    # 16 checks on two threads, after a first one: at most a few MiB of Python.
    assert grown_mib("gateway") < 4
