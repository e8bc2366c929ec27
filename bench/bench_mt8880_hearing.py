"""What the MT8880 line's hearing costs and how late it is, on the simulated chip.

    python bench/bench_mt8880_hearing.py [--keys 40]

- Far-end key to the driver's report: from the end of the key's tone (as
  the far end played it) to the Dtmf event reaching the ears, which the
  call layer then passes on (keys_heard, DtmfEntered); the driver reports a
  key when its delayed-steering flag drops. Without and with IRQ/CP wired.
- CPU per second of line while off hook: the driver's hearing thread and the
  simulated chip's receiver together (this process's CPU time over wall
  time), in DTMF mode and in call-progress mode with a tone on the line.

The far end's keys are made here with numpy (Q.23 frequencies, typed in),
not by the gateway's tone engine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from gpiozero.pins.mock import MockFactory

from gateway.lines.gpio import GpioOptions
from gateway.lines.mt8880 import MT8880Line, MT8880Options
from gateway.lines.mt8880_sim import MT8880Simulator, RecordedFarEnd
from gateway.tones import ToneEngine

RATE = 8000
ROWS, COLS = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
KEYS = "123A456B789C*0#D"
ON_S, OFF_S, LEAD_S = 0.1, 0.4, 0.5


def far_keys(count: int) -> np.ndarray:
    t = np.arange(int(ON_S * RATE)) / RATE
    parts = [np.zeros(int(LEAD_S * RATE))]
    for i in range(count):
        row, col = divmod(KEYS.index(KEYS[i % 16]), 4)
        parts += [4000 * (np.sin(2 * np.pi * ROWS[row] * t) + np.sin(2 * np.pi * COLS[col] * t)),
                  np.zeros(int(OFF_S * RATE))]
    return np.concatenate(parts)


class Keys:
    def __init__(self) -> None:
        self.at: list[float] = []

    def ringing(self) -> None:
        pass

    def far_end_left(self, why: str) -> None:
        pass

    def key(self, key: str, duration_ms: int) -> None:
        self.at.append(time.monotonic())

    def fault(self, exc: Exception) -> None:
        raise SystemExit(f"hearing failed: {exc}")


def rig(irq: int | None) -> tuple[MT8880Simulator, MT8880Line]:
    gpio = GpioOptions(hook_relay_pin=17, hook_settle_ms=0, ring_guard_ms=0)
    options = MT8880Options(power_up_ms=5, irq_pin=irq, gpio=gpio, country="de")
    factory = MockFactory()
    sim = MT8880Simulator.for_options(factory, options, relay_pin=17)
    return sim, MT8880Line("bench", options, ToneEngine(), pin_factory=factory)


def key_latency(count: int, irq: int | None) -> list[float]:
    sim, line = rig(irq)
    handler = Keys()
    assert line.ears is not None
    line.ears.handler = handler
    far = RecordedFarEnd(far_keys(count))
    sim.connect_line(lambda: far)
    line.open()
    line.answer()
    started = sim._listening_since
    assert started is not None
    deadline = time.monotonic() + LEAD_S + count * (ON_S + OFF_S) + 2
    while len(handler.at) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    line.close()
    sim.close()
    ends = [started + LEAD_S + i * (ON_S + OFF_S) + ON_S for i in range(count)]
    if len(handler.at) != count:
        raise SystemExit(f"heard {len(handler.at)} of {count} keys")
    return [(a - e) * 1000 for a, e in zip(handler.at, ends, strict=True)]


def cpu_per_second(irq: int | None, tone: bool, seconds: float = 5.0) -> float:
    sim, line = rig(irq)
    t = np.arange(int(seconds * RATE)) / RATE
    audio = 6000 * np.sin(2 * np.pi * 425 * t) if tone else np.zeros(len(t))
    sim.connect_line(lambda: RecordedFarEnd(audio))
    line.open()
    line.off_hook()
    wall, cpu = time.monotonic(), time.process_time()
    time.sleep(seconds)
    used = (time.process_time() - cpu) / (time.monotonic() - wall)
    line.close()
    sim.close()
    return used * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=40)
    args = parser.parse_args()
    print(f"mt8880 far-end key end to its report, {args.keys} keys of 100 ms (ms):")
    for name, irq in (("status polled", None), ("IRQ/CP wired", 23)):
        ms = sorted(key_latency(args.keys, irq))
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"  {name:<14} median {statistics.median(ms):.1f}  p99 {p99:.1f}")
    print("mt8880 hearing CPU while off hook (% of one core, driver and simulated chip):")
    print(f"  dtmf mode, silence: {cpu_per_second(None, False):.1f} %")
    print(f"  call-progress mode, 425 Hz tone: {cpu_per_second(23, True):.1f} %")


if __name__ == "__main__":
    main()
