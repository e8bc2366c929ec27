"""DTMF key strings: the one parser every entry point uses.

Keys are the sixteen of ITU-T Q.23 (``0-9 * # A-D``; ``a-d`` accepted).
Pauses follow Asterisk, Twilio and Bandwidth: ``w`` and ``,`` wait 0.5 s,
``W`` waits 1 s. ``f`` (and Asterisk's ``F``) is a hook flash, a timed break
of the loop (register recall): its length is the line's ``flash_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import KeyStringError

KEYS = "123A456B789C*0#D"
PAUSES_MS = {"w": 500, ",": 500, "W": 1000}
FLASHES = "fF"
MAX_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Tone:
    """One DTMF digit."""

    key: str


@dataclass(frozen=True, slots=True)
class Pause:
    """Silence the sender keeps on the line, in milliseconds."""

    ms: int


@dataclass(frozen=True, slots=True)
class Flash:
    """A hook flash: the line breaks its loop for its ``flash_ms``."""


Symbol = Tone | Pause | Flash


def _describe(char: str) -> str:
    if char.isprintable() and char.isascii():
        return repr(char)
    return f"{char!r} (U+{ord(char):04X})"


def parse_keys(text: str) -> tuple[Symbol, ...]:
    """Parse ``text`` into tones and pauses, or raise :class:`KeyStringError`."""
    if not text:
        raise KeyStringError("no keys given")
    if len(text) > MAX_LENGTH:
        raise KeyStringError(f"{len(text)} characters is more than the maximum {MAX_LENGTH}")
    symbols: list[Symbol] = []
    for position, char in enumerate(text, start=1):
        if char in PAUSES_MS:
            symbols.append(Pause(PAUSES_MS[char]))
            continue
        if char in FLASHES:
            symbols.append(Flash())
            continue
        key = char.upper() if char in "abcd" else char
        if len(key) != 1 or key not in KEYS:
            raise KeyStringError(
                f"invalid key {_describe(char)} at position {position}", position
            )
        symbols.append(Tone(key))
    return tuple(symbols)


def format_keys(symbols: tuple[Symbol, ...]) -> str:
    """The canonical text of parsed symbols (upper-case keys, ``w``/``W`` pauses)."""
    out = []
    for symbol in symbols:
        if isinstance(symbol, Tone):
            out.append(symbol.key)
        elif isinstance(symbol, Flash):
            out.append("f")
        else:
            out.append("w" * (symbol.ms // 500) if symbol.ms % 1000 else "W" * (symbol.ms // 1000))
    return "".join(out)


def tone_keys(symbols: tuple[Symbol, ...]) -> str:
    """Just the digits, as a decoder on the far end would report them."""
    return "".join(s.key for s in symbols if isinstance(s, Tone))
