"""Analyst SQL on the published version: one query rendered as a table, CSV or JSON, or a small shell."""

from __future__ import annotations

from collections.abc import Callable

import duckdb

FORMATS = ("table", "csv", "json")


def render(con: duckdb.DuckDBPyConnection, query: str, fmt: str = "table") -> str:
    """Run `query` (the last statement's rows are shown) and render its result.

    table: DuckDB's box rendering (long results elided in the middle); csv and json: every row, JSON
    as an array of objects with DECIMAL as exact strings and times in ISO 8601.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    relation = con.sql(query)
    if relation is None:  # a statement without rows (SET VARIABLE, ...)
        return ""
    if fmt == "table":
        return str(relation)
    frame = relation.pl()
    return frame.write_csv().rstrip("\n") if fmt == "csv" else frame.write_json()


def shell(
    con: duckdb.DuckDBPyConnection, read: Callable[[str], str], write: Callable[[str], None], fmt: str = "table"
) -> None:
    """A read-eval-print loop: statements end with `;`, `.format csv|json|table` switches, `.quit` ends."""
    buffer: list[str] = []
    while True:
        try:
            line = read("crm> " if not buffer else "...> ")
        except EOFError:
            return
        stripped = line.strip()
        if not buffer and stripped in (".quit", ".exit"):
            return
        if not buffer and stripped.startswith(".format"):
            wanted = stripped.split()[-1]
            fmt = wanted if wanted in FORMATS else fmt
            write(f"format: {fmt}")
            continue
        buffer.append(line)
        if not stripped.endswith(";"):
            continue
        statement, buffer = "\n".join(buffer), []
        try:
            write(render(con, statement, fmt))
        except duckdb.Error as e:
            write(f"error: {e}")
