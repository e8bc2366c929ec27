"""The modem line's own overhead, on the simulated modem's pseudo-terminal.

- command round trip: ``AT`` written to ``OK`` read back, through pyserial's
  reader thread and the pty (a USB modem adds its own USB and firmware time);
- SendDTMF overhead: ``emit`` of 16 keys (100 ms on / 100 ms off) minus the
  ideal tone time, at the V.250 minimum command line (40 characters) and a
  longer one;
- what a split costs on the line: the extra silence between the last element
  of one ``AT+VTS`` and the first of the next, beyond the gap asked for;
- hearing: a far-end key's report (its ``<DLE>~``, or ``<DLE>5`` alone)
  written by the modem to the call layer told of the key; the modem's
  answer report (``<DLE>q``) to the call counting as connected (the set-up's
  2 s confirmation is most of it). A real modem adds its own detection time
  before it reports.

    python bench/bench_modem.py [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

from gateway.errors import LineFault
from gateway.keys import parse_keys
from gateway.lines.modem import ATPort, ModemCallTiming, ModemLine, ModemOptions
from gateway.lines.modem_sim import FarEnd, FarEvent, ScriptedFarEnds, SimulatedModem
from gateway.tones import Timing, ToneEngine, TonePlan

KEYS = "0123456789*#ABCD"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def round_trip(rounds: int) -> list[float]:
    with SimulatedModem() as sim:
        port = ATPort(sim.port, 115200, 1.0, lambda: None, lambda exc: None)
        port.open()
        port.command("ATE0", 1.0, 1.0)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            port.command("AT", 1.0, 1.0)
            times.append(time.perf_counter() - started)
        port.close()
    return times


def emit_overhead(max_chars: int, rounds: int) -> tuple[list[float], list[float], int]:
    plan = TonePlan(parse_keys(KEYS), Timing(100, 100))
    overheads: list[float] = []
    split_gaps: list[float] = []
    with SimulatedModem(buffer=max_chars) as sim:
        options = ModemOptions(port=sim.port, max_command_chars=max_chars)
        with ModemLine("bench", options, ToneEngine()) as line:
            line.off_hook()
            for _ in range(rounds):
                mark = sim.mark()
                started = time.perf_counter()
                line.emit(plan)
                overheads.append(time.perf_counter() - started - plan.seconds)
                played = sim.tones[mark:]
                for before, after in itertools.pairwise(played):
                    gap = after.at - (before.at + before.ms / 1000)
                    if gap > 1e-6:  # elements of one command touch exactly
                        split_gaps.append(gap)
            commands = len(sim.vts_commands()) // rounds
    return overheads, split_gaps, commands


class _Told:
    """The call layer's side of the line's ears: when each key was told."""

    def __init__(self) -> None:
        self.keys: list[float] = []

    def ringing(self) -> None:
        pass

    def far_end_left(self, why: str) -> None:
        pass

    def key(self, key: str, duration_ms: int) -> None:
        self.keys.append(time.monotonic())

    def fault(self, exc: LineFault) -> None:
        raise exc


def key_latency(form: str, keys: int) -> list[float]:
    """Modem's key report written to the call layer told, per key."""
    with SimulatedModem() as sim:
        sim.dtmf_form = form
        options = ModemOptions(port=sim.port, call_timing=ModemCallTiming(answer_wait_ms=0))
        with ModemLine("bench", options, ToneEngine()) as line:
            told = _Told()
            assert line.ears is not None
            line.ears.handler = told
            line.place_call("1", Timing(100, 100))
            sim.hear(*(FarEvent(0.2 * n, "5", 80) for n in range(keys)))
            deadline = time.monotonic() + 0.2 * keys + 5
            while len(told.keys) < keys and time.monotonic() < deadline:
                time.sleep(0.05)
            last = [at for at, what in sim.reports if what.endswith(b"~" if form == "bracketed"
                                                                    else b"5")]
    return [heard - sent for sent, heard in zip(last, told.keys, strict=True)]


def answer_latency(rounds: int) -> list[float]:
    """The modem's ``<DLE>q`` after ringback written to place_call returning."""
    far = FarEnd("OK", 0.2, (FarEvent(0.1, "ringback"), FarEvent(0.4, "quiet")))
    times = []
    with SimulatedModem() as sim:
        sim.far_end = ScriptedFarEnds({"1": far})
        with ModemLine("bench", ModemOptions(port=sim.port), ToneEngine()) as line:
            for _ in range(rounds):
                del sim.reports[:]
                line.place_call("1", Timing(100, 100))
                returned = time.monotonic()
                times.append(returned - next(at for at, what in sim.reports if what == b"\x10q"))
                line.on_hook()
    return times


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="emits per setting")
    args = parser.parse_args()
    trips = round_trip(500)
    print(f"AT -> OK round trip on the pty: median {ms(statistics.median(trips))}, "
          f"p99 {ms(percentile(trips, 99))}")
    for max_chars in (40, 120):
        overheads, gaps, commands = emit_overhead(max_chars, args.rounds)
        print(f"emit 16 keys, max_command_chars={max_chars} ({commands} AT+VTS lines): "
              f"overhead median {ms(statistics.median(overheads))}, "
              f"p99 {ms(percentile(overheads, 99))}; extra silence at a split "
              f"median {ms(statistics.median(gaps))}, max {ms(max(gaps))}")
    for form in ("plain", "bracketed"):
        latency = key_latency(form, 50)
        print(f"far-end key, modem's report to the call told ({form}, {len(latency)} keys): "
              f"median {ms(statistics.median(latency))}, p99 {ms(percentile(latency, 99))}")
    answers = answer_latency(max(3, args.rounds // 2))
    print(f"modem's answer report (quiet, DLE q) to the call connected ({len(answers)} calls): "
          f"median {ms(statistics.median(answers))}, max {ms(max(answers))}")


if __name__ == "__main__":
    main()
