"""Find personal identifiers in clear where an export does not mask them: a member id, cookie,
phone, email, card or social handle inside another column, alone or as part of a composite key
(`web_cookie:c3f…`, `c3f…:e1`). Which columns hold identifiers is declared once, in dbt
(`meta: {pii: true, identifier: <kind>}`); every value of those columns is looked for, as a whole
or between separators (`:`, `|`, `~`, space), in every other text column of the export."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa

from serving.masking import MaskedSelect, tagged_columns
from serving.publish import has_table

SEPARATORS = re.compile(r"[:|~ ]")
MAX_PARTS = 6  # a composite key of more parts is looked at in its first six
# Shorter identifiers (a shop's 5-digit customer numbers) collide with other codes (SKUs, prices):
# they are not looked for.
MIN_LENGTH = 8
# Rows a table's system sample holds (about 50 vectors of 2,048 spread over it): a reservoir over a
# whole column reads all of it, which at a million customers was most of the check's 4-9 s.
SYSTEM_SAMPLE_ROWS = 100_000
PIECES = pa.schema([("column", pa.string()), ("value", pa.string()), ("piece", pa.string())])


def identifier_columns(manifest: Path) -> dict[str, set[str]]:
    """ "schema.table" -> columns tagged `meta: {identifier: …}` in the dbt project, from its manifest."""
    return tagged_columns(manifest, "identifier")


def _pieces(value: str) -> set[str]:
    """The value and every run of its separator-delimited parts: 'a:b:c' -> a, b, c, a:b, b:c, a:b:c."""
    bounds = [0]
    for m in SEPARATORS.finditer(value):
        bounds += [m.start(), m.end()]
        if len(bounds) > 2 * MAX_PARTS:
            break
    bounds.append(len(value))
    starts, ends = bounds[0::2], bounds[1::2]
    return {value[s:e] for i, s in enumerate(starts) for e in ends[i:] if e > s}


def clear_identifiers(
    con: duckdb.DuckDBPyConnection,
    queries: dict[str, MaskedSelect],
    identifiers: dict[str, set[str]],
    sample_rows: int | None = 2000,
) -> dict[str, int]:
    """'table.column' -> how many of its values (a sample of `sample_rows`, or all when None) carry an
    identifier in clear, for every text column the export leaves unmasked. Empty: nothing leaks.

    The values are drawn from a system sample of about SYSTEM_SAMPLE_ROWS rows of the table (whole
    vectors spread over it, read without the rest), on one thread, where DuckDB repeats a seeded
    system sample."""
    known = [
        f'SELECT CAST("{c}" AS VARCHAR) AS v FROM {rel} WHERE length(CAST("{c}" AS VARCHAR)) >= {MIN_LENGTH}'
        for rel, cols in identifiers.items()
        for c in sorted(cols)
        if has_table(con, *rel.split(".", 1))
    ]
    if not known:
        return {}
    found: dict[str, list] = {"column": [], "value": [], "piece": []}
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    con.execute("SET threads = 1")
    try:
        for table, select in queries.items():
            columns = con.execute(f"DESCRIBE {select.query}").fetchall()
            text = [c for c, type_, *_ in columns if type_ == "VARCHAR" and c not in select.masked_columns]
            # Counted only to size a sample (a region's view is scanned to count it).
            rows = (
                con.execute(f"SELECT count(*) FROM {select.relation}").fetchall()[0][0] if text and sample_rows else 0
            )
            for column in text:
                for value in _sampled_values(con, select.relation, column, rows, sample_rows):
                    for piece in _pieces(value):
                        found["column"].append(f"{table}.{column}")
                        found["value"].append(value)
                        found["piece"].append(piece)
    finally:
        con.execute(f"SET threads = {int(threads)}")
    # One join of every sampled piece with the identifier columns as they are (the pieces, a few
    # thousand per column, are the join's build side), rather than a distinct set of every
    # identifier probed once per column: at a million customers that set alone is millions of values.
    con.register("_pieces", pa.table(found, schema=PIECES))
    try:
        leaks = con.execute(
            f"SELECT p.column, count(DISTINCT p.value) FROM _pieces AS p "
            f"INNER JOIN ({' UNION ALL '.join(known)}) AS i ON p.piece = i.v GROUP BY p.column"
        ).fetchall()
    finally:
        con.unregister("_pieces")
    return dict(leaks)


def _sampled_values(
    con: duckdb.DuckDBPyConnection, relation: str, column: str, rows: int, sample_rows: int | None
) -> list[str]:
    """The distinct non-null values of `column` in `sample_rows` rows of the relation (unmasked: the
    export leaves the column so), drawn from a system sample of it when it is large; all when None."""
    source, sample = relation, ""
    if sample_rows:
        sample = f" USING SAMPLE reservoir({sample_rows} ROWS) REPEATABLE (7)"
        if rows > SYSTEM_SAMPLE_ROWS:
            source += f" TABLESAMPLE system({100 * SYSTEM_SAMPLE_ROWS / rows}%) REPEATABLE (7)"
    # USING SAMPLE applies before WHERE: the rows are drawn, then their NULLs left out.
    query = f'SELECT DISTINCT "{column}" FROM (SELECT "{column}" FROM {source} WHERE "{column}" IS NOT NULL{sample})'
    return [v for (v,) in con.execute(query).fetchall()]


class IdentifierLeak(RuntimeError):
    """An export would hold personal identifiers in clear in a column it does not mask."""
