"""A far-end key's end to its DtmfEntered POST arriving, on every driver that hears keys.

Each driver places one call through the HTTP API (``Call`` with our
``DtmfUrl``, on the Flask test client) and its far end then presses the
same random keys (the 12 of a phone's keypad, 100 ms each, a random gap of
100-300 ms after each) from 0.3 s after the ``Call`` returned (connected).
A receiver on loopback (ThreadingHTTPServer) dates each POST as it arrives
(its request line and headers read); a key's end is dated by the far end's
wall clock, as a sound card would date it: the moment the block that holds
the key's last sample was delivered, less what follows it in that block.
The keys that arrive must be the keys pressed, in order, or the script fails.

- alsa: the capture paced in real time through the ALSA file plugin's
  ``infile`` on a FIFO, 20 ms at a time (tests/alsa_line.py, as
  bench_capture.py runs it); the set-up heard as a user's line hears it
  (dial tone, one US ring, a spoken hello; the keys from 0.3 s after the
  hello, which may outlast the answer's confirmation) and the keys made
  by sox.
- mt8880: the simulated chip (``simulate = true``), its receiver fed the
  far end in real time every 10 ms; UK dial tone until our digits, then
  ringback (tests/test_mt8880_hearing.py's exchange), the keys by sox.
  Status polled, and with IRQ/CP wired (the set-up followed in
  call-progress mode).
- modem: the simulated modem (``port = "sim://"``) on its pseudo-terminal,
  reporting each key as V.253 ``<DLE>`` shielded codes: ``plain`` (the
  digit alone, sent once the modem's receiver has detected the key, 40 ms
  into it, so the POST can come before the key ends) and ``bracketed``
  (``<DLE>/`` ... ``<DLE>~``, whose end the driver waits for). A key's end
  is the moment the simulated modem's line side was told it ends.
- simulated: the exchange of bench_exchange.py's key figure, in real time
  (``time_scale = 1``), pressing the same keys; a block is delivered when
  the line reads it.

With 40 keys the p99 (numpy's, interpolated) lies between the two largest.

    python bench/bench_keys.py [--keys N] [--drivers alsa,mt8880,modem,simulated]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.server
import os
import random
import re
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from flask.testing import FlaskClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_capture import DIAL, RING_CADENCE, RINGBACK  # beside this script

from gateway.app import create_app
from gateway.auth import save_user
from gateway.calls import Gateway
from gateway.config import from_mapping
from gateway.lines.exchange import Kind
from gateway.lines.gpio import pin_factory
from gateway.lines.modem_sim import FarEnd as ModemFarEnd
from gateway.lines.modem_sim import FarEvent, ScriptedFarEnds, SimulatedModemRecorder
from gateway.lines.mt8880_sim import ChipRecorder
from gateway.lines.simulated import SimulatedLine
from tests import sox_signals as sx
from tests.alsa_line import FarEnd, PhoneLine
from tests.test_mt8880_hearing import UK_DIAL, UK_RINGBACK, Exchange

USER, PASSWORD = "bench", "bench-password"
RATE = 8000
DIALED = "5551234"
KEYPAD = "123456789*0#"
ON_S, GAP_MS = 0.1, (100, 300)
#: The far end starts pressing this long after the Call returned (connected).
LEAD_S = 0.3
#: Each tone of a key, dBm0: a telephone's level on a short loop.
KEY_DBM0 = -10.0
DRIVERS = ("alsa", "mt8880", "modem", "simulated")


@dataclass
class Plan:
    """The keys, and each one's start and end (seconds from the first's start)."""

    keys: str
    starts: list[float]
    ends: list[float]

    @classmethod
    def random(cls, count: int, rng: random.Random) -> Plan:
        keys, starts, ends, t = "", [], [], 0.0
        for _ in range(count):
            keys += rng.choice(KEYPAD)
            starts.append(t)
            ends.append(t + ON_S)
            t += ON_S + rng.randint(*GAP_MS) / 1000
        return cls(keys, starts, ends)

    @property
    def seconds(self) -> float:
        return self.ends[-1] if self.ends else 0.0

    def pcm(self) -> npt.NDArray[np.int16]:
        """The keys by sox, the Q.23 pairs of tests/sox_signals.py."""
        parts: list[sx.Part] = []
        for i, key in enumerate(self.keys):
            low, high = sx.dtmf_hz(key)
            parts.append((ON_S, [(low, KEY_DBM0), (high, KEY_DBM0)]))
            if i + 1 < len(self.keys):
                parts.append((self.starts[i + 1] - self.ends[i], []))
        pcm = sx.synth(parts, RATE)
        if len(pcm) != round(self.seconds * RATE):
            raise SystemExit(f"sox made {len(pcm)} samples of keys, not {self.seconds * RATE:.0f}")
        return pcm


@dataclass
class Deliveries:
    """When a real-time far end delivered each block: far-end seconds at its end, wall."""

    ends: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)

    def add(self, end_s: float) -> None:
        self.walls.append(time.monotonic())
        self.ends.append(end_s)

    def wall(self, t: float) -> float:
        """The wall time (monotonic) at which far-end time ``t`` went out."""
        i = bisect.bisect_left(self.ends, t - 1e-9)
        if i == len(self.ends):
            raise SystemExit(f"far-end time {t:.3f} s was never delivered")
        return self.walls[i] - (self.ends[i] - t)


class Receiver:
    """The integrator's DtmfUrl: each POST's arrival and DtmfDigits, by CallId."""

    def __init__(self) -> None:
        self.posts: dict[str, list[tuple[float, str]]] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                with receiver.cond:
                    receiver.posts.setdefault(form.get("CallId", ""), []).append(
                        (arrived, form.get("DtmfDigits", "")))
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keys"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, call_id: str, count: int, timeout: float) -> list[tuple[float, str]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.posts.get(call_id, [])) >= count, timeout)
            return list(self.posts.get(call_id, []))


@dataclass
class Outcome:
    """One driver's run: the keys pressed with their ends (wall), and the POSTs."""

    pressed: str
    ends: list[float]
    posts: list[tuple[float, str]]

    def latencies_ms(self) -> list[float]:
        heard = "".join(digits for _, digits in self.posts)
        if heard != self.pressed:
            raise ValueError(f"pressed {self.pressed}, DtmfEntered {heard or 'nothing'}")
        return [(arrived - end) * 1000
                for end, (arrived, _) in zip(self.ends, self.posts, strict=True)]


@contextlib.contextmanager
def gateway_for(tmp: Path, line: dict[str, Any]) -> Iterator[tuple[FlaskClient, Gateway]]:
    save_user(tmp / "users.toml", USER, PASSWORD)
    config = from_mapping({"server": {"notify_allow": ["127.0.0.1/32"]}, "line": [line]},
                          base_dir=tmp)
    app = create_app(config)
    gateway: Gateway = app.extensions["dtmf_gateway"]
    try:
        yield app.test_client(), gateway
    finally:
        gateway.close(5)


def api(client: FlaskClient, command: str, **params: str) -> str:
    response = client.get("/api", query_string={"command": command, "Username": USER,
                                                "Password": PASSWORD, **params})
    return response.get_data(as_text=True)


def keys_of_a_call(client: FlaskClient, receiver: Receiver, plan: Plan,
                   press: Callable[[], None]) -> Outcome:
    """Call, have the far end press the keys once connected (``press``), wait
    for their POSTs, hang up. The caller dates the keys' ends (``ends``)."""
    answer = api(client, "Call", Dialed=DIALED, DtmfUrl=receiver.url)
    found = re.search(r"<CallId>([^<]+)</CallId>", answer)
    if "<Code>200</Code>" not in answer or found is None:
        raise SystemExit(f"the call did not connect: {answer}")
    call_id = found.group(1)
    press()
    posts = receiver.wait(call_id, len(plan.keys), LEAD_S + plan.seconds + 10.0)
    api(client, "HangUp", CallId=call_id)
    return Outcome(plan.keys, [], posts)


# -- the drivers ------------------------------------------------------------------------


class TimedPhoneLine(PhoneLine):
    """tests/alsa_line.py's line, dating each 20 ms it writes into the capture's FIFO."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.delivered = Deliveries()
        super().__init__(*args, **kwargs)

    def _tick(self) -> None:
        super()._tick()
        if self.in_call:
            self.delivered.add(self.position / self.rate)


def alsa(tmp: Path, plan: Plan, receiver: Receiver) -> Outcome:
    (tmp / "asoundrc").write_text(
        f'pcm.hat_out {{ type file slave.pcm {{ type null }} file "{tmp}/played.fifo" '
        'format "raw" }\n'
        f'pcm.hat_in {{ type file slave.pcm {{ type null }} infile "{tmp}/far.fifo" '
        'file "/dev/null" format "raw" }\n'
        'pcm.hat { type asym playback.pcm "hat_out" capture.pcm "hat_in" }\n')
    os.environ["ALSA_CONFIG_PATH"] = str(tmp / "asoundrc")
    relay = pin_factory("mock").pin(5)
    setup = (FarEnd(RATE).tone(DIAL, 1.2).silence(1.0).tone(RINGBACK, 2.0, RING_CADENCE)
             .silence(1.0).speech("Hello?"))
    phone = TimedPhoneLine(tmp / "played.fifo", tmp / "far.fifo", RATE, setup.pcm(),
                           off_hook=lambda: bool(relay.state))
    keys = plan.pcm()
    line = {"name": "hat", "driver": "alsa", "device": "hat", "rate": RATE,
            "gpio": {"pin_factory": "mock", "hook_relay_pin": 5, "hook_settle_ms": 0}}
    try:
        with gateway_for(tmp, line) as (client, _):
            started: list[float] = []

            def press() -> None:
                # Keys over the far end's speech are another bench's matter.
                lead = max(LEAD_S, setup.seconds + LEAD_S - phone.position / RATE)
                started.append(phone.say(keys, lead))

            outcome = keys_of_a_call(client, receiver, plan, press)
    finally:
        phone.close()
    outcome.ends = [phone.delivered.wall(started[0] + end) for end in plan.ends]
    return outcome


class ChipFarEnd:
    """The simulated chip's line input: an exchange's set-up audio, the keys
    mixed in from a moment chosen once the call is up, each block dated as
    the chip takes it."""

    def __init__(self, setup: Callable[[int], Any]) -> None:
        self.setup = setup
        self.delivered = Deliveries()
        self._lock = threading.Lock()
        self._taken = 0
        self._keys = np.zeros(0)
        self._keys_at = 0

    def __call__(self, n: int) -> npt.NDArray[np.float64]:
        out = np.zeros(n)
        got = np.asarray(self.setup(n), dtype=np.float64)[:n]
        out[: len(got)] = got
        with self._lock:
            lo = max(self._taken, self._keys_at)
            hi = min(self._taken + n, self._keys_at + len(self._keys))
            if hi > lo:
                out[lo - self._taken: hi - self._taken] += self._keys[lo - self._keys_at:
                                                                       hi - self._keys_at]
            self._taken += n
            taken = self._taken
        self.delivered.add(taken / RATE)
        return out

    def press(self, pcm: npt.NDArray[np.int16], lead_s: float) -> float:
        """Mix ``pcm`` in from ``lead_s`` from now; its far-end time."""
        with self._lock:
            self._keys = pcm.astype(np.float64)
            self._keys_at = self._taken + round(lead_s * RATE)
            return self._keys_at / RATE


def mt8880(irq: int | None) -> Callable[[Path, Plan, Receiver], Outcome]:
    def run(tmp: Path, plan: Plan, receiver: Receiver) -> Outcome:
        line: dict[str, Any] = {
            "name": "m1", "driver": "mt8880", "simulate": True, "power_up_ms": 5,
            "record_dir": str(tmp), "country": "uk",
            "gpio": {"hook_relay_pin": 17, "hook_settle_ms": 0}}
        if irq is not None:
            line["irq_pin"] = irq
        dial = sx.synth(UK_DIAL)
        after = sx.synth(sx.cadence((400.0, 450.0), UK_RINGBACK, 3.0))
        keys = plan.pcm()
        with gateway_for(tmp, line) as (client, gateway):
            recorder = gateway.lines["m1"].recorder
            assert isinstance(recorder, ChipRecorder)
            chip = recorder.simulator
            opened: list[ChipFarEnd] = []

            def open_far_end() -> ChipFarEnd:
                opened.append(ChipFarEnd(Exchange(chip, dial, after)))
                return opened[-1]

            chip.connect_line(open_far_end)
            started: list[float] = []

            outcome = keys_of_a_call(client, receiver, plan,
                                     lambda: started.append(opened[-1].press(keys, LEAD_S)))
        outcome.ends = [opened[-1].delivered.wall(started[0] + end) for end in plan.ends]
        return outcome

    return run


def modem(form: str) -> Callable[[Path, Plan, Receiver], Outcome]:
    def run(tmp: Path, plan: Plan, receiver: Receiver) -> Outcome:
        line = {"name": "modem", "driver": "modem", "port": "sim://", "record_dir": str(tmp)}
        with gateway_for(tmp, line) as (client, gateway):
            recorder = gateway.lines["modem"].recorder
            assert isinstance(recorder, SimulatedModemRecorder)
            sim = recorder.simulator
            sim.dtmf_form = form
            # Ringback, then the far end's voice: answered once that has stood 2 s.
            sim.far_end = ScriptedFarEnds({DIALED: ModemFarEnd(
                "VCON", 0.05, (FarEvent(0.1, "ringback"), FarEvent(0.4, "quiet")))})

            began: list[float] = []

            def press() -> None:
                # hear() times the events from its own clock reading, microseconds later.
                began.append(time.monotonic())
                sim.hear(*(FarEvent(LEAD_S + start, key, round(ON_S * 1000))
                           for key, start in zip(plan.keys, plan.starts, strict=True)))

            outcome = keys_of_a_call(client, receiver, plan, press)
        outcome.ends = [began[0] + LEAD_S + end for end in plan.ends]
        return outcome

    return run


def simulated(tmp: Path, plan: Plan, receiver: Receiver) -> Outcome:
    # Answered by a polarity reversal: connected at once, the keys 2 s later.
    first_s = 2.0
    party = {"rings": 0, "answer": "silence", "reversal": True,
             "press": [{"at_s": round(first_s + start, 3), "keys": key,
                        "duration_ms": round(ON_S * 1000)}
                       for key, start in zip(plan.keys, plan.starts, strict=True)]}
    line = {"name": "sim", "driver": "simulated", "time_scale": 1.0, "record_dir": str(tmp),
            "exchange": {"default": party}}
    with gateway_for(tmp, line) as (client, gateway):
        driver = gateway.lines["sim"].driver
        assert isinstance(driver, SimulatedLine) and driver.exchange is not None
        exchange = driver.exchange
        delivered = Deliveries()
        read = exchange.read

        def timed_read(n: int) -> Any:
            audio = read(n)
            delivered.add(exchange.now)
            return audio

        exchange.read = timed_read  # type: ignore[method-assign]
        outcome = keys_of_a_call(client, receiver, plan, lambda: None)
        pressed = [e for e in exchange.timeline if e.kind is Kind.KEY]
    outcome.pressed = "".join(e.detail for e in pressed)
    if outcome.pressed != plan.keys:
        raise SystemExit(f"the exchange pressed {outcome.pressed}, not {plan.keys}")
    outcome.ends = [delivered.wall(e.t + e.ms / 1000) for e in pressed]
    return outcome


RUNS: dict[str, list[tuple[str, Callable[[Path, Plan, Receiver], Outcome]]]] = {
    "alsa": [("alsa, capture through a FIFO in real time", alsa)],
    "mt8880": [("mt8880 (simulated chip), status polled", mt8880(None)),
               ("mt8880 (simulated chip), IRQ/CP wired", mt8880(23))],
    # No angle brackets: the rows end up in the README's table.
    "modem": [("modem (simulated, pty), plain DLE digit sent at detection", modem("plain")),
              ("modem (simulated, pty), bracketed DLE / ... DLE ~", modem("bracketed"))],
    "simulated": [("simulated line, real time", simulated)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=40, help="far-end keys per driver")
    parser.add_argument("--drivers", default=",".join(DRIVERS),
                        help=f"comma-separated, of {', '.join(DRIVERS)}")
    args = parser.parse_args()
    chosen = args.drivers.split(",")
    unknown = [d for d in chosen if d not in RUNS]
    if unknown or args.keys < 1:
        parser.error(f"unknown driver(s) {', '.join(unknown)}" if unknown else "--keys: 1 or more")
    plan = Plan.random(args.keys, random.Random(18))
    receiver = Receiver()
    failed = []
    print(f"far-end key's end to its DtmfEntered POST arriving ({args.keys} keys of "
          f"{ON_S * 1000:.0f} ms, gaps {GAP_MS[0]}-{GAP_MS[1]} ms, via the HTTP API):", flush=True)
    try:
        for driver in chosen:
            for name, run in RUNS[driver]:
                with tempfile.TemporaryDirectory() as tmp:
                    outcome = run(Path(tmp), plan, receiver)
                try:
                    ms = np.array(outcome.latencies_ms())
                except ValueError as exc:
                    failed.append(name)
                    print(f"{name}: wrong keys: {exc}", file=sys.stderr, flush=True)
                    continue
                print(f"  {name}: median {np.median(ms):.0f} ms, "
                      f"p99 {np.percentile(ms, 99):.0f} ms", flush=True)
    finally:
        receiver.server.shutdown()
    if failed:
        raise SystemExit(f"wrong keys on {', '.join(failed)}")


if __name__ == "__main__":
    main()
