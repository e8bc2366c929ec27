"""Run every benchmark in bench/ and gather their figures into one table.

    python bench/run_all.py                  # run them all, print the table
    python bench/run_all.py --update-readme  # ...and write it into README.md
    python bench/run_all.py --only api,synthesis --update-readme  # just those rows

Each ``bench_*.py`` runs with its default arguments, one after another (they
measure time: running two at once would measure each other). Every line a
script prints becomes a row: ``what: figure`` lines directly; a line that
ends in ``:`` or has no ``:`` at all heads the indented lines under it; a
header of columns (two or more spaces apart) heads rows with as many. The
README's table lies between the two ``bench:`` markers.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

BENCH = Path(__file__).resolve().parent
README = BENCH.parent / "README.md"
BEGIN, END = "<!-- bench:begin (python bench/run_all.py --update-readme) -->", "<!-- bench:end -->"
COLUMNS = re.compile(r"\s{2,}")

Row = tuple[str, str, str]


def scripts(only: set[str] | None) -> list[Path]:
    found = sorted(BENCH.glob("bench_*.py"))
    if only:
        found = [p for p in found if p.stem.removeprefix("bench_") in only]
    return found


def run(script: Path) -> tuple[str, float]:
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=1800, cwd=BENCH.parent, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{script.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, time.monotonic() - started


def tidy(text: str) -> str:
    return " ".join(text.split()).strip(" :")


def is_column_header(fields: list[str], following: str | None) -> bool:
    """Three or more columns, and the next line has as many, with numbers."""
    if len(fields) < 3 or following is None or ":" in "".join(fields):
        return False
    below = COLUMNS.split(following.strip())
    return len(below) == len(fields) and sum(c.isdigit() for c in following) > sum(
        c.isdigit() for c in " ".join(fields))


def rows(output: str, how: str, title: str = "") -> list[Row]:
    """The figures of one script's output (see the module's docstring);
    ``title`` heads a table of columns that has no header line of its own."""
    found: list[Row] = []
    header, header_at = "", -1
    columns: list[str] = []
    lines = [raw for raw in output.splitlines() if raw.strip()]
    for i, raw in enumerate(lines):
        indented = raw[:1].isspace()
        line = raw.strip()
        fields = COLUMNS.split(line)
        if columns and len(fields) == len(columns):
            figure = ", ".join(f"{name} {value}" for name, value in zip(columns[1:], fields[1:],
                                                                         strict=True))
            context = f"{header or title} — " if header or title else ""
            found.append((tidy(f"{context}{columns[0]} {fields[0]}"), figure, how))
            continue
        if not indented:
            header, columns = "", []
        if is_column_header(fields, lines[i + 1] if i + 1 < len(lines) else None):
            columns = fields
            if header_at != i - 1:
                header = ""  # a header only heads a table right under it
            continue
        if ": " in line and not line.endswith(":"):
            what, figure = line.split(": ", 1)
            if indented and header:
                what = f"{header} — {what}"
            found.append((tidy(what), " ".join(figure.split()), how))
        elif indented and header and len(fields) >= 2:
            found.append((tidy(f"{header} — {fields[0]}"), ", ".join(fields[1:]), how))
        else:
            header, header_at = line.rstrip(":"), i
    return found


def title_of(script: Path) -> str:
    """The first line of the script's docstring, without its final period."""
    doc = ast.get_docstring(ast.parse(script.read_text())) or script.stem
    return doc.splitlines()[0].rstrip(".")


def table(all_rows: list[Row], seconds: float) -> str:
    cores = os.cpu_count() or 0
    lines = [
        BEGIN,
        f"Measured {date.today().isoformat()} on {cores} cores ({platform.machine()}, "
        f"Python {platform.python_version()}) in {seconds:.0f} s; figures with other work on "
        "the machine (a p99 above all) come out higher.",
        "",
        "| what | figure | how |",
        "|---|---|---|",
    ]
    for what, figure, how in all_rows:
        cells = [c.replace("|", "\\|") for c in (what, figure)]
        lines.append(f"| {cells[0]} | {cells[1]} | `{how}` |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def readme_rows() -> list[Row]:
    """The rows of the README's table as it stands."""
    readme = README.read_text()
    if BEGIN not in readme:
        return []
    found = []
    for line in readme.split(BEGIN, 1)[1].split(END, 1)[0].splitlines():
        cells = re.split(r"(?<!\\) \| ", line.strip().strip("|").strip())
        if len(cells) == 3 and cells[2].startswith("`python bench/"):
            what, figure = (c.replace("\\|", "|") for c in cells[:2])
            found.append((what, figure, cells[2].strip("`")))
    return found


def update_readme(text: str) -> None:
    readme = README.read_text()
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        README.write_text(head + text + ("\n" + tail if tail else ""))
        return
    raise SystemExit(f"README.md has no {BEGIN} ... {END} markers under ## Performance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-readme", action="store_true", help="write the table into "
                        "README.md between its bench markers")
    parser.add_argument("--only", help="comma-separated names: api,synthesis,...")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    started = time.monotonic()
    all_rows: list[Row] = []
    for script in scripts(only):
        print(f"running {script.name} ...", file=sys.stderr, flush=True)
        output, seconds = run(script)
        found = rows(output, f"python bench/{script.name}", title_of(script))
        print(f"  {len(found)} figures in {seconds:.0f} s", file=sys.stderr, flush=True)
        all_rows.extend(found)
    if only and args.update_readme:
        # Keep the figures of the scripts that did not run this time.
        ran = {f"python bench/{script.name}" for script in scripts(only)}
        kept = [row for row in readme_rows() if row[2] not in ran]
        all_rows = sorted(kept + all_rows, key=lambda row: row[2])
    text = table(all_rows, time.monotonic() - started)
    print(text)
    if args.update_readme:
        update_readme(text)
        print(f"updated {README.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
