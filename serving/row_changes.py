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

A row is found changed by a hash of its unmasked values against the base's, kept in a state file
beside the exports (never in one): masking every row to compare it with the masked base was most of
the day's export. Only the changed rows are masked.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from serving.masking import MASK_MACRO, MaskedSelect

FOLDER = "row_changes"
DELETED = "_deleted"
# Day d after a base writes about d·c of the table (c: its daily share of changed rows) and a rebase
# writes it all; a rebase at 20 % keeps the average near its minimum, sqrt(2c), for c of 1-3 %.
REBASE_SHARE = 0.2


@dataclass(frozen=True)
class Base:
    """The previous export's files of a table and the row hashes they were written from."""

    folder: Path
    state: Path


def row_key(columns: list[tuple[str, str]]) -> str | None:
    """The column a table's row changes are keyed by: its first, when named `*_key`."""
    return columns[0][0] if columns and columns[0][0].endswith("_key") else None


def sql_path(path: Path) -> str:
    """A path as a SQL string literal (e.g. the audience of "Can't Lose Them")."""
    return "'" + str(path).replace("'", "''") + "'"


def quoted(name: str) -> str:
    """A column name as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def row_hash(columns: list[str]) -> str:
    """A SQL expression hashing a row's `columns`: one hash over the columns, 2–2.5 times faster
    in DuckDB than the hash of the row as a struct."""
    return "hash(" + ", ".join(quoted(c) for c in columns) + ")"


def write_with_changes(
    con: duckdb.DuckDBPyConnection,
    select: MaskedSelect,
    columns: list[str],
    target: Path,
    changes: Path,
    base: Base | None,
    states: Path,
    parquet: str,
) -> tuple[int, dict | None]:
    """Write the table's rows under `target`: the base's files hard-linked and its changes written to
    `changes` when a `base` (same columns and masking) is given and the changes stay small; else the
    rows whole, empty changes and a new state file in `states`. Returns the row count and the
    manifest's `row_changes` entry, None when the key (the first column) is not unique (then only
    `target` is written, whole)."""
    key = quoted(columns[0])
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _now AS SELECT {key} AS k, {row_hash(columns)} AS h FROM ({select.plain})"
    ).fetchall()
    try:
        rows, keys = con.execute("SELECT count(*), count(DISTINCT k) FROM _now").fetchall()[0]
        target.mkdir()
        if rows != keys:
            _copy(con, select.query, target / "data.parquet", parquet)
            return rows, None
        changes.mkdir(parents=True)
        found = _changes(con, select, columns[0], base, rows) if base and base.state.is_file() else None
        if found is None:
            _copy(con, select.query, target / "data.parquet", parquet)
            state = states / f"{target.name}-{uuid.uuid4().hex[:12]}.parquet"
            states.mkdir(parents=True, exist_ok=True)
            _copy(con, "SELECT * FROM _now ORDER BY k", state, parquet)
            found = f"SELECT *, false AS {DELETED} FROM ({select.query}) WHERE false"
        else:
            assert base is not None
            state = base.state
            for file in base.folder.iterdir():
                os.link(file, target / file.name)
        changed, deleted = con.execute(f"SELECT count(*), count(*) FILTER ({DELETED}) FROM ({found})").fetchall()[0]
        _copy(con, f"SELECT * FROM ({found}) ORDER BY ALL", changes / "data.parquet", parquet)
        entry = {"path": f"{FOLDER}/{target.name}/", "key": columns[0], "rows": changed, "deleted": deleted}
        return rows, {**entry, "state": state.name}
    finally:
        con.execute("DROP TABLE IF EXISTS _now").fetchall()
        con.execute("DROP TABLE IF EXISTS _changed").fetchall()


def _changes(con: duckdb.DuckDBPyConnection, select: MaskedSelect, name: str, base: Base, rows: int) -> str | None:
    """A SELECT of the changes against the base (by the base's row hashes), None when they exceed
    REBASE_SHARE: the changed and new rows masked, a tombstone per key gone."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _changed AS
        SELECT coalesce(now.k, kept.k) AS k, now.k IS NULL AS gone
        FROM _now AS now FULL JOIN read_parquet({sql_path(base.state)}) AS kept ON now.k = kept.k
        WHERE now.h IS DISTINCT FROM kept.h"""
    ).fetchall()
    if con.execute("SELECT count(*) FROM _changed").fetchall()[0][0] > REBASE_SHARE * rows:
        return None
    key, gone_key = quoted(name), f"{MASK_MACRO}(k)" if name in select.masked_columns else "k"
    return f"""
        SELECT *, false AS {DELETED} FROM ({select.where(f"_row.{key} IN (SELECT k FROM _changed WHERE NOT gone)")})
        UNION ALL BY NAME
        SELECT {gone_key} AS {key}, true AS {DELETED} FROM _changed WHERE gone"""


def prune_states(states: Path, versions: list[Path], manifest: str) -> None:
    """Delete the state files no kept export version names (an erased person's row hashes go too)."""
    named = set()
    for version in versions:
        if (version / manifest).is_file():
            tables = json.loads((version / manifest).read_text()).get("tables", {})
            named |= {t["row_changes"]["state"] for t in tables.values() if "state" in (t.get("row_changes") or {})}
    for state in states.glob("*.parquet") if states.is_dir() else []:
        if state.name not in named:
            state.unlink()


def _copy(con: duckdb.DuckDBPyConnection, select: str, path: Path, parquet: str) -> None:
    con.execute(f"COPY ({select}) TO {sql_path(path)} ({parquet})").fetchall()
