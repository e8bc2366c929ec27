"""The ``dtmf-gateway`` command line.

Every failure the user can cause ends in one line on standard error and exit
status 2 (1 for a failure of the machine, e.g. a device that will not open);
tracebacks are for bugs only.

Only the command being run has its options built, and each command imports
what it uses when it runs: ``--version`` and ``passwd`` never load numpy,
the tone engine or the drivers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from gateway import __version__

if TYPE_CHECKING:
    from gateway.config import Config

PROG = "dtmf-gateway"

#: Set for this process and what it runs, unless the environment says
#: otherwise. numpy's OpenBLAS starts a thread per core at import, and each
#: spins for a while after every call; the gateway's numpy work is short
#: blocks on threads of its own, so those threads only burn CPU (render: twice
#: the CPU it needs) and, on several cores, bounce the GIL.
SINGLE_THREADED = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

#: Each command's line in ``--help``. A command's options are built only when
#: it is the one being run (render's help quotes the tone engine's limits,
#: selftest's options come from its module, and both cost numpy).
COMMAND_HELP = {
    "render": "write the audio of a key string to a WAV file",
    "serve": "run the HTTP API",
    "passwd": "create a user or change a password",
    "onhook": "put every configured line on hook and exit (the service's ExecStopPost)",
    "detect": "print what the gateway hears in a recording (DTMF, call-progress tones, "
              "voice and silence)",
    "selftest": "bench-test each line's hardware: hook relay and a tone sequence",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage plus error."""

    def error(self, message: str) -> NoReturn:
        # The subcommand's own prog ("dtmf-gateway render") would make two styles.
        self.exit(2, f"{PROG}: error: {message}\n")


class UsageError(Exception):
    """A CLI argument that parsed but cannot be used (exit status 2, as for a
    GatewayError)."""


def fail(message: str, status: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _cmd_render(args: argparse.Namespace) -> int:
    import numpy as np

    from gateway.keys import parse_keys
    from gateway.tones import Timing, ToneEngine, TonePlan, ToneSettings, write_wav

    settings = ToneSettings(
        rate=args.rate, level_dbfs=args.level, twist_db=args.twist, ramp_ms=args.ramp
    )
    engine = ToneEngine(settings)
    plan = TonePlan(parse_keys(args.keys), Timing(args.duration, args.gap))
    # 100 ms of silence either side, so a decoder (and a listener) hears the
    # first and last digit whole.
    lead = engine.silence(100)
    audio = np.concatenate([lead, engine.render(plan), lead])
    try:
        write_wav(args.output, audio, settings.rate)
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror}")
    return 0


#: Every spelling float() reads with a leading minus (-1e3, -inf, -nan), so
#: that ``--level -inf`` reaches the range check as a value instead of being
#: taken for an unknown option (argparse's own pattern knows only -1 and -1.5).
_NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*(e[-+]?\d+)?|\.\d+(e[-+]?\d+)?|inf(inity)?|nan)$", re.IGNORECASE
)


def _add_render_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from gateway.tones import (
        DURATION_MS,
        GAP_MS,
        MIN_LEVEL_DBFS,
        RAMP_MS,
        SAMPLE_RATES,
        TRUE_PEAK_MARGIN_DB,
        TWIST_DB,
        Timing,
        ToneSettings,
        max_level_dbfs,
    )

    timing, tones = Timing(), ToneSettings()
    render = sub.add_parser("render", help=COMMAND_HELP["render"])
    # argparse consults this attribute of the parser that reads the option.
    render._negative_number_matcher = _NEGATIVE_NUMBER
    render.add_argument("keys", metavar="KEYS", help="0-9 * # A-D, pauses w , W")
    render.add_argument("-o", "--output", required=True, metavar="FILE.wav")
    render.add_argument("--rate", type=int, default=tones.rate, metavar="HZ",
                        help=f"sample rate: {', '.join(map(str, SAMPLE_RATES))}"
                        f" (default {tones.rate})")
    render.add_argument("--duration", type=int, default=timing.duration_ms, metavar="MS",
                        help=f"tone on, between its -6 dB points: {DURATION_MS[0]}-"
                        f"{DURATION_MS[1]} (default {timing.duration_ms})")
    render.add_argument("--gap", type=int, default=timing.gap_ms, metavar="MS",
                        help=f"tone off, between -6 dB points: {GAP_MS[0]}-{GAP_MS[1]}"
                        f" (default {timing.gap_ms})")
    render.add_argument("--level", type=float, default=tones.level_dbfs, metavar="DBFS",
                        help=f"low-group level: {MIN_LEVEL_DBFS:g} up to"
                        f" {max_level_dbfs(tones.twist_db):g} at the default twist"
                        f" ({max_level_dbfs(TWIST_DB[1]):g} at {TWIST_DB[1]:+g},"
                        f" {max_level_dbfs(TWIST_DB[0]):g} at {TWIST_DB[0]:+g}), which keeps"
                        f" the true peak {TRUE_PEAK_MARGIN_DB:g} dB below full scale"
                        f" (default {tones.level_dbfs:g})")
    render.add_argument("--twist", type=float, default=tones.twist_db, metavar="DB",
                        help=f"high group above low group: {TWIST_DB[0]:g} to {TWIST_DB[1]:+g}"
                        f" (default {tones.twist_db:g})")
    render.add_argument("--ramp", type=float, default=tones.ramp_ms, metavar="MS",
                        help=f"raised-cosine on/off ramp, centred on the -6 dB points:"
                        f" {RAMP_MS[0]:g}-{RAMP_MS[1]:g} (default {tones.ramp_ms:g})")
    render.set_defaults(func=_cmd_render)


def _load_config(path: str | None) -> Config:
    from gateway.config import load

    return load(path)


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway import logs, wiring
    from gateway.server import serve

    config = _load_config(args.config)
    # Before any pin is opened: a pin with two users is refused, not driven.
    wiring.check(config)
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise UsageError(f"--port {args.port} is outside 0 to 65535")
        config.server.port = args.port
    # Passwords scrubbed from every record; journald's format under systemd.
    logs.setup(args.log_level, sys.stdout)
    if args.cpus == "one":
        # Before serve() starts any thread: each inherits its creator's core.
        _keep_to_one_core()
    return serve(config)


def _keep_to_one_core() -> int | None:
    """Every thread of this process, and every one it starts later, on one
    core: the last it may use (a Pi's interrupts go to core 0). The threads
    of a Python process take turns at the GIL whatever the cores; spread over
    several, each turn also moves between them, which cost the server half
    its answers per second. The core, or None if the kernel refused."""
    import logging

    from gateway import auth

    log = logging.getLogger("gateway.cli")
    allowed = os.sched_getaffinity(0)
    core = max(allowed)
    try:
        os.sched_setaffinity(0, {core})
    except OSError as exc:
        log.warning("serve --cpus one: staying on every core: %s", exc.strerror)
        return None
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), {core})
    # scrypt holds no GIL: the password checks get the other cores.
    auth.check_on_cores(allowed - {core})
    log.info("every thread on core %d (--cpus one), password checks on the others", core)
    return core


def _read_password() -> str:
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if first != getpass.getpass("Again: "):
            raise UsageError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _cmd_passwd(args: argparse.Namespace) -> int:
    from gateway.auth import MIN_PASSWORD_LENGTH, command_names, save_user
    from gateway.errors import ConfigError

    config = _load_config(args.config)
    commands = None
    if args.commands is not None:
        # Checked before the password is asked for: a typo costs no typing.
        try:
            commands = command_names(c.strip() for c in args.commands.split(",") if c.strip())
        except ConfigError as exc:
            raise UsageError(f"--commands {args.commands!r}: {exc}") from None
    password = _read_password()
    shortest = config.auth.min_password_length
    if len(password) < shortest:
        raise UsageError(f"a password needs at least {shortest} characters"
                         + (" (auth.min_password_length)" if shortest != MIN_PASSWORD_LENGTH
                            else ""))
    save_user(config.users_path, args.user, password, commands)
    print(f"user {args.user!r} saved in {config.users_path}")
    return 0


def _cmd_onhook(args: argparse.Namespace) -> int:
    """Open each line (which puts it on hook) and close it again.

    systemd runs this after the service stops for any reason, a SIGKILL or a
    watchdog kill included, when no code of the service could drop a relay."""
    from gateway.errors import LineError
    from gateway.lines import build_line

    config = _load_config(args.config)
    failed = 0
    for line in config.lines:
        built = build_line(line.driver, line.name, line.options, config.tones.settings())
        driver = built.driver
        try:
            driver.open()
            print(f"{line.name}: on hook")
        except (LineError, OSError) as exc:
            failed += 1
            # close() below still releases what open() had claimed (a relay
            # pin); the hardware that failed is named so someone checks it.
            print(f"{line.name}: did not open ({exc}); released what could be, check "
                  "that the line is on hook", file=sys.stderr)
        finally:
            try:
                driver.close()
            except (LineError, OSError) as exc:
                print(f"{line.name}: closing failed: {exc}", file=sys.stderr)
            built.close()
    return 1 if failed else 0


def _cmd_detect(args: argparse.Namespace) -> int:
    """Run the line's detectors over a recording: one event per line, in time order."""
    from gateway.detect import Listener
    from gateway.detect.wav import WavReader

    with WavReader(args.file) as wav:
        listener = Listener(args.country, wav.rate)
        events = [e for block in wav for e in listener.feed(block)]
        events.extend(listener.flush())
    events.sort(key=lambda e: e.t)
    for event in events:
        print(event.to_json() if args.json else f"{event.t:9.3f}  {event.describe()}")
    return 0


def _add_serve_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    serve = sub.add_parser("serve", help=COMMAND_HELP["serve"])
    serve.add_argument("--config", metavar="PATH", help="TOML file (default: one simulated line)")
    serve.add_argument("--host", help="address to listen on (default from config, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from config, 9509; 0 = any free)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    serve.add_argument("--cpus", default="all", choices=["all", "one"],
                       help="one: every thread on one core, the last this process may use "
                       "(what the service does); all: wherever the kernel puts them "
                       "(default)")
    serve.set_defaults(func=_cmd_serve)


def _add_passwd_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from gateway.auth import COMMAND_NAMES, MIN_PASSWORD_LENGTH

    passwd = sub.add_parser(
        "passwd", help=COMMAND_HELP["passwd"],
        description=f"The password (at least {MIN_PASSWORD_LENGTH} characters, or "
        "auth.min_password_length) is read from the terminal, twice, or as one line from "
        "standard input.")
    passwd.add_argument("user", metavar="USER")
    passwd.add_argument("--config", metavar="PATH", help="the users file is beside it")
    passwd.add_argument("--commands", metavar="LIST",
                        help="the commands the user may run, comma-separated, of "
                        f"{', '.join(COMMAND_NAMES)} (default: all; a changed password keeps "
                        "the user's commands)")
    passwd.set_defaults(func=_cmd_passwd)


def _add_onhook_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    onhook = sub.add_parser("onhook", help=COMMAND_HELP["onhook"])
    onhook.add_argument("--config", metavar="PATH", help="TOML file")
    onhook.set_defaults(func=_cmd_onhook)


def _add_detect_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    detect = sub.add_parser("detect", help=COMMAND_HELP["detect"])
    detect.add_argument("file", metavar="FILE.wav", help="16-bit PCM WAV, any rate; the first "
                        "channel is used")
    detect.add_argument("--country", default="us", metavar="CC",
                        help="call-progress tones of this country (default us)")
    detect.add_argument("--json", action="store_true", help="one JSON object per line")
    detect.set_defaults(func=_cmd_detect)


def _add_selftest_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from gateway import selftest

    selftest.add_parser(sub)


_BUILDERS: dict[str, Callable[[argparse._SubParsersAction[_Parser]], None]] = {
    "render": _add_render_parser,
    "serve": _add_serve_parser,
    "passwd": _add_passwd_parser,
    "onhook": _add_onhook_parser,
    "detect": _add_detect_parser,
    "selftest": _add_selftest_parser,
}


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The whole command line; with ``command`` a name, only that command's
    options are built (the others are listed by name and help), with None
    none are (enough for ``--version`` and ``--help``)."""
    parser = _Parser(prog=PROG, description="DTMF into phone calls, Ozeki HTTP API style.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, build in _BUILDERS.items():
        if command in ("*", name):
            build(sub)
        else:
            sub.add_parser(name, help=COMMAND_HELP[name])
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word that is not an option (the
    options before a command take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in SINGLE_THREADED.items():
        os.environ.setdefault(name, value)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from gateway.errors import GatewayError

    try:
        return func(args)
    except (GatewayError, UsageError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
