import pytest

from gateway.errors import KeyStringError
from gateway.keys import MAX_LENGTH, Pause, Tone, format_keys, parse_keys, tone_keys


@pytest.mark.parametrize("char", list("0123456789*#ABCD"))
def test_every_key_parses_to_its_tone(char: str) -> None:
    assert parse_keys(char) == (Tone(char),)


@pytest.mark.parametrize("char", list("abcd"))
def test_lower_case_letters_are_the_same_keys(char: str) -> None:
    assert parse_keys(char) == (Tone(char.upper()),)


@pytest.mark.parametrize(("char", "ms"), [("w", 500), (",", 500), ("W", 1000)])
def test_pauses(char: str, ms: int) -> None:
    assert parse_keys(f"1{char}2") == (Tone("1"), Pause(ms), Tone("2"))


def test_mixed_string_round_trips() -> None:
    symbols = parse_keys("ww12a,#W*")
    assert tone_keys(symbols) == "12A#*"
    assert format_keys(symbols) == "ww12Aw#W*"


def test_longest_string_is_accepted() -> None:
    assert len(parse_keys("1" * MAX_LENGTH)) == MAX_LENGTH


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "no keys given", 0),
        ("1" * (MAX_LENGTH + 1), "129 characters is more than the maximum 128", 0),
        ("12x4", "invalid key 'x' at position 3", 3),
        ("E", "invalid key 'E' at position 1", 1),
        ("1 2", "invalid key ' ' at position 2", 2),
        ("12é", "invalid key 'é' (U+00E9) at position 3", 3),
        ("\x00", "invalid key '\\x00' (U+0000) at position 1", 1),
        ("１", "invalid key '１' (U+FF11) at position 1", 1),
        ("p", "invalid key 'p' at position 1", 1),
    ],
)
def test_bad_input_names_character_and_position(text: str, message: str, position: int) -> None:
    with pytest.raises(KeyStringError) as info:
        parse_keys(text)
    assert str(info.value) == message
    assert info.value.position == position
    assert isinstance(info.value, ValueError)
