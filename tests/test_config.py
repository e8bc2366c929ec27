import dataclasses
import importlib
import re
import typing
from pathlib import Path

import pytest

from gateway.config import Config, from_mapping, load
from gateway.errors import ConfigError
from tests.support import EXAMPLE_CONFIG

EXAMPLE = EXAMPLE_CONFIG


def test_no_file_gives_one_simulated_line() -> None:
    config = load(None)
    assert [(line.name, line.driver) for line in config.lines] == [("line1", "simulated")]
    assert config.server.port == 9509 and config.server.host == "127.0.0.1"
    assert config.tones.timing.duration_ms == 100


def test_example_file_loads_and_matches_the_defaults() -> None:
    """The example documents the defaults: loading it changes nothing but paths."""
    example = load(EXAMPLE)
    default = from_mapping({}, base_dir=EXAMPLE.parent.resolve())
    assert example.server == default.server
    assert example.auth == default.auth
    assert example.tones == default.tones
    assert example.health == default.health
    assert example.calls == default.calls
    assert example.lines[0].options == default.lines[0].options
    assert example.users_path == EXAMPLE.parent.resolve() / "users.toml"


def _option_names(cls: type, path: str, into: dict[str, str]) -> dict[str, str]:
    """Every key of an options dataclass and of the tables inside it: name -> dotted path."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        into.setdefault(f.name, f"{path}.{f.name}")
        for inner in (hints[f.name], *typing.get_args(hints[f.name])):
            for table in (inner, *typing.get_args(inner)):
                if dataclasses.is_dataclass(table) and isinstance(table, type):
                    _option_names(table, f"{path}.{f.name}", into)
    return into


def test_the_example_names_every_setting() -> None:
    """Whoever installs the box reads the example, not the code: each key of
    every section and every driver is in it (set, commented out, or as a
    table's heading)."""
    from gateway.lines import DRIVERS

    text = EXAMPLE.read_text()
    named = set(re.findall(r"([a-z_0-9]+)\s*=", text)) | set(
        re.findall(r"\[+line\.(?:[a-z]+\.)*([a-z_]+)", text))
    config = from_mapping({})
    options: dict[str, str] = {}
    for section in ("server", "auth", "tones", "calls", "health"):
        _option_names(type(getattr(config, section)), section, options)
    for driver, (module, _, options_class) in DRIVERS.items():
        _option_names(getattr(importlib.import_module(module), options_class), driver, options)
    missing = sorted(path for name, path in options.items() if name not in named)
    assert not missing


def test_relative_paths_are_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text(
        '[[line]]\nname = "a"\ndriver = "simulated"\nrecord_dir = "rec"\n'
    )
    config = load(tmp_path / "g.toml")
    assert config.lines[0].options.record_dir == str(tmp_path / "rec")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tones": {"gap_ms": 20}}, "tones.gap_ms: 20 is below the minimum 50"),
        ({"tones": {"duration_ms": 2500}}, "tones.duration_ms: 2500 is above the maximum 2000"),
        ({"tones": {"duration_ms": "100"}}, "tones.duration_ms: '100' is not an integer"),
        ({"tones": {"rate": 11025}}, "tones.rate: 11025 is not one of 8000, 16000"),
        ({"tones": {"level_dbfs": -3.0}},
         "tones.level_dbfs: -3.0 is above the maximum -8.08 at twist_db 2.0"),
        ({"server": {"port": 0}}, "server.port: 0 is below the minimum 1"),
        ({"server": {"prot": 1}}, "server.prot: unknown key (known keys: allow,"),
        ({"server": {"allow": ["10.0.0.0/33"]}}, "server.allow: '10.0.0.0/33' is not a CIDR"),
        ({"server": {"allow": "10.0.0.0/8"}}, "server.allow: expected a list of strings"),
        ({"server": 5}, "server: expected a table"),
        ({"srever": {}}, "srever: unknown section"),
        ({"health": {"metrics": "lan"}}, "health.metrics: 'lan' is not one of on, loopback, off"),
        ({"health": {"healthz": False}}, "health.healthz: False is not a string"),
        ({"line": [{"name": "a"}]}, "line[0].driver: missing"),
        ({"line": [{"name": "a", "driver": "isdn"}]}, "line[0].driver: unknown driver 'isdn'"),
        (
            {"line": [{"name": "a", "driver": "simulated"}, {"name": "a", "driver": "simulated"}]},
            "line[1].name: 'a' is used by another line",
        ),
        ({"line": [{"name": "a b", "driver": "simulated"}]}, "line[0].name: 'a b' must be"),
        (
            {"line": [{"name": "a", "driver": "simulated", "time_scale": -1}]},
            "line[0].time_scale: -1.0 is below the minimum 0.0",
        ),
        (
            {"line": [{"name": "a", "driver": "simulated", "routing": {"caller_channels": [2]}}]},
            "line[0].routing.caller_channels: channel 2 does not exist on a 1-channel output",
        ),
        (
            {"line": [{"name": "a", "driver": "simulated", "colour": 1}]},
            "line[0].colour: unknown key",
        ),
    ],
)
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(data)
    assert str(info.value).startswith(message), str(info.value)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: "):
        load(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "nope.toml")


def test_config_path_helper(tmp_path: Path) -> None:
    config = Config(base_dir=tmp_path)
    assert config.path("x/y") == tmp_path / "x/y"
    assert config.path("/abs") == Path("/abs")
