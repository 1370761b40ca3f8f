"""Customer-key corrections of an export, so that a day's re-keys do not rewrite history.

A merge, or a cookie that logs in, changes the customer key of rows in every month of a customer's
history. A fact with an `identity_record_key` (the identity-map record its customer comes from) is
therefore fingerprinted without its `customer_key`: a month whose rows changed only in their keys is
kept from the previous export, with the keys it was written with, and `customer_key_changes` gives
the current key (the identity map's) of every record whose kept rows hold another one. A fact row's current customer is
the change's `customer_key` where its `identity_record_key` has a change (NULL there: no longer
known), else its own `customer_key` (docs/serving.md).

Which records are stale is decided on the (record, key) pairs of the kept files. They are kept in a
state file beside the exports (never in one), each pair with its table and the number of kept files
holding it: an export updates the previous export's pairs by the files it stopped keeping and those
it started keeping (a date written the day before), instead of reading every kept file of every fact
each day. A table counted afresh: the first export with a state, or one whose files were not kept.
The current keys come from this export's identity map, already masked, when it was exported whole
and masked as the facts are; else from the published map, masked again.
"""

from __future__ import annotations

import json
import uuid
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
STATE_PREFIX = "key_pairs"


@dataclass(frozen=True)
class KeptRows:
    """One fact's dates kept from the previous export: each date's file, relative to the table's folder."""

    table: str
    files: dict[str, str]  # date -> its file under `folder`
    folder: Path  # the table's folder in this export
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


def write_key_changes(
    con: duckdb.DuckDBPyConnection,
    target: Path,
    kept: list[KeptRows],
    parquet: str,
    states: Path | None = None,
    previous: tuple[Path, dict] | None = None,
    current_map: ExportedMap | None = None,
) -> dict:
    """Write `target/data.parquet`: the changes of every corrected fact's kept dates, one row per
    record (an empty file when nothing is stale, so that readers can always join it). `states`: the
    folder of the pairs' state files (None: count every kept file, keep no state); `previous`: the
    previous export's folder and its `customer_key_changes` entry; `current_map`: this export's map."""
    target.mkdir()
    prior = _prior_state(states, previous) if states else None
    con.execute(f"CREATE OR REPLACE TEMP TABLE _key_pairs AS {_pairs(kept, prior)}").fetchall()
    try:
        stale = [
            _stale_records(masked, _current_keys(masked, current_map))
            for masked in (True, False)
            if any(k.masked == masked for k in kept)
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
        state = _keep_state(con, states, kept) if states else None
    finally:
        con.execute("DROP TABLE IF EXISTS _key_changes").fetchall()
        con.execute("DROP TABLE IF EXISTS _key_pairs").fetchall()
    return {
        "path": f"{TABLE}/",
        "rows": rows,
        "columns": [{"name": RECORD, "type": "VARCHAR"}, {"name": KEY, "type": "VARCHAR"}],
        "masked_columns": [RECORD] if any(k.masked for k in kept) else [],
        "corrects": sorted(k.table for k in kept),
        **({"state": state} if state else {}),
    }


@dataclass(frozen=True)
class _Prior:
    pairs: Path  # the previous export's state file
    counted: dict[str, dict]  # table -> {"masked": bool, "files": {date: file}}: what its pairs count
    export: Path  # the previous export's folder, where the counted files are


def _prior_state(states: Path, previous: tuple[Path, dict] | None) -> _Prior | None:
    if previous is None or "state" not in previous[1]:
        return None
    pairs = states / previous[1]["state"]
    counted = pairs.with_suffix(".json")
    if not (pairs.is_file() and counted.is_file()):
        return None
    return _Prior(pairs, json.loads(counted.read_text()), previous[0])


def _pairs(kept: list[KeptRows], prior: _Prior | None) -> str:
    """A SELECT of (tbl, masked, r, k, files) over the kept files: the prior state's pairs of each
    table it counted with the same masking, less the files no longer kept, plus those newly kept;
    the other tables counted from all their kept files."""
    parts, carried = [], []
    for rows in kept:
        update = _update(rows, prior) if prior else None
        if update:
            carried.append(rows.table)
            parts += [_file_pairs(rows, update[0], -1), _file_pairs(rows, update[1], 1)]
        else:
            parts.append(_file_pairs(rows, [rows.folder / f for f in rows.files.values()], 1))
    if prior and carried:
        tables = ", ".join(f"'{t}'" for t in carried)
        parts.append(f"SELECT * FROM read_parquet({sql_path(prior.pairs)}) WHERE tbl IN ({tables})")
    union = " UNION ALL ".join(p for p in parts if p)
    empty = "SELECT NULL::VARCHAR AS tbl, NULL::BOOLEAN AS masked, NULL::VARCHAR AS r, NULL::VARCHAR AS k, 0::BIGINT AS files WHERE false"
    return f"SELECT tbl, masked, r, k, sum(files)::BIGINT AS files FROM ({union or empty}) GROUP BY ALL HAVING sum(files) > 0"


def _update(rows: KeptRows, prior: _Prior) -> tuple[list[Path], list[Path]] | None:
    """The files a table's prior pairs must lose (counted, no longer kept) and gain (kept, not
    counted); None when they cannot be carried (not counted, or with another masking, nothing kept,
    a counted file missing)."""
    before = prior.counted.get(rows.table)
    if not before or before["masked"] != rows.masked or not rows.files:
        return None
    gone = [prior.export / rows.table / f for d, f in before["files"].items() if d not in rows.files]
    if not all(f.is_file() for f in gone):
        return None
    return gone, [rows.folder / f for d, f in rows.files.items() if d not in before["files"]]


def _file_pairs(rows: KeptRows, files: list[Path], sign: int) -> str:
    """(tbl, masked, r, k, ±the number of `files` holding the pair) of a table's files; '' for none."""
    if not files:
        return ""
    paths = ", ".join(sql_path(f) for f in files)
    return f"""
        SELECT '{rows.table}' AS tbl, {rows.masked} AS masked, "{RECORD}" AS r, "{KEY}" AS k,
               {sign} * count(DISTINCT filename) AS files
        FROM read_parquet([{paths}], filename = true, hive_partitioning = false, union_by_name = true)
        WHERE "{RECORD}" IS NOT NULL
        GROUP BY ALL"""


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


def _stale_records(masked: bool, current: str) -> str:
    """(identity_record_key as exported, current customer_key) of every record whose rows in the kept
    files hold a key other than its current one; a record the map no longer holds has none."""
    return f"""
        WITH now AS ({current})
        SELECT DISTINCT p.r AS "{RECORD}", now.k AS "{KEY}"
        FROM _key_pairs AS p LEFT JOIN now ON p.r = now.r
        WHERE p.masked = {masked} AND p.k IS DISTINCT FROM now.k"""


def _keep_state(con: duckdb.DuckDBPyConnection, states: Path, kept: list[KeptRows]) -> str:
    """Write the pairs and what they count to `states`; returns the state file's name."""
    states.mkdir(parents=True, exist_ok=True)
    pairs = states / f"{STATE_PREFIX}-{uuid.uuid4().hex[:12]}.parquet"
    con.execute(f"COPY (SELECT * FROM _key_pairs) TO {sql_path(pairs)} (FORMAT parquet)").fetchall()
    counted = {k.table: {"masked": k.masked, "files": k.files} for k in kept}
    pairs.with_suffix(".json").write_text(json.dumps(counted))
    return pairs.name
