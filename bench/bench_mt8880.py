"""MT8880 line: non-burst timing accuracy and bus cycle time, on the simulated chip.

Timing: the driver sends a few hundred digits in non-burst mode (it times
every CRA.TOUT edge itself); the simulated chip timestamps each edge as phi2
falls, which is when a real chip latches the write. Printed: the error of each
tone-on time and each gap against the request, median, p99 and worst.

Bus: write and read cycles per second through gpiozero's MockFactory pins,
bare and with the chip simulator decoding every edge, at zero and at the
default 5 us setup/strobe/hold delays. (On a Pi the GPIO library sets the
pace instead; the mock measures the driver's own overhead.)

    python bench/bench_mt8880.py [--digits N] [--duration MS] [--gap MS]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

from gpiozero.pins.mock import MockFactory

from gateway.keys import parse_keys
from gateway.lines.gpio import GpioOptions
from gateway.lines.mt8880 import RS0, MT8880Bus, MT8880Line, MT8880Options
from gateway.lines.mt8880_sim import MT8880Simulator
from gateway.tones import Timing, ToneEngine, TonePlan

KEYS = "0123456789*#ABCD"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timing(digits: int, duration_ms: int, gap_ms: int) -> None:
    options = MT8880Options(power_up_ms=5, gpio=GpioOptions(hook_relay_pin=17, hook_settle_ms=0))
    factory = MockFactory()
    sim = MT8880Simulator.for_options(factory, options, relay_pin=17)
    line = MT8880Line("bench", options, ToneEngine(), pin_factory=factory)
    line.open()
    line.off_hook()
    keys = "".join(itertools.islice(itertools.cycle(KEYS), digits))
    # In strings of at most 128 keys, as SendDTMF sends them.
    for start in range(0, digits, 128):
        plan = TonePlan(parse_keys(keys[start : start + 128]), Timing(duration_ms, gap_ms))
        line.emit(plan)
    line.close()
    sim.check()
    segments = sim.tone_segments(line_only=True)
    tone_err = [(s.end - s.start) * 1000 - duration_ms for s in segments]
    gap_err = [(b.start - a.end) * 1000 - gap_ms for a, b in itertools.pairwise(segments)
               if b.start - a.end < (gap_ms + 50) / 1000]  # not across two SendDTMFs
    print(f"non-burst timing, {len(segments)} digits at {duration_ms}/{gap_ms} ms "
          "(error against the request, ms):")
    for name, errors in (("tone on", tone_err), ("gap", gap_err)):
        print(f"  {name:<8} median {statistics.median(errors):+.3f}  p99 "
              f"{percentile(errors, 0.99):+.3f}  min {min(errors):+.3f}  max {max(errors):+.3f}")


def bus_rate(simulated: bool, delay_us: float, cycles: int) -> float:
    options = MT8880Options(setup_us=delay_us, strobe_us=delay_us, hold_us=delay_us)
    factory = MockFactory()
    sim = MT8880Simulator.for_options(factory, options, power_up_s=0) if simulated else None
    data = (options.data_pins[0], options.data_pins[1], options.data_pins[2],
            options.data_pins[3])
    bus = MT8880Bus(factory, data, options.rs0_pin, options.rw_pin, options.cs_pin,
                    options.phi2_pin, None, options.bus_timing)
    # Reads of the status register and writes of CRA alternate: the mix a
    # burst-mode digit makes, and both directions turn the data pins around.
    start = time.perf_counter()
    for _ in range(cycles // 2):
        bus.write(RS0.CONTROL, 0)
        bus.read(RS0.CONTROL)
    elapsed = time.perf_counter() - start
    bus.close()
    if sim is not None:
        sim.check()
        sim.close()
    return elapsed / cycles * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, default=400)
    parser.add_argument("--duration", type=int, default=40)
    parser.add_argument("--gap", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=20000)
    args = parser.parse_args()
    timing(args.digits, args.duration, args.gap)
    print("bus cycle time under MockFactory (us per cycle, write/read alternating):")
    for simulated, delay in itertools.product((False, True), (0.0, 5.0)):
        us = bus_rate(simulated, delay, args.cycles)
        what = "with the chip simulator" if simulated else "bare mock pins"
        print(f"  {what:<24} delays {delay:>3.0f} us: {us:6.1f} us ({1e6 / us:,.0f} cycles/s)")


if __name__ == "__main__":
    main()
