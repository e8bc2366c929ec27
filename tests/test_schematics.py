"""The committed schematics are what their generator draws, and every part has its row.

The generator (firmware-notes/schematics.py) uses schemdraw's own SVG backend,
pinned in the ``test`` and ``docs`` extras, so the comparison is byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import load_script

NOTES = Path(__file__).resolve().parent.parent / "firmware-notes"
#: Which note carries each drawing's parts table.
TABLES = {"audio-hat-line": "audio-hat.md", "line-interface": "audio-hat.md",
          "mt8880-line": "mt8880.md", "modem-line": "voice-modem.md"}


def generator() -> ModuleType:
    return load_script(NOTES / "schematics.py")


@pytest.mark.parametrize("name", sorted(TABLES))
def test_committed_svg_is_what_the_generator_draws(name: str) -> None:
    svg = generator().render(name)
    assert (NOTES / f"{name}.svg").read_bytes() == svg, (
        f"{name}.svg is stale: run python firmware-notes/schematics.py")
    # Its own SVG backend: nothing pulled matplotlib in.
    assert "matplotlib" not in sys.modules


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_part_has_a_row_in_its_parts_table(name: str) -> None:
    module = generator()
    module.render(name)
    refs = module.DESIGNATORS[name]
    assert refs, name
    text = (NOTES / TABLES[name]).read_text()
    # The table follows its drawing, before the next drawing.
    section = text.split(f"]({name}.svg)", 1)[1].split("\n![", 1)[0]
    missing = [ref for ref in refs if f"\n| {ref} |" not in section]
    assert not missing, f"{TABLES[name]} has no parts-table row for {missing} of {name}.svg"


def test_each_drawing_is_shown_in_its_note() -> None:
    assert set(TABLES) == set(generator().DRAWINGS)
    for name, note in TABLES.items():
        assert f"]({name}.svg)" in (NOTES / note).read_text(), (name, note)
