"""Configuration: one TOML file, validated at load, with defaults for everything.

Each section is a dataclass; bounds live in field metadata (``min``/``max``,
``choices`` for a setting that is one of a few words) so that one builder
checks every section, the drivers' option dataclasses
included, and every error names its key: ``tones.gap_ms: 20 is below the
minimum 50``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.auth import MIN_PASSWORD_LENGTH
from gateway.detect.countries import COUNTRIES
from gateway.errors import ConfigError, GatewayError
from gateway.lines import DRIVERS, driver_spec
from gateway.lines.base import HOOK_FLASH_DEFAULT_MS, HOOK_FLASH_MS
from gateway.notify import check_url
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

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Countries whose call-progress tones the detectors know.
COUNTRY_CODES = tuple(sorted(COUNTRIES))


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = field(default=9509, metadata={"min": 1, "max": 65535})
    #: Client networks allowed to use the API (CIDR); code 307 for others.
    allow: list[str] = field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    #: Client networks refused even when ``allow`` matches.
    deny: list[str] = field(default_factory=list)
    #: A request waiting for its line holds one of these, so there are enough
    #: for full queues on a few lines with some left for ListActiveCalls and health.
    threads: int = field(default=64, metadata={"min": 4, "max": 512})
    #: Connections open at once; beyond it the server stops accepting until one
    #: closes. A half-sent request holds one, not a thread, so this is what a
    #: flood of slow clients uses up. At most 900: waitress's loop watches its
    #: sockets with select(), which cannot see a descriptor numbered 1024 or more.
    connection_limit: int = field(default=500, metadata={"min": 10, "max": 900})
    #: A connection is closed when its request has not fully arrived this long
    #: after its first byte, or when it has been idle this long; whole seconds.
    #: A command being carried out is never cut short by it.
    channel_timeout_s: int = field(default=30, metadata={"min": 1, "max": 3600})
    max_request_bytes: int = field(default=65536, metadata={"min": 1024, "max": 10485760})
    #: Where IncomingCall notifications go; empty: incoming calls are not answered.
    incoming_url: str = ""
    #: Networks notifications may reach although they are loopback,
    #: link-local or this machine's own (CIDR); the gateway's own API never.
    notify_allow: list[str] = field(default_factory=list)
    #: Timeout of every outbound notification request, in seconds.
    notify_timeout_s: float = field(default=5.0, metadata={"min": 0.1, "max": 60.0})
    #: How long an HTTP request waits for its line before giving up, in seconds.
    command_timeout_s: float = field(default=300.0, metadata={"min": 1.0, "max": 3600.0})

    def __post_init__(self) -> None:
        for name in ("allow", "deny", "notify_allow"):
            for net in getattr(self, name):
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError:
                    raise ValueError(f"{name}: {net!r} is not a CIDR network") from None
        if self.incoming_url:
            try:
                check_url(self.incoming_url)
            except ValueError as exc:
                raise ValueError(f"incoming_url: {exc}") from None


@dataclass
class AuthConfig:
    #: Users file; relative paths are beside the config file. Default users.toml.
    users_file: str = "users.toml"
    #: Failed logins from one address before it is locked out.
    lockout_failures: int = field(default=5, metadata={"min": 1, "max": 1000})
    lockout_seconds: float = field(default=300.0, metadata={"min": 0.0, "max": 86400.0})
    #: The shortest password ``passwd`` accepts. Below 8 only to keep an
    #: existing client's password (Ozeki's examples use six characters); the
    #: service warns at start-up while it is.
    min_password_length: int = field(default=MIN_PASSWORD_LENGTH, metadata={"min": 4, "max": 128})

    def __post_init__(self) -> None:
        try:
            Path(self.users_file).expanduser()
        except RuntimeError:
            raise ValueError(f"users_file: {self.users_file!r}: no home directory to expand "
                             "'~' to") from None


@dataclass
class CallsConfig:
    """``[calls]``: how long a call may hold its line."""

    #: A call is hung up this long after it was answered, whatever it is doing:
    #: a client that forgets a call must not hold the line for ever.
    max_call_s: float = field(default=3600.0, metadata={"min": 1.0, "max": 86400.0})
    #: A call that runs no script is hung up when no command has used it for
    #: this long (0: never).
    idle_s: float = field(default=300.0, metadata={"min": 0.0, "max": 86400.0})
    #: An OzML script that would hold the line longer than this (its keys,
    #: delays and speech added up) is refused before anything of it runs.
    max_script_s: float = field(default=3600.0, metadata={"min": 1.0, "max": 86400.0})
    #: Where Record's recordings go (beside the config file when relative);
    #: the service's clean-up deletes them after 30 days, as it does the
    #: simulated line's.
    record_dir: str = "recordings"
    #: Where Play's local ``AudioFile`` paths are (beside the config file
    #: when relative); nothing outside it is played.
    media_dir: str = "media"
    #: The largest audio file Play reads or fetches (20 MiB: 20 minutes of
    #: 8 kHz 16-bit mono, 2 minutes of 48 kHz stereo).
    max_media_bytes: int = field(default=20 * 1024 * 1024,
                                 metadata={"min": 1024, "max": 512 * 1024 * 1024})


#: Who may read ``/healthz`` and ``/metrics``.
HEALTH_ACCESS = ("on", "loopback", "off")


@dataclass
class HealthConfig:
    #: ``GET /healthz`` (no password): "on" (clients ``server.allow`` admits),
    #: "loopback" (this machine only), or "off".
    healthz: str = field(default="on", metadata={"choices": HEALTH_ACCESS})
    #: ``GET /metrics`` in Prometheus text format: "on", "loopback" or "off".
    metrics: str = field(default="on", metadata={"choices": HEALTH_ACCESS})
    #: The service watchdog calls a line stuck when one command (or one step
    #: of an OzML script) runs longer than this. The longest a healthy one
    #: takes is a Call dialling 128 keys at the slowest timing: about 1030 s.
    stuck_after_s: float = field(default=1800.0, metadata={"min": 10.0, "max": 86400.0})


@dataclass
class TonesConfig:
    duration_ms: int = field(
        default=100, metadata={"min": DURATION_MS[0], "max": DURATION_MS[1]}
    )
    gap_ms: int = field(default=100, metadata={"min": GAP_MS[0], "max": GAP_MS[1]})
    #: Level of the low-group tone; the high group is ``twist_db`` louder. Its
    #: maximum depends on the twist, so __post_init__ checks it.
    level_dbfs: float = field(default=-12.0, metadata={"min": MIN_LEVEL_DBFS})
    twist_db: float = field(default=2.0, metadata={"min": TWIST_DB[0], "max": TWIST_DB[1]})
    ramp_ms: float = field(default=4.0, metadata={"min": RAMP_MS[0], "max": RAMP_MS[1]})
    rate: int = 8000
    #: Whose call-progress tones a line that hears expects (a line's own
    #: ``country`` says otherwise for that line).
    country: str = field(default="us", metadata={"choices": COUNTRY_CODES})

    def __post_init__(self) -> None:
        if self.rate not in SAMPLE_RATES:
            raise ValueError(f"rate: {self.rate} is not one of {', '.join(map(str, SAMPLE_RATES))}")
        loudest = max_level_dbfs(self.twist_db)
        if self.level_dbfs > loudest:
            raise ValueError(
                f"level_dbfs: {self.level_dbfs} is above the maximum {loudest} at twist_db "
                f"{self.twist_db} (the true peak of both tones {TRUE_PEAK_MARGIN_DB:g} dB "
                "below full scale)"
            )
        self.settings()

    @property
    def timing(self) -> Timing:
        return Timing(self.duration_ms, self.gap_ms)

    def settings(self, rate: int | None = None) -> ToneSettings:
        return ToneSettings(rate or self.rate, self.level_dbfs, self.twist_db, self.ramp_ms)


@dataclass
class LineConfig:
    name: str
    driver: str
    #: Commands that may wait for this line; more are refused (code 802).
    queue_size: int = field(default=32, metadata={"min": 1, "max": 1000})
    #: The driver's own options dataclass, built from the table's other keys.
    options: Any = None


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tones: TonesConfig = field(default_factory=TonesConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    lines: list[LineConfig] = field(default_factory=list)
    #: Directory relative paths are resolved against (the config file's).
    base_dir: Path = field(default_factory=Path.cwd)
    source: Path | None = None

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def users_path(self) -> Path:
        return self.path(self.auth.users_file)


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return build(typing.cast(type[Any], tp), value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        # A table of tables under names of the user's choosing (a number).
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        _, item = typing.get_args(tp)
        return {k: _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp, True)
    if not ok:
        raise ConfigError(f"{where}: {value!r} is not {_type_name(tp)}")
    if tp is float and not math.isfinite(value):
        # TOML's nan would pass every min/max comparison below.
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return float(value) if tp is float else value


def build(cls: type[T], table: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a TOML table, checking names, types and bounds."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    for key in table:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}{key}: unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{prefix}{name}: missing")
            continue
        value = _coerce(table[name], hints[name], f"{prefix}{name}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            words = ", ".join('""' if c == "" else str(c) for c in choices)
            raise ConfigError(f"{prefix}{name}: {value!r} is not one of {words}")
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is not None and value < low:
            raise ConfigError(f"{prefix}{name}: {value} is below the minimum {low}")
        if high is not None and value > high:
            raise ConfigError(f"{prefix}{name}: {value} is above the maximum {high}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except GatewayError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None
    except ValueError as exc:
        # __post_init__ messages start with the field they are about.
        raise ConfigError(f"{prefix}{exc}" if prefix else str(exc)) from None


def _expand_user(value: str, where: str) -> Path:
    try:
        return Path(value).expanduser()
    except RuntimeError:
        raise ConfigError(f"{where}: {value!r}: no home directory to expand '~' to") from None


def _resolve_paths(options: Any, base_dir: Path, where: str) -> None:
    """Make option fields marked ``{"path": True}`` absolute, beside the config file."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if f.metadata.get("path") and isinstance(value, str) and value:
            p = _expand_user(value, f"{where}.{f.name}")
            setattr(options, f.name, str(p if p.is_absolute() else base_dir / p))


def _build_line(table: Any, index: int, seen: set[str], base_dir: Path) -> LineConfig:
    where = f"line[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    common = {k: table[k] for k in ("name", "driver", "queue_size") if k in table}
    line = build(LineConfig, common, where)
    if not line.name or not line.name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}.name: {line.name!r} must be letters, digits, - and _")
    if line.name in seen:
        raise ConfigError(f"{where}.name: {line.name!r} is used by another line")
    seen.add(line.name)
    if line.driver not in DRIVERS:
        raise ConfigError(
            f"{where}.driver: unknown driver {line.driver!r} (known: {', '.join(sorted(DRIVERS))})"
        )
    rest = {k: v for k, v in table.items() if k not in common}
    line.options = build(driver_spec(line.driver).options, rest, where)
    _resolve_paths(line.options, base_dir, where)
    return line


def from_mapping(data: dict[str, Any], base_dir: Path | None = None) -> Config:
    """A validated Config from parsed TOML (or a test's dict)."""
    known = {"server", "auth", "tones", "health", "calls", "line"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown section (known: {', '.join(sorted(known))})")
    for key in ("server", "auth", "tones", "health", "calls"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{key}: expected a table")
    lines_data = data.get("line", [])
    if not isinstance(lines_data, list):
        raise ConfigError("line: expected [[line]] tables")
    base_dir = base_dir or Path.cwd()
    seen: set[str] = set()
    tones = build(TonesConfig, data.get("tones", {}), "tones")
    lines = [_build_line(t, i, seen, base_dir) for i, t in enumerate(lines_data)]
    if not lines:
        lines = [_build_line({"name": "line1", "driver": "simulated"}, 0, seen, base_dir)]
    for line in lines:
        # A line that hears and names no country expects [tones] country's tones.
        if getattr(line.options, "country", None) == "":
            line.options.country = tones.country
        # And a hook flash as long as its country's exchanges expect.
        timing = getattr(line.options, "call_timing", None)
        gpio = getattr(line.options, "gpio", None)
        if timing is not None and gpio is not None and gpio.ring_timeout_ms is not None:
            log.warning("%s: gpio.ring_timeout_ms is deprecated: write call_timing = "
                        "{ ring_timeout_ms = %d } instead", line.name, gpio.ring_timeout_ms)
            timing.ring_timeout_ms, gpio.ring_timeout_ms = gpio.ring_timeout_ms, None
        if timing is not None and not timing.flash_ms:
            country = getattr(line.options, "country", None) or tones.country
            timing.flash_ms = HOOK_FLASH_MS.get(country, HOOK_FLASH_DEFAULT_MS)
    return Config(
        server=build(ServerConfig, data.get("server", {}), "server"),
        auth=build(AuthConfig, data.get("auth", {}), "auth"),
        tones=tones,
        health=build(HealthConfig, data.get("health", {}), "health"),
        calls=build(CallsConfig, data.get("calls", {}), "calls"),
        lines=lines,
        base_dir=base_dir,
    )


def load(path: str | Path | None) -> Config:
    """Load and validate ``path``; ``None`` gives the defaults (one simulated line)."""
    if path is None:
        return from_mapping({})
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config = from_mapping(data, path.resolve().parent)
    config.source = path
    return config
