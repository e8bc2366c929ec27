"""The simulated line's far end on its own: its configuration, what it does
when, and how it sounds, judged by the gateway's detectors (a table typed
in apart from theirs), multimon-ng and plain measurements. Times and
levels expected here are typed in from the published tables."""

from __future__ import annotations

import tomllib
from typing import Any

import numpy as np
import pytest

from gateway.config import from_mapping
from gateway.detect import Dtmf, Listener, Tone, Voice
from gateway.detect.events import Event
from gateway.errors import ConfigError
from gateway.lines.exchange import (
    Exchange,
    ExchangeEvent,
    ExchangeOptions,
    FarParty,
    KeyPress,
    Kind,
)
from gateway.lines.exchange_audio import greeting, national_tone, to_pcm
from gateway.lines.simulated import SimulatedOptions
from tests.sox_signals import keys as sox_keys
from tests.sox_signals import level_dbm0, needs_espeak, needs_sox, synth
from tests.support import EXAMPLE_CONFIG, multimon_decode, needs_multimon

RATE = 8000
#: The issue's scenario, as an outside user writes it.
SCENARIO = """
[[line]]
name = "line1"
driver = "simulated"

[line.exchange]

[line.exchange.numbers."100"]
rings = 2
press = [{ at_s = 3.0, keys = "1#" }]
hang_up_s = 10.0

[line.exchange.numbers."200"]
result = "busy"

[line.exchange.numbers."300"]
result = "no-answer"
"""


def options(**numbers: FarParty) -> ExchangeOptions:
    return ExchangeOptions(numbers=dict(numbers))


def read(exchange: Exchange, seconds: float, block: int = 400) -> np.ndarray:
    n = round(seconds * exchange.rate)
    return np.concatenate([exchange.read(min(block, n - i)) for i in range(0, n, block)])


def hear(audio: np.ndarray, country: str, rate: int = RATE) -> list[Event]:
    listener = Listener(country, rate)
    events: list[Event] = []
    for i in range(0, len(audio), 800):
        events += listener.feed(audio[i : i + 800])
    return events + listener.flush()


def kinds(timeline: list[ExchangeEvent]) -> list[tuple[float, str, str]]:
    return [(round(e.t, 3), e.kind.value, e.detail) for e in timeline]


# -- configuration ----------------------------------------------------------------------


def test_the_issues_scenario_is_configuration_alone() -> None:
    config = from_mapping(tomllib.loads(SCENARIO))
    opts = config.lines[0].options
    assert isinstance(opts, SimulatedOptions) and opts.exchange is not None
    assert opts.country == "us"  # [tones] country
    assert opts.recorded_channels == 2
    assert opts.exchange.numbers == {
        "100": FarParty(rings=2, press=[KeyPress(3.0, "1#")], hang_up_s=10.0),
        "200": FarParty(result="busy"),
        "300": FarParty(result="no-answer"),
    }
    assert opts.exchange.party("999") == FarParty()  # answers after 2 rings, with speech
    assert from_mapping({}).lines[0].options.exchange is None


def _line(exchange: dict[str, Any]) -> dict[str, Any]:
    return {"line": [{"name": "a", "driver": "simulated", "exchange": exchange}]}


@pytest.mark.parametrize(("exchange", "message"), [
    ({"country": "xx"}, "line[0].exchange.country: 'xx' is not one of \"\", at, au"),
    ({"echo_loss_db": 2.0}, "line[0].exchange.echo_loss_db: 2.0 is below the minimum 6.0"),
    ({"numbers": {"200": {"result": "engaged"}}},
     "line[0].exchange.numbers.200.result: 'engaged' is not one of answer, busy, congestion, "
     "sit, no-answer"),
    ({"numbers": {"100": {"rings": -1}}},
     "line[0].exchange.numbers.100.rings: -1 is below the minimum 0"),
    ({"numbers": {"100": {"ringz": 1}}}, "line[0].exchange.numbers.100.ringz: unknown key"),
    ({"numbers": {"100": {"press": [{"at_s": 1.0, "keys": "1x"}]}}},
     "line[0].exchange.numbers.100.press[0].keys: invalid key 'x' at position 2"),
    ({"numbers": {"100": {"press": [{"keys": "1"}]}}},
     "line[0].exchange.numbers.100.press[0].at_s: missing"),
    ({"numbers": {"100": {"hang_up_tone": "howler"}}},
     "line[0].exchange.numbers.100.hang_up_tone: 'howler' is not one of reorder, dial"),
    ({"numbers": {"12x": {}}}, "line[0].exchange.numbers: '12x' cannot be dialled"),
    ({"numbers": {"1w2": {}}}, "line[0].exchange.numbers: '1w2': a number is keys only"),
    ({"numbers": {"100": 5}}, "line[0].exchange.numbers.100: expected a table"),
    ({"numbers": 5}, "line[0].exchange.numbers: expected a table"),
    ({"default": {"loop_break_ms": 20000}},
     "line[0].exchange.default.loop_break_ms: 20000 is above the maximum 10000"),
])
def test_errors_name_the_key(exchange: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(_line(exchange))
    assert str(info.value).startswith(message), str(info.value)


def test_the_line_country_is_checked_against_the_detectors() -> None:
    with pytest.raises(ConfigError, match=r"line\[0\]\.country: 'xx' is not one of"):
        from_mapping({"line": [{"name": "a", "driver": "simulated", "country": "xx"}]})
    config = from_mapping({"tones": {"country": "de"}, **_line({})})
    assert config.lines[0].options.country == "de"


def test_the_example_config_documents_the_exchange() -> None:
    """The example's commented ``[line.exchange]`` block: the defaults, and
    the issue's scenario as its numbers."""
    text = EXAMPLE_CONFIG.read_text()
    start = text.index("# [line.exchange]\n")
    block = text[start : text.index("\n\n", start)]
    table = tomllib.loads('[[line]]\nname = "a"\ndriver = "simulated"\n'
                          + "\n".join(line[2:] for line in block.splitlines()))
    example = from_mapping(table).lines[0].options.exchange
    scenario = from_mapping(tomllib.loads(SCENARIO)).lines[0].options.exchange
    assert example == scenario
    assert example.default == FarParty() and ExchangeOptions(numbers=example.numbers) == example


# -- what it does, when -----------------------------------------------------------------------


def test_a_call_that_is_answered_presses_keys_and_hangs_up() -> None:
    party = FarParty(rings=2, press=[KeyPress(3.0, "1#")], hang_up_s=10.0, loop_break_ms=600)
    exchange = Exchange(options(**{"100": party}), "us")
    exchange.off_hook()
    before = read(exchange, 1.0)
    exchange.dialled("100", 1.0, 1.6)
    audio = read(exchange, 24.0)
    # us: ringback 2 s on, 4 s off; it starts 0.5 s after the dialling, the
    # far party picks up as the second ring ends, keys 100 ms on, 100 ms off.
    assert kinds(exchange.timeline) == [
        (0.0, "dial-tone", ""), (1.0, "dial-tone-end", ""), (1.6, "number", "100"),
        (2.1, "ring", "1"), (8.1, "ring", "2"), (10.1, "answer", "speech"),
        (round(10.1 + len(greeting(RATE)) / RATE, 3), "speech-end", ""),
        (13.1, "key", "1"), (13.3, "key", "#"),
        (20.1, "hang-up", "reorder"), (20.1, "loop-break", ""),
    ]
    assert exchange.timeline[-1].ms == 600
    assert exchange.now == pytest.approx(25.0)
    # Dial tone: two tones at -13 dBm0; the loop break is silence; then
    # reorder, two tones at -24 dBm0 sounding half the time.
    assert level_dbm0(before) == pytest.approx(-10.0, abs=0.2)
    t = (np.arange(len(audio)) / RATE) + 1.0
    assert not audio[(t > 1.01) & (t < 2.09)].any()
    assert not audio[(t > 20.11) & (t < 20.69)].any()
    assert level_dbm0(audio[(t > 20.7) & (t < 24.7)]) == pytest.approx(-24.0, abs=0.3)


def test_rings_for_ever_and_the_failing_tones() -> None:
    for result, kind in [("busy", "busy"), ("congestion", "congestion"), ("sit", "sit")]:
        exchange = Exchange(options(**{"5": FarParty(result=result)}), "de")
        exchange.off_hook()
        exchange.dialled("5", 0.5, 0.6)
        read(exchange, 5.0)
        assert kinds(exchange.timeline)[-1] == (1.1, kind, "")
    exchange = Exchange(options(**{"300": FarParty(result="no-answer")}), "de")
    exchange.off_hook()
    exchange.dialled("300", 0.5, 0.9)
    read(exchange, 62.0)
    rings = [e for e in exchange.timeline if e.kind is Kind.RING]
    # de: 1 s on, 4 s off.
    assert [round(e.t, 3) for e in rings] == [round(1.4 + 5 * k, 3) for k in range(13)]
    assert not any(e.kind is Kind.ANSWER for e in exchange.timeline)


def test_answers_at_once_without_ringback_and_without_dial_tone() -> None:
    opts = ExchangeOptions(dial_tone=False, post_dial_ms=0,
                           default=FarParty(rings=0, answer="silence", reversal=True))
    exchange = Exchange(opts, "us")
    exchange.off_hook()
    silence = read(exchange, 2.0)
    exchange.dialled("42", 2.0, 2.3)
    audio = read(exchange, 3.0)
    assert not silence.any() and not audio.any()
    assert kinds(exchange.timeline) == [(2.3, "number", "42"), (2.3, "answer", "silence"),
                                        (2.3, "reversal", "")]


def test_an_incoming_call_is_connected_to_the_caller() -> None:
    party = FarParty(answer="silence", press=[KeyPress(1.0, "7"), KeyPress(2.0, "8w9")],
                     hang_up_s=5.0, hang_up_tone="dial")
    exchange = Exchange(options(**{"555": party}), "uk")
    exchange.off_hook(answering="555")
    audio = read(exchange, 8.0)
    assert kinds(exchange.timeline) == [
        (0.0, "answer", "silence"), (1.0, "key", "7"), (2.0, "key", "8"), (2.7, "key", "9"),
        (5.0, "hang-up", "dial"),
    ]
    heard = hear(audio, "uk")
    assert [e.key for e in heard if isinstance(e, Dtmf)] == ["7", "8", "9"]
    assert [e.tone for e in heard if isinstance(e, Tone)] == ["dial"]


def test_keys_dialled_later_and_on_hook_change_nothing() -> None:
    exchange = Exchange(options(), "us")
    exchange.off_hook()
    exchange.dialled("1", 0.5, 0.6)
    exchange.dialled("2", 1.0, 1.1)  # in the call: only sound
    read(exchange, 1.5)
    assert [e.detail for e in exchange.timeline if e.kind is Kind.NUMBER] == ["1"]
    exchange.on_hook()
    assert not exchange.read(800).any()
    exchange.off_hook()
    assert exchange.now == 0.0 and exchange.timeline == []


def test_a_hook_flash_holds_the_party_and_gives_recall_dial_tone() -> None:
    """Register recall: what the held party would still have done never
    comes; after the flash, dial tone, and the next keys are a new number."""
    party = FarParty(answer="silence", press=[KeyPress(3.0, "5")], hang_up_s=8.0)
    exchange = Exchange(options(**{"555": party}), "uk")
    exchange.off_hook(answering="555")
    read(exchange, 1.0)
    exchange.flash(1.0, 100)
    held = read(exchange, 0.1)
    recall = read(exchange, 1.0)
    exchange.dialled("2000", 2.1, 2.7)
    read(exchange, 9.0)
    assert kinds(exchange.timeline)[:5] == [
        (0.0, "answer", "silence"), (1.0, "flash", ""), (1.1, "dial-tone", ""),
        (2.1, "dial-tone-end", ""), (2.7, "number", "2000")]
    assert not any(e.kind in (Kind.KEY, Kind.HANG_UP) for e in exchange.timeline)
    assert not held.any()
    # uk dial tone is 350 + 440 Hz, continuous.
    assert [e.tone for e in hear(recall, "uk") if isinstance(e, Tone)] == ["dial"]


def test_a_party_pressing_now_beside_its_script() -> None:
    exchange = Exchange(options(), "us")
    exchange.press("1")  # on hook: nobody to press
    exchange.off_hook(answering="9")
    read(exchange, 0.5)
    exchange.press("4#", duration_ms=80, gap_ms=120)
    audio = read(exchange, 1.0)
    assert kinds(exchange.timeline)[1:] == [(0.5, "key", "4"), (0.7, "key", "#")]
    assert [e.key for e in hear(audio, "us") if isinstance(e, Dtmf)] == ["4", "#"]
    with pytest.raises(ValueError, match="keys"):
        exchange.press("x")


def test_the_audio_does_not_depend_on_the_blocks_it_is_read_in() -> None:
    party = FarParty(rings=1, press=[KeyPress(0.5, "123")], hang_up_s=3.0, loop_break_ms=300)
    runs = []
    for block in (400, 333, 8000, 17):
        exchange = Exchange(options(**{"1": party}), "uk")
        exchange.off_hook()
        exchange.dialled("1", 0.2, 0.3)
        runs.append((read(exchange, 12.0, block), exchange.timeline))
    for audio, timeline in runs[1:]:
        assert np.array_equal(audio, runs[0][0]) and timeline == runs[0][1]


@needs_sox
def test_the_lines_own_audio_comes_back_as_echo() -> None:
    exchange = Exchange(ExchangeOptions(echo_loss_db=20.0, echo_ms=5.0,
                                        default=FarParty(rings=0, answer="silence")), "us")
    exchange.off_hook(answering="1")
    own = synth(sox_keys("5", on_s=0.1, off_s=0.1, level=-10.0, lead_s=0.0))
    exchange.transmit(own, 1.0)
    audio = read(exchange, 2.0)
    start = RATE + 40  # 1 s, and 5 ms
    assert not audio[:start].any()
    echo = audio[start : start + len(own)].astype(np.float64)
    assert np.max(np.abs(echo - own * 0.1)) <= 1.0  # 20 dB down, to the sample
    # Loud enough to be heard as a key: only the line's own_key keeps it out.
    assert [e.key for e in hear(audio, "us") if isinstance(e, Dtmf)] == ["5"]


# -- how it sounds --------------------------------------------------------------------------


#: What the detectors report each tone as: where a country has no
#: congestion tone of its own (hu, jp), and au (whose differs by 5 Hz on
#: every other burst), the detectors' README says ``busy``.
AS_BUSY = {"hu", "jp", "au"}
COUNTRIES = ("us", "ca", "uk", "de", "fr", "it", "es", "nl", "at", "ch", "hu", "au", "nz", "jp")


@pytest.mark.parametrize("name", ["dial", "ringback", "busy", "congestion", "sit"])
@pytest.mark.parametrize("country", COUNTRIES)
def test_every_countrys_tones_are_recognised_as_themselves(country: str, name: str) -> None:
    """Two tables typed in apart, the exchange's and the detectors', agree."""
    audio = to_pcm(national_tone(country, name, RATE).render(0, 15 * RATE))
    heard = hear(audio, country)
    expected = "busy" if name == "congestion" and country in AS_BUSY else name
    assert {e.tone for e in heard if isinstance(e, Tone)} == {expected}, heard
    assert not [e for e in heard if isinstance(e, Dtmf)]


@pytest.mark.parametrize("rate", [16000, 48000])
def test_tones_at_the_lines_rate(rate: int) -> None:
    for country, name in (("us", "ringback"), ("de", "busy"), ("at", "sit")):
        audio = to_pcm(national_tone(country, name, rate).render(0, 12 * rate))
        assert {e.tone for e in hear(audio, country, rate) if isinstance(e, Tone)} == {name}


@pytest.mark.parametrize("synthesiser", [
    pytest.param(True, marks=needs_espeak, id="espeak-ng"), pytest.param(False, id="built-in")])
def test_the_far_partys_voice_is_speech_never_a_tone_or_a_key(synthesiser: bool) -> None:
    greeting.cache_clear()
    voice = greeting(RATE, synthesiser)
    assert 1.0 < len(voice) / RATE < 5.0
    assert level_dbm0(voice) == pytest.approx(-23.0, abs=4.0)  # -20 dBm0 while voiced
    speech = np.tile(np.concatenate([voice, np.zeros(RATE // 4, np.int16)]), 6)
    for country in COUNTRIES:
        heard = hear(speech, country)
        assert any(isinstance(e, Voice) for e in heard)
        assert not [e for e in heard if isinstance(e, Tone | Dtmf)], (country, heard)


@needs_multimon
def test_the_far_partys_keys_decode_in_multimon_ng_and_in_the_detectors() -> None:
    keys = "123A456B789C*0#D"
    party = FarParty(answer="silence", press=[KeyPress(1.0, keys, duration_ms=60, gap_ms=60)])
    exchange = Exchange(options(**{"7": party}), "us")
    exchange.off_hook(answering="7")
    audio = read(exchange, 4.0)
    assert multimon_decode(audio, RATE) == keys
    heard = [e for e in hear(audio, "us") if isinstance(e, Dtmf)]
    assert "".join(e.key for e in heard) == keys
    # Each key's start and length as configured, within a 2.5 ms ramp.
    for i, event in enumerate(heard):
        assert event.t == pytest.approx(1.0 + 0.12 * i, abs=0.004)
        assert event.duration_ms == pytest.approx(60, abs=4)
