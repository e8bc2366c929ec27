"""What an open web console tab costs the server (waitress, simulated lines).

A tab polls one live fragment a second. This measures, through the real
server, the time to answer each fragment (with a call up and the command log
full, its largest), and the server's CPU time per request, so the load of N
tabs on a Pi can be read off: N x the CPU per request, per second.

    python bench/bench_console.py [--requests N]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench_api import AUTH, PASSWORD, USER, start_server  # beside this script


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sign_in(conn: http.client.HTTPConnection) -> str:
    conn.request("GET", "/login")
    response = conn.getresponse()
    page = response.read().decode()
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token
    form_cookie = response.getheader("Set-Cookie", "").split(";", 1)[0]
    body = urllib.parse.urlencode({"login_token": token.group(1), "username": USER,
                                   "password": PASSWORD})
    conn.request("POST", "/login", body, {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": form_cookie})
    response = conn.getresponse()
    response.read()
    assert response.status == 302, response.status
    cookies = [c for c in response.headers.get_all("Set-Cookie") or []
               if c.startswith("dtmf_console=")]
    return cookies[0].split(";", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, _ = start_server(Path(tmp), 1)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/api?command=Call&Dialed=5551234&{AUTH}")
            conn.getresponse().read()
            for _ in range(200):  # a full command log, alternating so nothing folds
                for command in ("ListActiveCalls", "Nope"):
                    conn.request("GET", f"/api?command={command}&{AUTH}")
                    conn.getresponse().read()
            cookie = sign_in(conn)
            print(f"{'fragment':<16} {'median ms':>9} {'p99 ms':>7} {'server CPU ms/req':>18}")
            for fragment in ("calls", "lines", "log"):
                times = []
                cpu_before = cpu_seconds(proc.pid)
                for _ in range(args.requests):
                    started = time.perf_counter()
                    conn.request("GET", f"/fragment/{fragment}", headers={"Cookie": cookie})
                    response = conn.getresponse()
                    response.read()
                    times.append(time.perf_counter() - started)
                    assert response.status == 200
                cpu = (cpu_seconds(proc.pid) - cpu_before) / args.requests
                times.sort()
                print(f"/fragment/{fragment:<6} {statistics.median(times) * 1000:>9.2f} "
                      f"{times[int(len(times) * 0.99) - 1] * 1000:>7.2f} {cpu * 1000:>18.2f}")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
