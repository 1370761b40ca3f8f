"""Customer-key corrections of an export, so that a day's re-keys do not rewrite history.

A merge, or a cookie that logs in, changes the customer key of rows in every month of a customer's
history. A fact with an `identity_record_key` (the identity-map record its customer comes from) is
therefore fingerprinted without its `customer_key`: a month whose rows changed only in their keys is
kept from the previous export, with the keys it was written with, and `customer_key_changes` gives
the current key (the identity map's) of every record whose kept rows hold another one. A fact row's current customer is
the change's `customer_key` where its `identity_record_key` has a change (NULL there: no longer
known), else its own `customer_key` (docs/serving.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from serving.masking import MASK_MACRO
from serving.row_changes import sql_path

KEY = "customer_key"
RECORD = "identity_record_key"
TABLE = "customer_key_changes"
IDENTITY_MAP = '"marts"."customer_identity_map"'  # record_key -> customer_key, what the facts join


@dataclass(frozen=True)
class FactFiles:
    """One corrected fact's date files in an export: those kept from the previous export and those
    written now, by date."""

    table: str
    kept: dict[str, Path]
    written: dict[str, Path]
    masked: bool  # identity_record_key is masked in the export


STATE_PREFIX = f"{TABLE}-"


def corrected(columns: list[str]) -> bool:
    """Whether a fact's kept months may hold older customer keys (and are corrected by the changes)."""
    return KEY in columns and RECORD in columns


def _read_keys(table: str, files: dict[str, Path], kept: bool) -> str:
    """(table, date, record as exported, key as written) of every row in `files`, each pair once."""
    paths = ", ".join(sql_path(f) for f in files.values())
    return f"""
        SELECT DISTINCT '{table}' AS t, parse_filename(filename, true) AS d, "{RECORD}" AS r, "{KEY}" AS k, {kept} AS kept
        FROM read_parquet([{paths}], hive_partitioning = false, union_by_name = true, filename = true)
        WHERE "{RECORD}" IS NOT NULL"""


def _kept_keys(facts: list[FactFiles], state: Path) -> str:
    """The kept dates' pairs from the previous export's state: the same files, read when written."""
    days = ", ".join(f"('{f.table}', '{d}')" for f in facts for d in f.kept)
    return f"""
        SELECT t, d, r, k, true AS kept FROM read_parquet({sql_path(state)})
        WHERE (t, d) IN (SELECT (t, d) FROM (VALUES {days}) AS kept_days(t, d))"""


def _stale_records(tables: list[str], masked: bool) -> str:
    """(identity_record_key as exported, current customer_key) of every record whose rows in the
    kept files of `tables` hold a key other than its current one. A fact's customer key is its
    identity record's in the identity map (the facts join it), so the current keys are read from the
    map, masked once; a record the map no longer holds has none."""
    record = f"{MASK_MACRO}(record_key)" if masked else "record_key"
    names = ", ".join(f"'{t}'" for t in tables)
    return f"""
        WITH now AS (SELECT {record} AS r, customer_key AS k FROM {IDENTITY_MAP})
        SELECT DISTINCT written.r AS "{RECORD}", now.k AS "{KEY}"
        FROM _fact_keys AS written LEFT JOIN now ON written.r = now.r
        WHERE written.kept AND written.t IN ({names}) AND written.k IS DISTINCT FROM now.k"""


def write_key_changes(
    con: duckdb.DuckDBPyConnection,
    target: Path,
    facts: list[FactFiles],
    parquet: str,
    states: Path | None = None,
    previous: Path | None = None,
) -> dict:
    """Write `target/data.parquet`: the changes of every corrected fact's kept dates, one row per
    record (an empty file when nothing is stale, so that readers can always join it).

    The pairs (record, key as written) of every date file are kept in a state file in `states`,
    named in the manifest: the next export reads its kept dates' pairs there (`previous`) rather
    than from every kept file (a file per fact and date: 1,800 at 100,000 customers), and reads
    only the files it writes. Without a previous state it reads the kept files."""
    target.mkdir()
    reuse = previous is not None and previous.is_file()
    parts = [_read_keys(f.table, f.written, False) for f in facts if f.written]
    parts += [_read_keys(f.table, f.kept, True) for f in facts if f.kept and not reuse]
    if reuse and any(f.kept for f in facts):
        parts.append(_kept_keys([f for f in facts if f.kept], previous))  # type: ignore[arg-type]
    empty = "SELECT NULL::VARCHAR AS t, NULL::VARCHAR AS d, NULL::VARCHAR AS r, NULL::VARCHAR AS k, false AS kept WHERE false"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _fact_keys AS {' UNION ALL '.join(parts) or empty}").fetchall()
    stale = [
        _stale_records(group, masked)
        for masked in (True, False)
        if (group := [f.table for f in facts if f.masked == masked and f.kept])
    ]
    union = (
        " UNION ".join(f"({q})" for q in stale)
        or f'SELECT NULL::VARCHAR AS "{RECORD}", NULL::VARCHAR AS "{KEY}" WHERE false'
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _key_changes AS {union}").fetchall()
    rows = con.execute("SELECT count(*) FROM _key_changes").fetchall()[0][0]
    con.execute(
        f"COPY (SELECT * FROM _key_changes ORDER BY ALL) TO {sql_path(target / 'data.parquet')} ({parquet})"
    ).fetchall()
    state = None
    if states is not None:
        states.mkdir(parents=True, exist_ok=True)
        state = states / f"{STATE_PREFIX}{uuid.uuid4().hex[:12]}.parquet"
        con.execute(
            f"COPY (SELECT t, d, r, k FROM _fact_keys ORDER BY t, d) TO {sql_path(state)} ({parquet})"
        ).fetchall()
    con.execute("DROP TABLE _key_changes; DROP TABLE _fact_keys").fetchall()
    return {
        "path": f"{TABLE}/",
        "rows": rows,
        "columns": [{"name": RECORD, "type": "VARCHAR"}, {"name": KEY, "type": "VARCHAR"}],
        "masked_columns": [RECORD] if any(f.masked for f in facts) else [],
        "corrects": sorted(f.table for f in facts),
        **({"state": state.name} if state else {}),
    }
