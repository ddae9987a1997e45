"""Set apart the lines of a CSV file that no reader can frame, so the rest still loads.

An unclosed quote makes every later line part of one endless field: DuckDB's sniffer then
refuses the whole file. :func:`repair` streams the file once and keeps each record whose quotes
balance within ``max_record_lines`` physical lines; when a record never closes, its first line
is rejected and reading starts again on the next line. The kept lines go to a new file, with the
original line number of each, so rejects reported on the new file can be mapped back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_RECORD_LINES = 1000


@dataclass(slots=True)
class Repaired:
    #: Original line number of each line of the repaired file (1-based, header included).
    line_numbers: list[int] = field(default_factory=list)
    #: (original line number, reason, the line) of every line set apart.
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


def _quotes(line: str, quote: str, escape: str) -> int:
    if escape != quote:
        line = line.replace(escape + escape, "").replace(escape + quote, "")
    return line.count(quote)


def frame(lines: Iterable[tuple[int, str]], quote: str, escape: str,
          max_record_lines: int = MAX_RECORD_LINES) -> Iterator[tuple[bool, list[tuple[int, str]]]]:
    """Yield (kept, lines) groups: whole records, or a single rejected line (pure, streaming)."""
    source = iter(lines)
    back: list[tuple[int, str]] = []  # lines to read again, last one first
    pending: list[tuple[int, str]] = []
    odd = False
    while True:
        item = back.pop() if back else next(source, None)
        if item is None or len(pending) > max_record_lines:
            if not pending:
                return
            # The record opened by pending[0] never closed: reject that line, re-read the rest.
            first, *rest = pending
            yield False, [first]
            if item is not None:
                back.append(item)
            back.extend(reversed(rest))
            pending, odd = [], False
            continue
        pending.append(item)
        if _quotes(item[1], quote, escape) % 2:
            odd = not odd
        if not odd:
            yield True, pending
            pending = []


def repair(src: Path, dst: Path, quote: str, escape: str,
           max_record_lines: int = MAX_RECORD_LINES) -> Repaired:
    """Write the framable lines of ``src`` (UTF-8) to ``dst``; report the rest."""
    out = Repaired()
    with open(src, encoding="utf-8", errors="replace", newline="") as fin, \
            open(dst, "w", encoding="utf-8", newline="") as fout:
        for kept, group in frame(enumerate(fin, start=1), quote, escape, max_record_lines):
            if kept:
                for number, line in group:
                    out.line_numbers.append(number)
                    fout.write(line)
            else:
                number, line = group[0]
                out.rejected.append((number, "unclosed quote", line.rstrip("\r\n")))
    return out
