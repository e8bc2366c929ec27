"""The shortest tone and gap multimon-ng decodes without error, against Q.24's 40/50 ms.

The gateway refuses tones under 40 ms and gaps under 50 ms (ITU-T Q.24's
minimum a receiver must accept). This finds how far below that a real
decoder still hears every key: strings of all sixteen keys in shuffled
order, with repeated keys (which only the gap separates), rendered by the
tone engine at 8 kHz and the default level, twist and ramp, decoded by
multimon-ng. A length "decodes" when every string decodes exactly at that
length and at every longer one tried.

    python bench/bench_min_timing.py [--strings N]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.keys import KEYS
from gateway.tones import DURATION_MS, GAP_MS, Samples, ToneEngine, ToneSettings
from tests.support import multimon_decode

RATE = 8000
TRIED_MS = range(10, 61)


def key_strings(count: int) -> list[str]:
    rng = random.Random(24)
    strings = []
    for _ in range(count):
        keys = list(KEYS * 3)
        rng.shuffle(keys)
        # Every key also twice in a row somewhere: only the gap parts them.
        for key in KEYS:
            at = keys.index(key)
            keys.insert(at, key)
        strings.append("".join(keys))
    return strings


def render(engine: ToneEngine, keys: str, on_ms: int, off_ms: int) -> Samples:
    """Like ToneEngine.render, without TonePlan's lower bounds."""
    on, off = engine.settings.samples(on_ms), engine.settings.samples(off_ms)
    silence = np.zeros(off, dtype=np.int16)
    return np.concatenate([part for key in keys for part in (engine.burst(key, on), silence)])


def decodes(engine: ToneEngine, strings: list[str], on_ms: int, off_ms: int) -> bool:
    return all(multimon_decode(render(engine, s, on_ms, off_ms), RATE) == s for s in strings)


def shortest(ok: dict[int, bool]) -> int | None:
    """The smallest length from which every longer one tried decoded too."""
    best = None
    for ms in sorted(ok, reverse=True):
        if not ok[ms]:
            break
        best = ms
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strings", type=int, default=3, help="key strings per length")
    args = parser.parse_args()
    engine = ToneEngine(ToneSettings(rate=RATE))
    strings = key_strings(args.strings)
    digits = sum(len(s) for s in strings)
    low_on, low_off = DURATION_MS[0], GAP_MS[0]
    tone = shortest({ms: decodes(engine, strings, ms, low_off) for ms in TRIED_MS})
    gap = shortest({ms: decodes(engine, strings, low_on, ms) for ms in TRIED_MS})
    both = shortest({ms: decodes(engine, strings, ms, ms) for ms in TRIED_MS})

    def show(ms: int | None, minimum: int) -> str:
        if ms is None:
            return f"none from {TRIED_MS.stop - 1} ms down"
        return f"{ms} ms ({minimum - ms} ms under the {minimum} ms minimum)"

    print(f"shortest tone multimon-ng decodes without error, {low_off} ms gaps "
          f"({digits} digits per length): {show(tone, low_on)}")
    print(f"shortest gap multimon-ng decodes without error, {low_on} ms tones: "
          f"{show(gap, low_off)}")
    print(f"shortest equal tone and gap multimon-ng decodes without error: {both} ms")


if __name__ == "__main__":
    main()
