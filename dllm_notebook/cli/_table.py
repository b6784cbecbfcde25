"""Plain-text tables for the terminal: aligned columns, a rule under the header."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cell", "table"]


def cell(value: object, digits: int = 2) -> str:
    """A value as table text: ``-`` for nothing, floats rounded, booleans as yes/no."""
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = ()
) -> str:
    """Columns padded to their widest cell; ``numeric`` column indexes align right.

    >>> print(table(["worker", "latency s"], [["mac-1", "0.21"]], numeric=[1]))
    worker  latency s
    ------  ---------
    mac-1        0.21
    """
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).rjust(widths[i]) if i in numeric else str(c).ljust(widths[i])
            for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])
