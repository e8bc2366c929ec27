"""Property tests (hypothesis): the key parser, the tone engine and the config
loader against arbitrary input.

Example counts are modest so the default run stays quick; the decoding test
is the slow one (one multimon-ng run per example).
"""

from __future__ import annotations

import dataclasses
import math
import string
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from gateway.config import AuthConfig, Config, ServerConfig, TonesConfig, from_mapping
from gateway.errors import ConfigError, KeyStringError
from gateway.keys import (
    KEYS,
    MAX_LENGTH,
    PAUSES_MS,
    Pause,
    Tone,
    format_keys,
    parse_keys,
    tone_keys,
)
from gateway.lines import DRIVERS, driver_spec
from gateway.tones import (
    DURATION_MS,
    FULL_SCALE,
    GAP_MS,
    SAMPLE_RATES,
    Timing,
    ToneEngine,
    TonePlan,
    ToneSettings,
)
from tests.support import multimon_decode, needs_multimon

# What a key string may hold: the keys, the pauses, and f/F for a hook flash.
VALID_CHARS = KEYS + "abcd" + "".join(PAUSES_MS) + "fF"
valid_keys = st.text(alphabet=KEYS + "abcd" + "".join(PAUSES_MS), min_size=1,
                     max_size=MAX_LENGTH)
# Strings with at least one digit: the ones a decoder can say anything about.
digit_strings = st.text(alphabet=KEYS + "abcd" + "w,", min_size=1, max_size=24).filter(
    lambda s: any(c not in PAUSES_MS for c in s)
)


# -- the key parser ----------------------------------------------------------------


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_keystringerror(text: str) -> None:
    try:
        symbols = parse_keys(text)
    except KeyStringError as exc:
        # The position names the first character that is not a key (0: the
        # string as a whole is wrong: empty or too long).
        if exc.position:
            bad = text[exc.position - 1]
            assert bad not in VALID_CHARS
            assert all(c in VALID_CHARS for c in text[: exc.position - 1])
        else:
            assert not text or len(text) > MAX_LENGTH
        return
    assert 1 <= len(text) <= MAX_LENGTH
    assert len(symbols) == len(text)


@settings(max_examples=300)
@given(valid_keys)
def test_valid_strings_round_trip(text: str) -> None:
    symbols = parse_keys(text)
    assert tone_keys(symbols) == "".join(
        c.upper() for c in text if c not in PAUSES_MS
    )
    assert [s.ms for s in symbols if isinstance(s, Pause)] == [
        PAUSES_MS[c] for c in text if c in PAUSES_MS
    ]
    # The canonical form parses back to the same symbols.
    assert parse_keys(format_keys(symbols)) == symbols


@given(valid_keys, st.text(min_size=1, max_size=3).filter(
    lambda s: any(c not in VALID_CHARS for c in s)), st.data())
def test_one_bad_character_anywhere_is_found(text: str, bad: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(text)))
    dirty = text[:at] + bad + text[at:]
    assume(len(dirty) <= MAX_LENGTH)
    with pytest.raises(KeyStringError) as info:
        parse_keys(dirty)
    first_bad = next(i for i, c in enumerate(dirty) if c not in VALID_CHARS)
    assert info.value.position == first_bad + 1


# -- the tone engine -------------------------------------------------------------


@st.composite
def tone_settings(draw: st.DrawFn) -> ToneSettings:
    rate = draw(st.sampled_from(SAMPLE_RATES))
    twist = draw(st.floats(-3.0, 3.0))
    ramp = draw(st.floats(1.0, 5.0))
    # The loudest level with this twist (both peaks together 1 dB below full
    # scale, rounded down to 0.01 dB), and anything below.
    loudest = math.floor(100 * (-1 - 20 * math.log10(1 + 10 ** (twist / 20)))) / 100
    level = draw(st.floats(-60.0, loudest))
    return ToneSettings(rate, level, twist, ramp)


timings = st.builds(Timing, st.integers(*DURATION_MS), st.integers(*GAP_MS))


@settings(max_examples=60, deadline=None)
@given(tone_settings(), st.text(alphabet=VALID_CHARS, min_size=1, max_size=16), timings)
def test_render_never_clips_and_has_the_plan_length(
    tone: ToneSettings, text: str, timing: Timing
) -> None:
    plan = TonePlan(parse_keys(text), timing)
    audio = ToneEngine(tone).render(plan)
    assert audio.dtype == np.int16
    assert len(audio) == round(plan.seconds * tone.rate)
    # A sample that overflowed int16 would wrap to the other sign, beyond this.
    ceiling = math.ceil((tone.low_amplitude + tone.high_amplitude) * FULL_SCALE)
    assert int(np.abs(audio.astype(np.int32)).max(initial=0)) <= min(ceiling, FULL_SCALE)
    # Every digit is followed by its gap at -6 dB, silent but for the half
    # ramp either side: gap - ramp of silence, less a sample for each edge's
    # rounding to its nearest sample.
    if isinstance(plan.symbols[-1], Tone):
        tail = math.floor((timing.gap_ms - tone.ramp_ms) * tone.rate / 1000) - 2
        assert not audio[len(audio) - tail :].any()


@needs_multimon
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digit_strings, st.sampled_from(SAMPLE_RATES))
def test_random_strings_decode_at_the_minimum_timing(text: str, rate: int) -> None:
    """Q.24's shortest tone and gap (40/50 ms): what is sent is what is heard."""
    plan = TonePlan(parse_keys(text), Timing(DURATION_MS[0], GAP_MS[0]))
    audio = ToneEngine(ToneSettings(rate=rate)).render(plan)
    assert multimon_decode(audio, rate) == tone_keys(plan.symbols)


# -- the config loader -------------------------------------------------------------

TRICKY_STRINGS = ["", "~", "~nosuchuser-x/y", "/dev/null", "..", "a\0b", "line1", "simulated",
                  "0.0.0.0/0", "10.0.0.0/33", "::/0", "nan", "\udcff"]
# What TOML can hold (datetimes aside): scalars, arrays and tables.
toml_scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(TRICKY_STRINGS)
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


def mostly(usual: st.SearchStrategy[Any], *rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` nine times in ten, else one of ``rare``."""
    return st.integers(0, 9).flatmap(lambda n: usual if n else st.one_of(*rare))


def value_for(tp: Any, low: Any = None, high: Any = None) -> st.SearchStrategy[Any]:
    """Mostly values a user would write for ``tp`` (in its bounds), sometimes
    anything TOML can hold: the loader must get past the first key to meet
    the interesting ones."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return value_for(args[0], low, high)
    if dataclasses.is_dataclass(tp):
        return table_for(typing.cast(type[Any], tp))
    if origin is list:
        return st.lists(value_for(typing.get_args(tp)[0]), max_size=4) | toml_values
    wild: dict[Any, st.SearchStrategy[Any]] = {
        int: st.integers(),
        # TOML spells these nan, inf and -inf; they pass a naive bounds check.
        float: st.sampled_from([math.nan, math.inf, -math.inf]) | st.floats(),
        bool: st.booleans(),
        str: st.sampled_from(TRICKY_STRINGS) | st.text(max_size=20),
    }
    if tp is int:
        usual: st.SearchStrategy[Any] = st.integers(
            low if low is not None else -10, high if high is not None else 100_000)
    elif tp is float:
        usual = st.floats(low if low is not None else -1e6, high if high is not None else 1e6)
    else:
        usual = wild.get(tp, toml_values)
    return mostly(usual, wild.get(tp, toml_values), toml_values)


def table_for(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    known = {f.name: value_for(hints[f.name], f.metadata.get("min"), f.metadata.get("max"))
             for f in dataclasses.fields(cls) if f.init}
    return mostly(
        st.fixed_dictionaries({}, optional=known),
        st.dictionaries(st.sampled_from([*known, "unknown_key"]), toml_values, max_size=3),
    )


@st.composite
def line_tables(draw: st.DrawFn) -> Any:
    driver = draw(st.sampled_from([*DRIVERS, "isdn"]) | st.text(max_size=6))
    table: dict[str, Any] = {}
    if driver in DRIVERS:
        table = dict(draw(table_for(driver_spec(driver).options)))
    common = draw(st.fixed_dictionaries({
        "name": mostly(st.sampled_from(["line1", "a-b_2", "L3"]),
                       st.sampled_from(["a b", ""]), st.text(max_size=6), toml_scalars),
    }, optional={"queue_size": mostly(st.integers(1, 1000), st.integers(), toml_scalars)}))
    if not draw(st.integers(0, 19)):
        del common["name"]
    table.update(common)
    if draw(st.integers(0, 9)):
        table["driver"] = driver
    return table if draw(st.integers(0, 9)) else draw(toml_values)


_structured = st.fixed_dictionaries({}, optional={
    "server": table_for(ServerConfig),
    "auth": table_for(AuthConfig),
    "tones": table_for(TonesConfig),
    "line": st.lists(line_tables(), max_size=3),
})
config_documents = mostly(
    _structured,
    st.dictionaries(st.sampled_from(["server", "auth", "tones", "line", "lines"]), toml_values,
                    max_size=3),
)


def finite_everywhere(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(finite_everywhere(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, list):
        return all(finite_everywhere(v) for v in value)
    return True


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_documents)
# Found by this test: NaN slipped past every min/max check, and a path under
# an unknown user's home raised RuntimeError from Path.expanduser.
@example({"tones": {"level_dbfs": math.nan}})
@example({"server": {"command_timeout_s": math.nan}})
@example({"line": [{"name": "a", "driver": "simulated", "record_dir": "~nosuchuser-x/rec"}]})
@example({"auth": {"users_file": "~nosuchuser-x/users.toml"}})
def test_any_document_loads_or_raises_configerror(data: dict[str, Any]) -> None:
    try:
        config = from_mapping(data, base_dir=Path("/srv/gateway"))
    except ConfigError as exc:
        assert str(exc), "an error names what is wrong"
        return
    assert isinstance(config, Config)
    # What loads is usable: bounds hold and no NaN slipped past them.
    assert finite_everywhere(config.server) and finite_everywhere(config.auth)
    assert finite_everywhere(config.tones)
    for line in config.lines:
        assert finite_everywhere(line.options)
        assert 1 <= line.queue_size <= 1000
        assert line.name and set(line.name) <= set(string.ascii_letters + string.digits + "-_")
    config.tones.settings()
    config.users_path  # noqa: B018 - resolving it must not raise


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("&<>\"'; amp;lt;gt;x\u00e9\ufffd"), max_size=40)
       | st.text(max_size=40))
def test_the_answers_escape_is_the_standard_librarys(text: str) -> None:
    """responses.escape stands in for xml.sax.saxutils.escape (issue 17: its
    import brought urllib.request and SAX into every start-up)."""
    from xml.sax.saxutils import escape as sax_escape

    from gateway.api.responses import escape

    assert escape(text) == sax_escape(text)
