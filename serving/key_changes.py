"""Customer-key corrections of an export, so that a day's re-keys do not rewrite history.

A merge, or a cookie that logs in, changes the customer key of rows in every month of a customer's
history. A fact with an `identity_record_key` (the identity-map record its customer comes from) is
therefore fingerprinted without its `customer_key`: a month whose rows changed only in their keys is
kept from the previous export, with the keys it was written with, and `customer_key_changes` gives
the current key (the identity map's) of every record whose kept rows hold another one. A fact row's current customer is
the change's `customer_key` where its `identity_record_key` has a change (NULL there: no longer
known), else its own `customer_key` (docs/serving.md).

The current keys come from this export's identity map, already masked, when it was exported whole
and its records masked as the facts' are; else from the published map, masked again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from serving.masking import MASK_MACRO
from serving.row_changes import DELETED, sql_path

KEY = "customer_key"
RECORD = "identity_record_key"
TABLE = "customer_key_changes"
MAP = "customer_identity_map"
IDENTITY_MAP = f'"marts"."{MAP}"'  # record_key -> customer_key, what the facts join


@dataclass(frozen=True)
class KeptRows:
    """One fact's dates kept from the previous export: where their files are."""

    table: str
    files: list[Path]
    masked: bool  # identity_record_key is masked in the export


@dataclass(frozen=True)
class ExportedMap:
    """This export's identity map: its folder and its row changes' file, if it keeps a base."""

    folder: Path
    changes: Path | None
    record_masked: bool


def corrected(columns: list[str]) -> bool:
    """Whether a fact's kept months may hold older customer keys (and are corrected by the changes)."""
    return KEY in columns and RECORD in columns


def exported_map(folder: Path, entry: dict | None) -> ExportedMap | None:
    """This export's identity map as written (`entry`: its manifest entry), if its keys are in clear.
    Only for an export of every record (not a region's)."""
    if entry is None or KEY in entry["masked_columns"]:
        return None
    changes = entry.get("row_changes")
    return ExportedMap(
        folder / MAP,
        folder / changes["path"] / "data.parquet" if changes else None,
        "record_key" in entry["masked_columns"],
    )


def _current_keys(masked: bool, exported: ExportedMap | None) -> str:
    """(r: the record as the facts export it, k: its current key). From this export's own map when
    its record column is masked as the facts' is (no record masked again); else from the published map."""
    if exported is not None and exported.record_masked == masked:
        base = f"read_parquet({sql_path(exported.folder / '*.parquet')})"
        if exported.changes is None:
            return f"SELECT record_key AS r, customer_key AS k FROM {base}"
        changes = f"read_parquet({sql_path(exported.changes)})"
        return f"""
            SELECT record_key AS r, customer_key AS k FROM {base} ANTI JOIN {changes} AS c USING (record_key)
            UNION ALL
            SELECT record_key AS r, customer_key AS k FROM {changes} WHERE NOT {DELETED}"""
    record = f"{MASK_MACRO}(record_key)" if masked else "record_key"
    return f"SELECT {record} AS r, customer_key AS k FROM {IDENTITY_MAP}"


def _stale_records(kept: list[KeptRows], current: str) -> str:
    """(identity_record_key as exported, current customer_key) of every record whose rows in the kept
    files hold a key other than its current one. A fact's customer key is its identity record's in
    the identity map (the facts join it), so the current keys are read from the map rather than
    from every kept row of every fact; a record the map no longer holds has none."""
    files = ", ".join(sql_path(f) for k in kept for f in k.files)
    return f"""
        WITH now AS ({current}),
        written AS (
            SELECT DISTINCT "{RECORD}" AS r, "{KEY}" AS k
            FROM read_parquet([{files}], hive_partitioning = false, union_by_name = true)
            WHERE "{RECORD}" IS NOT NULL
        )
        SELECT DISTINCT written.r AS "{RECORD}", now.k AS "{KEY}"
        FROM written LEFT JOIN now ON written.r = now.r
        WHERE written.k IS DISTINCT FROM now.k"""


def write_key_changes(
    con: duckdb.DuckDBPyConnection,
    target: Path,
    kept: list[KeptRows],
    parquet: str,
    current_map: ExportedMap | None = None,
) -> dict:
    """Write `target/data.parquet`: the changes of every corrected fact's kept dates, one row per
    record (an empty file when nothing is stale, so that readers can always join it). `current_map`:
    this export's identity map, to read the current keys from (exported_map)."""
    target.mkdir()
    with_files = [k for k in kept if k.files]
    stale = [
        _stale_records(group, _current_keys(masked, current_map))
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
