"""``dtmf-gateway selftest``: bench bring-up of each configured line's hardware.

First the wiring: what the Pi's device tree and config.txt show is active,
and whether any configured pin has a second user (the HAT, a bus, another
line); with one, no line is opened. Then, for each line: open the hardware,
cycle the hook (off hook, on hook), go off hook again, wait the line's
dial-tone time, send a test sequence, go on hook and close. Every step is
reported pass or fail with the driver's own words; the line is put on hook
and closed whatever happened. Only the
:class:`~gateway.lines.base.LineDriver` interface is used, so it works for
every driver.

The test sequence goes out on the line: on a live exchange line the digits
are dialled. Bring a line up on a line simulator or a PBX extension, or pick
harmless ``--keys``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from gateway import wiring
from gateway.config import Config, load
from gateway.errors import ConfigError
from gateway.keys import parse_keys, tone_keys
from gateway.lines import LineDriver, build_line
from gateway.lines.base import HookState
from gateway.tones import TonePlan

#: Every key once, in keypad order: a decoder on the far end shows at a
#: glance which row or column is missing.
DEFAULT_KEYS = "123A456B789C*0#D"


@dataclass
class Step:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class LineReport:
    name: str
    driver: str
    steps: list[Step] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


def _describe(status: dict[str, object], prefix: str = "") -> list[str]:
    """A driver's status as ``key=value`` words, minus what the steps show."""
    words = []
    for key, value in status.items():
        if key in ("driver", "hook", "fault") or value is None:
            continue
        if isinstance(value, dict):
            words += _describe(value, f"{prefix}{key}.")
        else:
            words.append(f"{prefix}{key}={value}")
    return words


def check_line(driver: LineDriver, plan: TonePlan,
               wait: Callable[[float], None] = time.sleep) -> LineReport:
    """Run the bring-up steps on ``driver``; never raises for a hardware fault."""
    report = LineReport(driver.name, driver.driver_name)

    def step(name: str, action: Callable[[], Any], expect: HookState | None = None) -> bool:
        started = time.monotonic()
        try:
            detail = action()
        except Exception as exc:
            report.steps.append(Step(name, False, f"{type(exc).__name__}: {exc}"))
            return False
        if expect is not None and driver.hook is not expect:
            report.steps.append(Step(name, False, f"the driver reports {driver.hook.value}"))
            return False
        if detail is None and time.monotonic() - started >= 0.05:
            detail = f"{time.monotonic() - started:.2f} s"
        report.steps.append(Step(name, True, str(detail or "")))
        return True

    def play() -> str:
        started = time.monotonic()
        driver.emit(plan)
        return (f"{tone_keys(plan.symbols)}: {plan.seconds:.2f} s of tones, "
                f"returned after {time.monotonic() - started:.2f} s")

    def open_() -> str:
        driver.open()
        return " ".join(_describe(driver.status()))

    sequence: list[tuple[str, Callable[[], Any], HookState | None]] = [
        ("off hook", driver.off_hook, HookState.OFF_HOOK),
        ("on hook", driver.on_hook, HookState.ON_HOOK),
        ("off hook", driver.off_hook, HookState.OFF_HOOK),
        ("dial tone wait", lambda: wait(driver.call_timing.dial_tone_ms / 1000), None),
        ("tones", play, None),
        ("on hook", driver.on_hook, HookState.ON_HOOK),
    ]
    if step("open", open_, HookState.ON_HOOK):
        try:
            for name, action, expect in sequence:
                if not step(name, action, expect):
                    break
        finally:
            try:
                driver.on_hook()
            except Exception as exc:
                report.steps.append(Step("on hook", False, f"{type(exc).__name__}: {exc}"))
    step("close", driver.close)
    return report


def check_wiring(config: Config, root: Path | None = None) -> LineReport:
    """What occupies pins on this Pi, and every configured pin's second user, if any."""
    report = LineReport("wiring", "device tree, config.txt")
    found = wiring.active(root)
    seen = "; ".join(f.describe() for f in found)
    report.steps.append(Step("in use", True, seen or "no Raspberry Pi device tree: no HAT"))
    problems = wiring.collisions(config, found=found)
    pins = sum(len(wiring.line_claims(line)) for line in config.lines)
    report.steps.append(Step("pins", not problems,
                             "; ".join(problems) or f"{pins} line pin(s), each with one user"))
    return report


def print_report(report: LineReport, out: IO[str]) -> None:
    print(f"{report.name} ({report.driver})", file=out)
    for s in report.steps:
        print(f"  {'PASS' if s.ok else 'FAIL'}  {s.name:<15} {s.detail}".rstrip(), file=out)
    print(f"{report.name}: {'PASS' if report.passed else 'FAIL'}", file=out)


def run(config: Config, names: Sequence[str] = (), keys: str = DEFAULT_KEYS,
        out: IO[str] | None = None, root: Path | None = None) -> int:
    """Self-test the named lines (all when none); 0 when every line passes, else 1.

    ``root`` is where the device tree and config.txt are read (default ``/``)."""
    out = out or sys.stdout
    known = [line.name for line in config.lines]
    for name in names:
        if name not in known:
            raise ConfigError(f"no line {name!r} in the configuration (lines: {', '.join(known)})")
    lines = [line for line in config.lines if not names or line.name in names]
    plan = TonePlan(parse_keys(keys), config.tones.timing)
    # Every configured line counts, tested or not: the service opens them all.
    pins = check_wiring(config, root)
    print_report(pins, out)
    if not pins.passed:
        print("no line opened: give each pin one user (firmware-notes/README.md, \"Pins\")",
              file=out)
        return 1
    reports = []
    for line in lines:
        built = build_line(line.driver, line.name, line.options, config.tones.settings())
        try:
            report = check_line(built.driver, plan)
        finally:
            built.close()
        print_report(report, out)
        out.flush()
        reports.append(report)
    failed = [r.name for r in reports if not r.passed]
    summary = f"{len(reports)} line(s): {len(reports) - len(failed)} passed"
    print(f"{summary}, {len(failed)} failed ({', '.join(failed)})" if failed else summary,
          file=out)
    return 1 if failed else 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind through check_line's finally: the line goes on hook and closes.
    raise KeyboardInterrupt


def _cmd(args: argparse.Namespace) -> int:
    config = load(args.config)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(config, args.line or (), args.keys)
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_parser(sub: Any) -> None:
    """Register ``selftest`` on the CLI's subparsers."""
    parser = sub.add_parser(
        "selftest", help="bench-test each line's hardware: hook relay and a tone sequence",
        description="Opens each configured line, cycles the hook, sends a test sequence and "
        "prints PASS or FAIL per step. The digits go out on the line: use a line simulator "
        "or a PBX extension, not a live exchange line.")
    parser.add_argument("--config", metavar="PATH", help="TOML file (default: one simulated line)")
    parser.add_argument("--line", action="append", metavar="NAME",
                        help="test only this line (repeat for more)")
    parser.add_argument("--keys", default=DEFAULT_KEYS, metavar="KEYS",
                        help=f"the test sequence (default {DEFAULT_KEYS})")
    parser.set_defaults(func=_cmd)
