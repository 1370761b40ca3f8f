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

Reading every kept file's (record, key) pairs costs a scan of every fact's history (10 s at a million
customers). When this export's map kept the previous export's base, the changes follow on from the
previous export's instead: a kept row holds the previous export's key of its record once that
export's changes apply, so only the records the previous changes named and those whose map key
differs between the two exports (both within the two maps' row changes) can need one. The result
may name records none of whose kept rows is stale any more (their key is the current one: reading
it changes nothing); a rebase of the map, a first export or a different masking reads the kept files
again and names only the stale records.
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


@dataclass(frozen=True)
class PreviousCorrections:
    """The previous export's key changes and identity map, which this export's may follow on from."""

    changes: Path  # its customer_key_changes data.parquet
    masked: bool  # its records are masked
    corrects: frozenset[str]
    map: ExportedMap | None


def previous_corrections(folder: Path, manifest: dict) -> PreviousCorrections | None:
    """The key changes of the previous export (its folder and manifest), if it wrote any."""
    entry = manifest.get(TABLE)
    if entry is None or not (folder / TABLE / "data.parquet").is_file():
        return None
    return PreviousCorrections(
        folder / TABLE / "data.parquet",
        RECORD in entry["masked_columns"],
        frozenset(entry["corrects"]),
        exported_map(folder, manifest["tables"].get(MAP)),
    )


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


def _same_base(one: ExportedMap, other: ExportedMap) -> bool:
    """Whether two exported maps share their base files (a kept base is hard-linked)."""
    files = sorted(p.name for p in one.folder.glob("*.parquet"))
    return files == sorted(p.name for p in other.folder.glob("*.parquet")) and all(
        (one.folder / f).samefile(other.folder / f) for f in files
    )


def _map_changes(exported: ExportedMap) -> str:
    """(r, k) of every record the map's row changes name: its key, NULL where it was deleted."""
    if exported.changes is None:
        return "SELECT NULL::VARCHAR AS r, NULL::VARCHAR AS k WHERE false"
    key = f"CASE WHEN {DELETED} THEN NULL ELSE customer_key END"
    return f"SELECT record_key AS r, {key} AS k FROM read_parquet({sql_path(exported.changes)})"


def _following_on(
    kept: list[KeptRows], previous: PreviousCorrections | None, current: ExportedMap | None
) -> str | None:
    """The changes as a follow-on of the previous export's (module docstring), or None when they
    cannot be: the maps do not share a base, or records are masked differently anywhere."""
    if previous is None or previous.map is None or current is None:
        return None
    masked = {k.masked for k in kept}
    if masked != {previous.masked} or {previous.map.record_masked, current.record_masked} != masked:
        return None
    if not {k.table for k in kept} <= previous.corrects or not _same_base(previous.map, current):
        return None
    base = f"read_parquet({sql_path(current.folder / '*.parquet')})"
    return f"""
        WITH before AS ({_map_changes(previous.map)}),
        now AS ({_map_changes(current)}),
        corrected AS (SELECT DISTINCT "{RECORD}" AS r FROM read_parquet({sql_path(previous.changes)})),
        named AS (SELECT r FROM before UNION SELECT r FROM now UNION SELECT r FROM corrected),
        base AS (SELECT record_key AS r, customer_key AS k FROM {base} SEMI JOIN named ON record_key = named.r),
        keys AS (
            SELECT named.r,
                   CASE WHEN before.r IS NOT NULL THEN before.k ELSE base.k END AS then_k,
                   CASE WHEN now.r IS NOT NULL THEN now.k ELSE base.k END AS now_k,
                   corrected.r IS NOT NULL AS was_corrected
            FROM named
            LEFT JOIN before ON before.r = named.r
            LEFT JOIN now ON now.r = named.r
            LEFT JOIN base ON base.r = named.r
            LEFT JOIN corrected ON corrected.r = named.r
        )
        SELECT r AS "{RECORD}", now_k AS "{KEY}" FROM keys WHERE was_corrected OR then_k IS DISTINCT FROM now_k"""


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
    previous: PreviousCorrections | None = None,
) -> dict:
    """Write `target/data.parquet`: the changes of every corrected fact's kept dates, one row per
    record (an empty file when nothing is stale, so that readers can always join it). `current_map`:
    this export's identity map, to read the current keys from (exported_map); `previous`: the
    previous export's changes, to follow on from when the maps share a base."""
    target.mkdir()
    with_files = [k for k in kept if k.files]
    following_on = _following_on(with_files, previous, current_map) if with_files else None
    stale = (
        [following_on]
        if following_on
        else [
            _stale_records(group, _current_keys(masked, current_map))
            for masked in (True, False)
            if (group := [k for k in with_files if k.masked == masked])
        ]
    )
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
        "found_from": "previous export" if following_on else "kept files",
    }
