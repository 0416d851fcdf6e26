"""Rich tables that fit the console: numbers stay whole, labels and headers may fold.

Given a table wider than the console, rich shrinks its columns until cells end in an ellipsis
("0.40…") or a number folds across two lines. :class:`FittedTable` decides the layout itself,
when it is printed, from the width it is given (``console.width`` for a plain ``console.print``):

- a value column is never narrower than its longest number (``0.4012``, ``[0.871,``, ``n=85``),
  so a cell wraps only between words and a number is never cut; its header and other words
  (a path, a run id) may fold;
- the leading label columns (``labels`` of them) may fold down to LABEL_FOLD characters;
- when the value columns do not fit side by side, they are split into several tables of balanced
  size, each repeating the label columns, titled ``<title> (1/2)``, ``(2/2)``, ...;
- within a table the widest columns give way first, as in rich's own layout.

Every column folds rather than cuts, so no cell ends in an ellipsis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Cell = str | Text  # a str cell is rich markup, as in ``Table.add_row``

# a label column may fold down to this many characters (fewer when its words are shorter)
LABEL_FOLD = 10
# a number as a cell shows it: 0.4012, -1234.5678, 1e-05, 98.7%, 0.91x; is_number() also takes
# it wrapped in brackets or punctuation ("[0.871,", "(512)") or named ("n=85")
NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?[%x]?")


def as_text(cell: Cell) -> Text:
    """The cell as rich Text (markup in a str is parsed, as rich's own Table does)."""
    return cell if isinstance(cell, Text) else Text.from_markup(cell)


def is_number(word: str) -> bool:
    """Whether a whitespace-separated word is a number (module constant NUMBER); a path or a
    run id holds digits but is not one."""
    return NUMBER.fullmatch(word.strip("()[]{},;:").rpartition("=")[2]) is not None


def longest_word(text: Text, numbers_only: bool = False) -> int:
    """Width of the widest whitespace-separated word (with ``numbers_only``, of the widest
    number): the narrowest width that cuts none."""
    words = text.plain.split()
    if numbers_only:
        words = [w for w in words if is_number(w)]
    return max((cell_len(w) for w in words), default=0)


def longest_line(text: Text) -> int:
    """Width of the widest line (the width that shows the cell on one line per line break)."""
    return max((cell_len(line) for line in text.plain.splitlines()), default=0)


def border_width(columns: int) -> int:
    """Width a rich table with the default box and padding adds to its columns' content:
    one space either side of each column and a border line between and around them."""
    return 3 * columns + 1


@dataclass(frozen=True)
class Span:
    """Content widths of one column: ``least`` (the narrowest allowed) and ``full`` (each cell
    and the header on one line)."""

    least: int
    full: int


def column_span(header: Text, cells: Sequence[Text], label: bool) -> Span:
    """A value column keeps its numbers whole (its header and other words may fold); a label
    column folds down to LABEL_FOLD characters (its words whole when they are shorter)."""
    if label:
        least = min(max([longest_word(header), *(longest_word(c) for c in cells), 1]), LABEL_FOLD)
    else:
        least = max([*(longest_word(c, numbers_only=True) for c in cells), 1])
    full = max([longest_line(header), *(longest_line(c) for c in cells), least])
    return Span(least, full)


def chunk_values(labels: Sequence[Span], values: Sequence[Span], width: int) -> list[range]:
    """Split the value columns into consecutive groups of balanced size that each fit ``width``
    beside the label columns at their narrowest (one group when they all fit)."""
    if not values:
        return [range(0)]
    base = sum(s.least for s in labels)
    widest = sorted((s.least for s in values), reverse=True)
    fit = 1  # any `fit` value columns fit: checked against the widest ones
    while fit < len(values):
        if base + sum(widest[: fit + 1]) + border_width(len(labels) + fit + 1) > width:
            break
        fit += 1
    groups = math.ceil(len(values) / fit)
    size = math.ceil(len(values) / groups)
    return [range(i, min(i + size, len(values))) for i in range(0, len(values), size)]


def allocate(spans: Sequence[Span], width: int) -> list[int]:
    """Content width of each column, as rich shrinks a table but never below ``least``: the
    widest columns give way first (each column gets ``clamp(T, least, full)`` for the largest
    T that fits), and what is left goes to the columns closest to one-line cells."""
    room = width - border_width(len(spans))

    def widths_at(t: int) -> list[int]:
        return [min(max(t, s.least), s.full) for s in spans]

    t = max(s.full for s in spans)
    while t > 1 and sum(widths_at(t)) > room:
        t -= 1
    widths = widths_at(t)
    spare = room - sum(widths)
    for i in sorted(range(len(spans)), key=lambda i: spans[i].full - widths[i]):
        grow = max(min(spare, spans[i].full - widths[i]), 0)
        widths[i] += grow
        spare -= grow
    return widths


@dataclass
class FittedTable:
    """A table laid out for the width it is printed at (module doc): ``labels`` leading label
    columns, then value columns (``justify``: right for numbers, left for prose). ``options``
    go to each rich ``Table`` (``header_style``, ``title_justify``, ...); the caption follows
    the last of the split tables."""

    title: Cell | None
    headers: Sequence[Cell]
    labels: int = 1
    justify: str = "right"  # of the value columns (labels are left-justified)
    caption: Cell | None = None
    options: dict[str, Any] = field(default_factory=dict)
    rows: list[list[Text]] = field(default_factory=list)

    def add_row(self, *cells: Cell) -> None:
        """Append a row (one cell per header)."""
        self.rows.append([as_text(c) for c in cells])

    def spans(self, width: int) -> tuple[list[Span], list[Span]]:
        """(label spans, value spans); a value column's least width is capped so that it fits
        beside the labels on its own (a longer number folds: nothing else can)."""
        headers = [as_text(h) for h in self.headers]
        columns = [[row[j] for row in self.rows] for j in range(len(headers))]
        labels = [column_span(headers[j], columns[j], True) for j in range(self.labels)]
        values = [
            column_span(headers[j], columns[j], False) for j in range(self.labels, len(headers))
        ]
        room = width - border_width(len(labels) + 1) - sum(s.least for s in labels)
        return labels, [Span(max(min(s.least, room), 1), s.full) for s in values]

    def tables(self, width: int) -> list[Table]:
        """The rich tables that show every cell within ``width`` columns."""
        labels, values = self.spans(width)
        groups = chunk_values(labels, values, width)
        out = []
        for n, group in enumerate(groups, 1):
            columns = [*range(self.labels), *(self.labels + i for i in group)]
            spans = [*labels, *(values[i] for i in group)]
            widths = allocate(spans, width)
            table = Table(
                title=self._title(n, len(groups)),
                caption=self.caption if n == len(groups) else None,
                **self.options,
            )
            for j, w in zip(columns, widths, strict=True):
                justify = "left" if j < self.labels else self.justify
                table.add_column(
                    as_text(self.headers[j]), justify=justify, width=w, overflow="fold"
                )
            for row in self.rows:
                table.add_row(*(row[j] for j in columns))
            out.append(table)
        return out

    def _title(self, n: int, of: int) -> Cell | None:
        if of == 1 or self.title is None:
            return self.title
        return as_text(self.title) + Text(f" ({n}/{of})")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.tables(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        labels, values = self.spans(options.max_width)
        least = sum(s.least for s in labels) + max((s.least for s in values), default=0)
        full = sum(s.full for s in [*labels, *values])
        columns = len(labels) + len(values)
        return Measurement(
            least + border_width(len(labels) + min(len(values), 1)), full + border_width(columns)
        ).with_maximum(options.max_width)
