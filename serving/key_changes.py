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
class KeptRows:
    """One fact's months kept from the previous export: where their files are."""

    table: str
    files: list[Path]
    masked: bool  # identity_record_key is masked in the export


def corrected(columns: list[str]) -> bool:
    """Whether a fact's kept months may hold older customer keys (and are corrected by the changes)."""
    return KEY in columns and RECORD in columns


def _stale_records(kept: list[KeptRows], masked: bool) -> str:
    """(identity_record_key as exported, current customer_key) of every record whose rows in the kept
    files hold a key other than its current one. A fact's customer key is its identity record's in
    the identity map (the facts join it), so the current keys are read from the map, masked once,
    rather than from every kept row of every fact; a record the map no longer holds has none."""
    files = ", ".join(sql_path(f) for k in kept for f in k.files)
    record = f"{MASK_MACRO}(record_key)" if masked else "record_key"
    return f"""
        WITH now AS (SELECT {record} AS r, customer_key AS k FROM {IDENTITY_MAP}),
        written AS (
            SELECT DISTINCT "{RECORD}" AS r, "{KEY}" AS k
            FROM read_parquet([{files}], hive_partitioning = false, union_by_name = true)
            WHERE "{RECORD}" IS NOT NULL
        )
        SELECT DISTINCT written.r AS "{RECORD}", now.k AS "{KEY}"
        FROM written LEFT JOIN now ON written.r = now.r
        WHERE written.k IS DISTINCT FROM now.k"""


def write_key_changes(con: duckdb.DuckDBPyConnection, target: Path, kept: list[KeptRows], parquet: str) -> dict:
    """Write `target/data.parquet`: the changes of every corrected fact's kept months, one row per
    record (an empty file when nothing is stale, so that readers can always join it)."""
    target.mkdir()
    with_files = [k for k in kept if k.files]
    stale = [
        _stale_records(group, masked)
        for masked in (True, False)
        if (group := [k for k in with_files if k.masked == masked])
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
    con.execute("DROP TABLE _key_changes").fetchall()
    return {
        "path": f"{TABLE}/",
        "rows": rows,
        "columns": [{"name": RECORD, "type": "VARCHAR"}, {"name": KEY, "type": "VARCHAR"}],
        "masked_columns": [RECORD] if any(k.masked for k in kept) else [],
        "corrects": sorted(k.table for k in kept),
    }
