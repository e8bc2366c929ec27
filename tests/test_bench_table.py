"""bench/run_all.py: every kind of line the bench scripts print becomes a row,
and the README's table is replaced between its markers, nothing else."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.support import load_script

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def run_all() -> ModuleType:
    return load_script(BENCH / "run_all.py")


OUTPUT = """\
start-up (spawn to listening, 8 simulated lines): 527 ms
SendDTMF overhead, 1 client(s) on 1 line(s): median 2.1 ms, p99 3.0 ms (100 requests)
non-burst timing, 400 digits at 40/50 ms (error against the request, ms):
  tone on  median +0.085  p99 +0.221
  bus A:    8.0 us (124,806 cycles/s)
Speak to first audio (ms), median / max
   8000 Hz:   15.3 /   87.4
  rate  engine x realtime  sox x realtime
  8000              13083             330
 48000               9789             439
"""


def test_every_kind_of_line_is_a_row(run_all: ModuleType) -> None:
    rows = run_all.rows(OUTPUT, "python bench/x.py", "Synthesis")
    assert [(what, figure) for what, figure, _ in rows] == [
        ("start-up (spawn to listening, 8 simulated lines)", "527 ms"),
        ("SendDTMF overhead, 1 client(s) on 1 line(s)", "median 2.1 ms, p99 3.0 ms (100 requests)"),
        ("non-burst timing, 400 digits at 40/50 ms (error against the request, ms) — tone on",
         "median +0.085, p99 +0.221"),
        ("non-burst timing, 400 digits at 40/50 ms (error against the request, ms) — bus A",
         "8.0 us (124,806 cycles/s)"),
        ("Speak to first audio (ms), median / max — 8000 Hz", "15.3 / 87.4"),
        ("Synthesis — rate 8000", "engine x realtime 13083, sox x realtime 330"),
        ("Synthesis — rate 48000", "engine x realtime 9789, sox x realtime 439"),
    ]
    assert {how for _, _, how in rows} == {"python bench/x.py"}


def test_the_readme_table_is_replaced_between_the_markers(
    run_all: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Performance\n\nIntro.\n\n{run_all.BEGIN}\nold\n{run_all.END}\n"
                      "\n## Layout\n\nrest\n")
    monkeypatch.setattr(run_all, "README", readme)
    table = run_all.table([("a | b", "1 ms", "python bench/a.py")], 3.0)
    run_all.update_readme(table)
    text = readme.read_text()
    assert text.startswith("# x\n\n## Performance\n\nIntro.\n\n" + run_all.BEGIN)
    assert "| a \\| b | 1 ms | `python bench/a.py` |" in text and "old" not in text
    assert text.endswith(f"{run_all.END}\n\n## Layout\n\nrest\n")
    run_all.update_readme(table)
    assert readme.read_text() == text  # idempotent


def test_every_bench_script_has_a_docstring_title(run_all: ModuleType) -> None:
    for script in run_all.scripts(None):
        assert run_all.title_of(script) != script.stem, script.name


def test_the_table_reads_back_as_the_rows_it_was_made_of(
    run_all: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What --only relies on to keep the figures of the scripts it did not run."""
    readme = tmp_path / "README.md"
    readme.write_text(f"{run_all.BEGIN}\n{run_all.END}\n")
    monkeypatch.setattr(run_all, "README", readme)
    rows = [("a | b", "1 | 2 ms", "python bench/bench_a.py"),
            ("c, d — e", "median 3 ms", "python bench/bench_c.py")]
    run_all.update_readme(run_all.table(rows, 1.0))
    assert run_all.readme_rows() == rows
