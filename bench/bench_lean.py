"""Lean enough for a Pi Zero 2 W: the tree issue 17 started from and this one, side by side.

Every figure is taken from both trees in the same run, alternately, with the
same Python and libraries; the older tree is read out of git (``--before``).
The servers run as ``dtmf-gateway serve`` does by hand (no systemd, no
environment of the unit's) unless a row says otherwise, logging at info to
a pipe as under journald, on simulated lines.

- Start-up: ``--version`` against ``python -c pass``; spawn to READY=1 and
  the CPU spent by then (8 lines); the CPU of ``render``.
- Memory: RSS after start, after the first sign-in, after 8 simultaneous
  first sign-ins with the same credentials (and how long those took), at the
  peak of and right after 10 s of wrong passwords from 8 clients, and a
  minute later; after the flood in the unit's own environment.
- The request path: the server's CPU per SendDTMF (3 keys at 40/50 ms, 8
  lines, the server pinned to one core, the client on another), and the
  answers' overhead over the keys' line time with 32 lines whose keys end
  together.
- Pinning (this tree): the same CPU figure with the server on every core,
  ListActiveCalls and /healthz per second pinned and spread, and what it
  does to 8 lines' detectors (Listener) on threads of one process.

    python bench/bench_lean.py [--before REV] [--rounds N] [--later S]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from gateway.auth import SCRYPT_N, SCRYPT_P, SCRYPT_R  # noqa: E402

#: The tree issue 17 started from.
BEFORE = "c3f17cc"
USER, PASSWORD = "bench", "bench-password"
#: Three keys at the shortest timing the API allows: 3 x (40 + 50) ms on the line.
KEYS, KEYS_S = "123", 0.27
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def extract(rev: str, into: Path) -> Path:
    """``gateway/`` and ``systemd/`` of ``rev``, from git, in ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "gateway", "systemd"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"bench_lean: cannot read {rev} from git: "
                         f"{archive.stderr.decode().strip()}")
    with tempfile.TemporaryFile() as f:
        f.write(archive.stdout)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(into, filter="data")
    return into


def unit_environment(tree: Path) -> dict[str, str]:
    """The ``Environment=`` of a tree's systemd unit."""
    env = {}
    for line in (tree / "systemd" / "dtmf-gateway.service").read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    return env


def lines_config(n: int) -> str:
    return "".join(
        f'[[line]]\nname = "line{i}"\ndriver = "simulated"\nrecord_dir = "rec"\n'
        "call_timing = { dial_tone_ms = 0, answer_wait_ms = 0 }\n\n" for i in range(n))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for {pid}")


def base_env(tree: Path) -> dict[str, str]:
    """This environment without anything that would steer the gateway."""
    drop = {"PYTHONPATH", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "MALLOC_MMAP_THRESHOLD_", "NOTIFY_SOCKET", "WATCHDOG_USEC"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(tree)
    return env


SAVE_USERS = """
import sys
from pathlib import Path
from gateway.auth import save_user
for name, password in zip(sys.argv[2::2], sys.argv[3::2]):
    save_user(Path(sys.argv[1]), name, password)
"""


class Server:
    """``python -m gateway serve`` of one tree, ready once it said READY=1."""

    def __init__(self, tree: Path, workdir: Path, config: str, *, pin: int | None = None,
                 env: dict[str, str] | None = None, users: int = 0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "gateway.toml").write_text(config)
        users_file = workdir / "users.toml"
        if not users_file.exists():
            # Hashed by the tree's own code, at its own scrypt cost.
            people = [(USER, PASSWORD)] + [(f"user{i}", f"password-{i}") for i in range(users)]
            subprocess.run([sys.executable, "-c", SAVE_USERS, str(users_file),
                            *(x for person in people for x in person)],
                           env=base_env(tree), check=True, timeout=120)
        name = f"bench-lean-{os.getpid()}-{id(self)}"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind("\0" + name)
        notify.settimeout(60)
        command = [sys.executable, "-m", "gateway", "serve", "--config",
                   str(workdir / "gateway.toml"), "--port", "0"]
        if pin is not None:
            command = ["taskset", "-c", str(pin), *command]
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**base_env(tree), **(env or {}), "NOTIFY_SOCKET": "@" + name})
        try:
            while b"READY=1" not in notify.recv(4096):
                pass
        except TimeoutError:
            self.proc.kill()
            raise SystemExit(f"the server of {tree} did not start") from None
        finally:
            notify.close()
        self.ready_s = time.perf_counter() - started
        self.ready_cpu_s = cpu_seconds(self.proc.pid)
        assert self.proc.stdout is not None
        self.port = 0
        for line in self.proc.stdout:
            found = re.search(r"serving http://127\.0\.0\.1:(\d+)/api", line)
            if found:
                self.port = int(found.group(1))
                break
        # Logs at info, one line per command: read as the journal would.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- a client cheap enough not to be measured ---------------------------------------


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def api_path(query: str, user: str = USER, password: str = PASSWORD) -> str:
    return f"/api?{query}&" + urllib.parse.urlencode({"Username": user, "Password": password})


def answered(buffer: bytes) -> int:
    """The length of the first whole HTTP answer in ``buffer``, 0 if none yet."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return 0
    found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", buffer[:head_end])
    assert found, buffer[:head_end]
    end = head_end + 4 + int(found.group(1))
    return end if len(buffer) >= end else 0


def fetch(port: int, path: str, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=120,
                                  source_address=(source, 0)) as sock:
        sock.sendall(request(path))
        buffer = b""
        while not answered(buffer):
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit(f"connection closed before the answer to {path}")
            buffer += chunk
        return buffer


def code_of(answer: bytes) -> int:
    found = re.search(rb"<Code>(\d+)</Code>", answer)
    assert found, answer
    return int(found.group(1))


def lanes(port: int, paths: list[Callable[[], str]], *, rounds: int | None = None,
          seconds: float | None = None) -> list[float]:
    """Keep-alive connections, one per entry of ``paths``, each sending its next
    request the moment the last is answered, all from this one thread: until
    each made ``rounds`` requests, or for ``seconds``. The answer times."""
    selector = selectors.DefaultSelector()
    times: list[float] = []
    for make in paths:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, {"make": make, "buffer": b"", "n": 0})
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")
    for key in selector.get_map().values():
        key.data["sent"] = time.perf_counter()
        key.fileobj.send(request(key.data["make"]()))  # type: ignore[union-attr]
    while selector.get_map():
        for key, _ in selector.select(timeout=60):
            sock, lane = key.fileobj, key.data
            chunk = sock.recv(65536)  # type: ignore[union-attr]
            if not chunk:
                raise SystemExit("the server closed a connection")
            lane["buffer"] += chunk
            end = answered(lane["buffer"])
            if not end:
                continue
            now = time.perf_counter()
            if b"<Code>" in lane["buffer"] and code_of(lane["buffer"]) != 200:
                raise SystemExit(f"unexpected answer: {lane['buffer'][:end]!r}")
            times.append(now - lane["sent"])
            lane["buffer"] = lane["buffer"][end:]
            lane["n"] += 1
            if (rounds is not None and lane["n"] >= rounds) or now >= deadline:
                selector.unregister(sock)
                sock.close()  # type: ignore[union-attr]
                continue
            lane["sent"] = time.perf_counter()
            sock.send(request(lane["make"]()))  # type: ignore[union-attr]
    return times


def place_calls(port: int, n: int) -> list[str]:
    calls = []
    for _ in range(n):
        answer = fetch(port, api_path("command=Call&Dialed=1"))
        found = re.search(rb"<CallId>(\w+)</CallId>", answer)
        assert found, answer
        calls.append(found.group(1).decode())
    return calls


def send_dtmf_lanes(port: int, lines: int) -> list[Callable[[], str]]:
    paths = []
    for call_id in place_calls(port, lines):
        path = api_path(f"command=SendDTMF&CallId={call_id}&Party=all&Keys={KEYS}"
                        "&Duration=40&Gap=50")
        paths.append(lambda path=path: path)
    return paths


@contextmanager
def client_on(cpus: set[int]) -> Iterator[None]:
    """This process (the client) on ``cpus`` while the block runs."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus & before or before)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cores() -> tuple[int, set[int]]:
    """The core the server is pinned to, and the client's."""
    allowed = sorted(os.sched_getaffinity(0))
    server = allowed[0]
    return server, set(allowed[1:]) or {server}


# -- figures ---------------------------------------------------------------------------


def median_of(runs: int, trees: dict[str, Path], measure: Callable[[Path], float]
              ) -> dict[str, float]:
    """``measure`` on each tree ``runs`` times, alternating; the medians."""
    found: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            found[name].append(measure(tree))
    return {name: statistics.median(values) for name, values in found.items()}


def wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=tempfile.gettempdir(), check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def child_cpu(command: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, cwd=tempfile.gettempdir(), check=True,
                   stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def both(label: str, figures: dict[str, float], unit: str, digits: int = 0,
         note: str = "") -> None:
    values = [f"{figures[name]:.{digits}f}{' ' if unit else ''}{unit} {name}"
              for name in ("before", "now")]
    print(f"  {label}: {', '.join(values)}{note}")


def startup(trees: dict[str, Path], tmp: Path) -> None:
    print("start-up:")
    python = [sys.executable]
    bare = base_env(ROOT)
    passing = statistics.median(wall([*python, "-c", "pass"], bare) for _ in range(15))
    version = median_of(15, trees, lambda tree: wall([*python, "-m", "gateway", "--version"],
                                                     base_env(tree)))
    both("dtmf-gateway --version, median of 15", {k: v * 1000 for k, v in version.items()},
         "ms", note=f" (python -c pass {passing * 1000:.0f} ms: now "
         f"{version['now'] / passing:.1f}x, before {version['before'] / passing:.1f}x)")
    servers: dict[str, list[Server]] = {name: [] for name in trees}

    def spawn(tree: Path) -> float:
        name = "now" if tree == trees["now"] else "before"
        server = Server(tree, tmp / f"start-{name}", lines_config(8))
        server.stop()
        servers[name].append(server)
        return server.ready_s

    ready = median_of(5, trees, spawn)
    both("serve, 8 lines, spawn to READY=1, median of 5", ready, "s", 2)
    both("serve, 8 lines, CPU spent by READY=1, median of 5",
         {name: statistics.median(s.ready_cpu_s for s in runs)
          for name, runs in servers.items()}, "CPU-s", 2)
    # What serve cannot go below: the libraries it runs on, imported alone
    # (numpy without its thread pool, as the CLI has it).
    floor_env = {**bare, "OPENBLAS_NUM_THREADS": "1"}
    floor = "import numpy, flask, waitress, prometheus_client"
    floor_cpu = statistics.median(child_cpu([*python, "-c", floor], floor_env)
                                  for _ in range(5))
    floor_rss = float(subprocess.run(
        [*python, "-c", f"{floor}\nfor line in open('/proc/self/status'):\n"
         "    if line.startswith('VmRSS:'): print(int(line.split()[1]) / 1024)"],
        env=floor_env, capture_output=True, text=True, check=True).stdout)
    print(f"  the floor under serve, python importing numpy, Flask, waitress and "
          f"prometheus_client alone: {floor_cpu:.2f} CPU-s, RSS {floor_rss:.1f} MiB")
    out = tmp / "keys.wav"
    render = median_of(5, trees, lambda tree: child_cpu(
        [*python, "-m", "gateway", "render", "0123456789*#ABCD", "-o", str(out)],
        base_env(tree)))
    both("dtmf-gateway render of 16 keys, CPU, median of 5", render, "CPU-s", 2)


def guess_flood(port: int, seconds: float, sample: Callable[[], None]) -> int:
    """8 clients guessing wrong passwords, each guess from an address of its own
    (within every address's lock-out budget); ``sample`` runs meanwhile."""
    stop = time.monotonic() + seconds
    counts = [0] * 8

    def guesser(k: int) -> None:
        n = 0
        while time.monotonic() < stop:
            answer = fetch(port, api_path("command=ListActiveCalls", USER, f"wrong-{k}-{n}"),
                           source=f"127.1.{k}.{1 + n % 250}")
            assert code_of(answer) == 305, answer
            n += 1
        counts[k] = n

    threads = [threading.Thread(target=guesser, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        sample()
        time.sleep(0.05)
    return sum(counts)


def memory(trees: dict[str, Path], tmp: Path, later_s: float) -> None:
    print("memory (RSS, one simulated line):")
    figures: dict[str, dict[str, float]] = {}
    running: list[tuple[str, Server, float]] = []
    for name, tree in trees.items():
        server = Server(tree, tmp / f"memory-{name}", lines_config(1), users=1)
        f = figures[name] = {}
        time.sleep(1.0)
        f["start"] = server.rss()
        assert code_of(fetch(server.port, api_path("command=ListActiveCalls"))) == 200
        f["login"] = server.rss()
        codes: list[int] = []

        def sign_in(k: int, server: Server = server, codes: list[int] = codes) -> None:
            codes.append(code_of(fetch(server.port, api_path(
                "command=ListActiveCalls", "user0", "password-0"), source=f"127.0.3.{k + 1}")))

        started = time.perf_counter()
        logins = [threading.Thread(target=sign_in, args=(k,)) for k in range(8)]
        for t in logins:
            t.start()
        for t in logins:
            t.join()
        f["eight_s"] = time.perf_counter() - started
        assert codes == [200] * 8, codes
        f["eight"] = server.rss()
        peak = [0.0]

        def sample(server: Server = server, peak: list[float] = peak) -> None:
            peak[0] = max(peak[0], server.rss())

        f["guesses"] = guess_flood(server.port, 10.0, sample)
        f["peak"] = peak[0]
        f["after"] = server.rss()
        running.append((name, server, time.monotonic()))
    for name, server, flooded in running:
        time.sleep(max(0.0, flooded + later_s - time.monotonic()))
        figures[name]["later"] = server.rss()
        server.stop()
    for name, tree in trees.items():
        server = Server(tree, tmp / f"memory-unit-{name}", lines_config(1),
                        env=unit_environment(tree))
        guess_flood(server.port, 5.0, lambda: None)
        figures[name]["unit_after"] = server.rss()
        server.stop()

    def row(label: str, key: str, unit: str = "MiB", digits: int = 1) -> None:
        both(label, {name: f[key] for name, f in figures.items()}, unit, digits)

    row("after start", "start")
    row("after the first sign-in", "login")
    row("after 8 simultaneous first sign-ins with the same credentials", "eight")
    both("8 simultaneous first sign-ins with the same credentials, time to the last answer",
         {name: f["eight_s"] * 1000 for name, f in figures.items()}, "ms")
    row("wrong passwords checked in 10 s by 8 clients", "guesses", "", 0)
    row("peak during those 10 s", "peak")
    row("right after them", "after")
    row(f"{later_s:.0f} s after them", "later")
    row("right after 5 s of them, in the environment of the tree's unit", "unit_after")


def send_cpu(tree: Path, tmp: Path, lines: int, rounds: int, pin: bool
             ) -> tuple[float, list[float]]:
    """The server's CPU per SendDTMF, and each answer's overhead over the keys."""
    server_core, client_cores = cores()
    server = Server(tree, tmp, lines_config(lines), pin=server_core if pin else None)
    try:
        with client_on(client_cores if pin else os.sched_getaffinity(0)):
            paths = send_dtmf_lanes(server.port, lines)
            before = server.cpu()
            times = lanes(server.port, paths, rounds=rounds)
            spent = server.cpu() - before
    finally:
        server.stop()
    return spent / len(times), [t - KEYS_S for t in times]


#: Run in a child with a tree's ``gateway``: one request's CPU through the
#: WSGI app, in process and warm (no sockets, no waitress, the line without
#: its waits), best of 5 batches; SendDTMF's includes the line's worker.
WARM = """
import os, re, sys, time
from pathlib import Path
from werkzeug.test import EnvironBuilder
from gateway import logs
from gateway.app import create_app
from gateway.auth import save_user
from gateway.config import from_mapping

tmp = Path(sys.argv[1])
save_user(tmp / "users.toml", "bench", "bench-password")
config = from_mapping({"line": [{
    "name": "line1", "driver": "simulated", "record_dir": "rec", "time_scale": 0.0,
    "max_record_s": 3600.0, "call_timing": {"dial_tone_ms": 0, "answer_wait_ms": 0}}]},
    base_dir=tmp)
app = create_app(config)
logs.setup("info", open(os.devnull, "w"))
auth = "&Username=bench&Password=bench-password"

def environ(query):
    return EnvironBuilder("/api?" + query + auth,
                          environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()

def answer(env):
    return b"".join(app.wsgi_app(dict(env), lambda status, headers, exc_info=None: None))

call_id = re.search(rb"<CallId>(\\w+)<", answer(environ("command=Call&Dialed=1"))).group(1)
figures = []
for query in ("command=ListActiveCalls",
              "command=SendDTMF&Party=all&Keys=123&Duration=40&Gap=50&CallId="
              + call_id.decode()):
    env = environ(query)
    assert b"<Code>200</Code>" in answer(env)
    for _ in range(100):
        answer(env)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(400):
            answer(env)
        best = min(best, (time.process_time() - started) / 400)
    figures.append(best * 1e6)
print(" ".join(f"{f:.0f}" for f in figures))
app.extensions["dtmf_gateway"].close(5)
"""


#: The floor under the request path: waitress with an application that only
#: hands each request to its line's thread, which waits out the keys' time
#: and sets the result, as the gateway's worker does; no Flask, no gateway.
BARE = """
import collections, sys, threading
from concurrent.futures import Future
from waitress import create_server

queues = [collections.deque() for _ in range(8)]
ready = [threading.Condition() for _ in range(8)]

def line(i):
    while True:
        with ready[i]:
            while not queues[i]:
                ready[i].wait()
            done, started = queues[i].popleft()
        started.set()
        threading.Event().wait(float(sys.argv[1]))
        done.set_result(None)

for i in range(8):
    threading.Thread(target=line, args=(i,), daemon=True).start()
body = b'<?xml version="1.0"?>\\n<Response><Code>200</Code></Response>\\n'

def app(environ, start_response):
    i = int(environ["QUERY_STRING"].rsplit("=", 1)[1])
    done, started = Future(), threading.Event()
    with ready[i]:
        queues[i].append((done, started))
        ready[i].notify()
    started.wait(60)
    done.result(60)
    start_response("200 OK", [("Content-Type", "application/xml; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]

server = create_server(app, host="127.0.0.1", port=0, threads=64)
print(server.effective_port, flush=True)
server.run()
"""


def bare_cpu(rounds: int) -> float:
    """CPU per request of :data:`BARE`, pinned as the servers are."""
    server_core, client_cores = cores()
    proc = subprocess.Popen(["taskset", "-c", str(server_core), sys.executable, "-c", BARE,
                             str(KEYS_S)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with client_on(client_cores):
            before = cpu_seconds(proc.pid)
            times = lanes(port, [lambda i=i: f"/api?line={i}" for i in range(8)], rounds=rounds)
            return (cpu_seconds(proc.pid) - before) / len(times)
    finally:
        proc.kill()
        proc.wait()


def warm_request(tree: Path, tmp: Path) -> tuple[float, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", WARM, str(tmp)], env=base_env(tree), cwd=tmp,
                          capture_output=True, text=True, check=True, timeout=300)
    listing, sending = (float(x) for x in done.stdout.split())
    return listing, sending


def request_path(trees: dict[str, Path], tmp: Path, rounds: int) -> None:
    print("the request path:")
    warm: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for run in range(2):
        for name, tree in trees.items():
            warm[name].append(warm_request(tree, tmp / f"warm-{name}-{run}"))
    both("CPU of one ListActiveCalls through the app, in process, warm",
         {name: min(r[0] for r in runs) for name, runs in warm.items()}, "us")
    both("CPU of one SendDTMF (3 keys) through the app and its line's worker, in process, warm",
         {name: min(r[1] for r in runs) for name, runs in warm.items()}, "us")
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    eight: dict[str, list[float]] = {name: [] for name in trees}
    for run in range(3):
        for name, tree in trees.items():
            per, over = send_cpu(tree, tmp / f"cpu-{name}-{run}", 8, rounds, pin=True)
            cpu[name].append(per)
            eight[name] += over
    both("server CPU per SendDTMF (3 keys, 8 lines, pinned to one core), median of 3",
         {name: statistics.median(v) * 1000 for name, v in cpu.items()}, "ms", 2)
    floor = statistics.median(bare_cpu(rounds) for _ in range(3))
    print(f"  the floor under it, waitress handing each request to a line's thread and "
          f"nothing else (8 lines, pinned), median of 3: {floor * 1000:.2f} ms")
    for label, p in (("median", 50), ("p99", 99)):
        both(f"SendDTMF overhead over the keys' line time, 8 lines (pinned), {label}",
             {name: percentile(v, p) * 1000 for name, v in eight.items()}, "ms", 1)
    overhead: dict[str, list[float]] = {name: [] for name in trees}
    for run in range(2):
        for name, tree in trees.items():
            overhead[name] += send_cpu(tree, tmp / f"p99-{name}-{run}", 32, 12, pin=True)[1]
    for label, p in (("median", 50), ("p99", 99), ("max", 100)):
        both(f"SendDTMF overhead over the keys' line time, 32 lines ending together "
             f"(pinned), {label}", {name: percentile(v, p) * 1000
                                    for name, v in overhead.items()}, "ms", 1)


def detectors_load(threads: int, seconds: float) -> None:
    """Run in a child: ``threads`` Listeners on threads of their own, each over
    ``seconds`` of mixed audio in 20 ms blocks; prints audio s per wall s and per CPU s."""
    import numpy as np
    from bench_detect import mixed_minute

    from gateway.detect import Listener

    pcm = np.round(mixed_minute()).astype(np.int16)
    pcm = np.resize(pcm, int(8000 * seconds))
    blocks = [pcm[i: i + 160] for i in range(0, len(pcm), 160)]
    start = threading.Barrier(threads + 1)

    def line() -> None:
        listener = Listener("us", 8000)
        start.wait()
        for block in blocks:
            listener.feed(block)

    workers = [threading.Thread(target=line) for _ in range(threads)]
    for t in workers:
        t.start()
    start.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for t in workers:
        t.join()
    elapsed, spent = time.perf_counter() - began, time.process_time() - cpu
    print(f"{threads * seconds / elapsed:.0f} {threads * seconds / spent:.0f}")


def pinning(tree: Path, tmp: Path, rounds: int) -> None:
    print("one core or every core (this tree only):")
    server_core, client_cores = cores()
    spread_cpu = statistics.median(send_cpu(tree, tmp / f"spread-{run}", 8, rounds,
                                            pin=False)[0] for run in range(2))
    print(f"  server CPU per SendDTMF (3 keys, 8 lines) on every core: {spread_cpu * 1000:.2f} ms"
          " (pinned: above)")
    for label, path, config in (
            ("ListActiveCalls with authentication, 8 keep-alive clients",
             api_path("command=ListActiveCalls"), lines_config(8)),
            ("GET /healthz, 8 keep-alive clients, 8 lines", "/healthz", lines_config(8))):
        rates, cpu = {}, {}
        for where, pin in (("pinned", server_core), ("spread", None)):
            server = Server(tree, tmp / f"rate-{where}", config, pin=pin)
            try:
                # Checked once: 8 first sign-ins at once from one address would
                # spend more than its lock-out budget.
                assert code_of(fetch(server.port, api_path("command=ListActiveCalls"))) == 200
                with client_on(client_cores if pin is not None else os.sched_getaffinity(0)):
                    spent = server.cpu()
                    times = lanes(server.port, [lambda path=path: path] * 8, seconds=5.0)
                    spent = server.cpu() - spent
                rates[where], cpu[where] = len(times) / 5.0, spent / len(times)
            finally:
                server.stop()
        print(f"  {label}: {rates['pinned']:.0f} per second pinned, "
              f"{rates['spread']:.0f} spread; server CPU per request {cpu['pinned'] * 1000:.2f}"
              f" ms pinned, {cpu['spread'] * 1000:.2f} ms spread")
    detect: dict[str, list[list[float]]] = {"pinned": [], "spread": []}
    for _ in range(3):
        for where, prefix in (("pinned", ["taskset", "-c", str(server_core)]), ("spread", [])):
            done = subprocess.run(
                [*prefix, sys.executable, str(Path(__file__)), "--detectors", "8"],
                capture_output=True, text=True, check=True, cwd=ROOT,
                env={**base_env(tree), "PYTHONPATH": f"{tree}:{BENCH}"})
            detect[where].append([float(x) for x in done.stdout.split()])
    rate = {k: statistics.median(r[0] for r in v) for k, v in detect.items()}
    per_cpu = {k: statistics.median(r[1] for r in v) for k, v in detect.items()}
    print("  8 lines' detectors on threads of one process (20 ms blocks), median of 3, seconds "
          f"of audio per second: {rate['pinned']:.0f} pinned, {rate['spread']:.0f} spread; "
          f"per CPU second: {per_cpu['pinned']:.0f} pinned, {per_cpu['spread']:.0f} spread")


def scrypt_cost() -> None:
    import hashlib

    times = []
    for _ in range(7):
        started = time.process_time()
        hashlib.scrypt(b"bench-password", salt=bytes(16), n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                       dklen=32)
        times.append(time.process_time() - started)
    mib = 128 * SCRYPT_N * SCRYPT_R // 2**20
    print(f"one password check (scrypt N={SCRYPT_N}, r={SCRYPT_R}, p={SCRYPT_P}, {mib} MiB): "
          f"{statistics.median(times) * 1000:.0f} ms CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help=f"the older tree (default {BEFORE})")
    parser.add_argument("--rounds", type=int, default=40, help="SendDTMF per line per run")
    parser.add_argument("--later", type=float, default=60.0,
                        help="seconds after the flood for the last RSS figure")
    parser.add_argument("--parts", default="startup,memory,request,pinning",
                        help="which figures: startup,memory,request,pinning (default all)")
    parser.add_argument("--detectors", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.detectors:
        detectors_load(args.detectors, 20.0)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trees = {"before": extract(args.before, tmp / "before"), "now": ROOT}
        for tree in trees.values():  # compile both trees once, outside any figure
            subprocess.run([sys.executable, "-c", "import gateway.server, gateway.cli"],
                           env=base_env(tree), cwd=tmp, check=True)
        parts = set(args.parts.split(","))
        if "startup" in parts:
            startup(trees, tmp)
        if "memory" in parts:
            memory(trees, tmp, args.later)
        if "request" in parts:
            request_path(trees, tmp, args.rounds)
        if "pinning" in parts:
            pinning(ROOT, tmp, args.rounds)
    scrypt_cost()


if __name__ == "__main__":
    main()
