"""Row changes against a kept base, so that a day's export does not write a customer table whole.

A keyed table (not partitioned, its first column a unique, non-null `*_key`: the identity map,
`dim_customer`, `customer_360`, `fct_campaign_contacts`) changes in a few percent of its rows a day,
spread over every customer, so no partitioning keeps its files. Its export therefore keeps the
previous export's file as a base (hard-linked) and writes `row_changes/<table>/data.parquet`: every
current row that is new or differs from its base row, and one tombstone (`_deleted`, the other
columns NULL) per base key no longer present. Current rows: the base's rows whose key has no change,
and the changes' rows not deleted (docs/serving.md gives the SQL).

The changes are counted against the base, not the previous day, so one file always suffices and a
reader never orders layers; they grow day by day, and once they exceed REBASE_SHARE of the table's
rows the table is written whole again with empty changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

FOLDER = "row_changes"
DELETED = "_deleted"
# Day d after a base writes about d·c of the table (c: its daily share of changed rows) and a rebase
# writes it all; a rebase at 20 % keeps the average near its minimum, sqrt(2c), for c of 1-3 %.
REBASE_SHARE = 0.2


def row_key(columns: list[tuple[str, str]]) -> str | None:
    """The column a table's row changes are keyed by: its first, when named `*_key`."""
    return columns[0][0] if columns and columns[0][0].endswith("_key") else None


def sql_path(path: Path) -> str:
    """A path as a SQL string literal (e.g. the audience of "Can't Lose Them")."""
    return "'" + str(path).replace("'", "''") + "'"


def write_with_changes(
    con: duckdb.DuckDBPyConnection, query: str, key: str, target: Path, changes: Path, base: Path | None, parquet: str
) -> tuple[int, dict | None]:
    """Write the table's rows under `target`: the base's files hard-linked and its changes written to
    `changes` when a `base` (the previous export's folder of this table, same columns and masking)
    is given and the changes stay small; else the rows whole and empty changes. Returns the row
    count and the manifest's `row_changes` entry, None when `key` is not unique (then only `target`
    is written, whole)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _rows AS {query}").fetchall()
    try:
        rows, keys = con.execute(f'SELECT count(*), count(DISTINCT "{key}") FROM _rows').fetchall()[0]
        target.mkdir()
        if rows != keys:
            _copy(con, "SELECT * FROM _rows", target / "data.parquet", parquet)
            return rows, None
        changes.mkdir(parents=True)
        found = _changes(con, key, base, rows) if base else None
        if found is None:
            _copy(con, "SELECT * FROM _rows", target / "data.parquet", parquet)
            found = f"SELECT *, false AS {DELETED} FROM _rows WHERE false"
        else:
            assert base is not None
            for file in base.iterdir():
                os.link(file, target / file.name)
        changed, deleted = con.execute(f"SELECT count(*), count(*) FILTER ({DELETED}) FROM ({found})").fetchall()[0]
        _copy(con, f"SELECT * FROM ({found}) ORDER BY ALL", changes / "data.parquet", parquet)
        con.execute("DROP TABLE IF EXISTS _changes").fetchall()
        return rows, {"path": f"{FOLDER}/{target.name}/", "key": key, "rows": changed, "deleted": deleted}
    finally:
        con.execute("DROP TABLE _rows").fetchall()


def _changes(con: duckdb.DuckDBPyConnection, key: str, base: Path, rows: int) -> str | None:
    """A SELECT of the changes against the base's files, None when they exceed REBASE_SHARE."""
    files = ", ".join(sql_path(f) for f in sorted(base.glob("*.parquet")))
    if not files:
        return None
    k = f'"{key}"'
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _changes AS
        WITH kept AS (SELECT * FROM read_parquet([{files}], hive_partitioning = false))
        SELECT *, false AS {DELETED} FROM (SELECT * FROM _rows EXCEPT SELECT * FROM kept)
        UNION ALL BY NAME
        SELECT {k}, true AS {DELETED} FROM kept WHERE {k} NOT IN (SELECT {k} FROM _rows)"""
    ).fetchall()
    if con.execute("SELECT count(*) FROM _changes").fetchall()[0][0] > REBASE_SHARE * rows:
        con.execute("DROP TABLE _changes").fetchall()
        return None
    return "SELECT * FROM _changes"


def _copy(con: duckdb.DuckDBPyConnection, select: str, path: Path, parquet: str) -> None:
    con.execute(f"COPY ({select}) TO {sql_path(path)} ({parquet})").fetchall()
