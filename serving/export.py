"""Parquet exports of a published version for BI tools, switched in atomically.

An export is a folder of `<table>/` Parquet (zstd) datasets plus `manifest.json`, written last.
It is written into a new folder beside the old one; then the export's path, a symlink, is renamed
over to point at it. A BI tool that resolved the old folder keeps reading it: the previous export
is kept until the next switch. Facts are hive-partitioned by the month of their local date (else
of their date), the tables that keep a history of as-of dates (the ML scores) by as-of date.

Each date's rows are one file of their partition. A daily run changes a date or two of each fact
and adds an as-of date, so an export writes only the dates whose rows differ from the previous
export's and hard-links the previous export's files for the rest: they are the same bytes, and
each export folder still stands alone when the older one is pruned. A date is the same when it has
the same count and the same sum of row hashes, hashed before masking (a mask is a function of the
value and the key alone, and masking every row twice cost a third of an export) and compared only
under the same masking key. An as-of date of the ML scores is the same when it has the same count
and run id (a run writes an as-of date whole). A fact with an identity record is fingerprinted
without its customer key: a date whose rows only changed customer is kept too, and
`customer_key_changes` corrects its keys (serving/key_changes.py).
A keyed table (the identity map, the customer dimension and 360) changes a few rows for many
customers: it keeps its previous file as a base and writes its changes, found by the hashes of the
base's unmasked rows kept beside the exports (serving/row_changes.py).

Files are zstd level 1: at a million customers it wrote the order lines 12 % faster than the
default level 3, and 5 % smaller.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from serving import publish
from serving.identifier_leaks import IdentifierLeak, clear_identifiers
from serving.key_changes import (
    KEY,
    MAP,
    RECORD,
    TABLE,
    KeptRows,
    corrected,
    exported_map,
    previous_corrections,
    write_key_changes,
)
from serving.masking import MaskedSelect, define_mask, keyed_hash, masked_select
from serving.row_changes import FOLDER, Base, prune_states, quoted, row_hash, row_key, sql_path, write_with_changes
from serving.scopes import scoped_view_name, set_region

MANIFEST = "manifest.json"
KEEP_EXPORTS = 2  # the current export and the one before it, for readers still on it
PARQUET = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"
FINGERPRINT_SALT = "crm export fingerprint"  # keyed_hash(key, salt) names the masking key in manifests


@dataclass(frozen=True)
class ExportSpec:
    """What an export holds; kept in its manifest so an erasure can write it again."""

    kind: str = "bi"  # "bi": every mart and ML table; "audience": one marketing audience
    region: str | None = None
    masked: bool = True
    segment: str | None = None  # audience of an RFM segment
    channel: str | None = None  # audience only
    trigger: str | None = None  # audience of a triggered follow-up (ml/triggers.py), instead of a segment
    within_hours: int | None = None  # the trigger's window (default: ml's TriggerConfig)


@dataclass
class Export:
    path: Path
    folder: Path
    manifest: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Partitioning:
    """A table's hive partitions, named by a key derived from one of its DATE columns (which stays
    in the files with its type): `month` of a fact's date, or `as_of` for a table that keeps a
    history of as-of dates (the ML scores), so that a day adds one partition. Each date's rows are
    one file of its partition (`month=2025-03/2025-03-14.parquet`), so that a day's late rows
    rewrite that date, not the month."""

    column: str
    key: str  # "month" or "as_of"

    def value(self) -> str:
        return f"strftime(\"{self.column}\", '{'%Y-%m' if self.key == 'month' else '%Y-%m-%d'}') AS {self.key}"

    def of(self, day: str) -> str:
        """The partition value of a date (ISO text)."""
        return day[:7] if self.key == "month" else day

    def file(self, day: str) -> Path:
        """A date's file, relative to the table's folder."""
        return Path(f"{self.key}={self.of(day)}") / f"{day}.parquet"

    def rows_in(self, days: list[str]) -> str:
        """Rows of these dates, as a filter on the date column itself, which DuckDB checks against
        each row group's min and max."""
        return f'"{self.column}" IN ({", ".join(f"DATE {d!r}" for d in days)})' if days else "false"


def _partitioning(name: str, columns: list[tuple[str, str]]) -> Partitioning | None:
    """Facts by month of their first local date column, else of their first date column (the
    payments' UTC date); a table with an `as_of_date` by that date; others not partitioned."""
    dates = [c for c, t in columns if c.endswith("_date") and t == "DATE"]
    if name.startswith("fct_") and dates:
        return Partitioning(next((c for c in dates if c.endswith("_local_date")), dates[0]), "month")
    return Partitioning("as_of_date", "as_of") if "as_of_date" in dates else None


def table_queries(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, personal: dict[str, set[str]]
) -> dict[str, MaskedSelect]:
    """table name -> its select for a BI export: every served table, scoped if asked."""
    queries = {}
    for schema, table in publish.served_tables(con):
        if table in queries:
            raise ValueError(f"two served tables are called {table}: export folders are named by table")
        relation = scoped_view_name(schema, table) if spec.region else f'"{schema}"."{table}"'
        queries[table] = masked_select(con, relation, personal.get(f"{schema}.{table}", set()), spec.masked)
    return queries


def write_export(
    published_dir: Path,
    warehouse_dir: Path,
    spec: ExportSpec,
    personal: dict[str, set[str]],
    key: str | None,
    duckdb_config: dict | None = None,
    identifiers: dict[str, set[str]] | None = None,
    reuse: bool = True,
    version: publish.Readable | None = None,
) -> Export:
    """Export the current published version to its path under `warehouse_dir` (a symlink it owns);
    `version`: another file holding it (the build file while it is published), read instead.

    `duckdb_config`: the deployment's DuckDB limits (memory, threads, spill folder); without them
    DuckDB may take 80 % of the machine's memory. `reuse`: keep the previous export's unchanged
    partitions (an erasure writes every file again: kept months may hold the person's old customer key)."""
    from serving.audience import audience_query

    queries = audience_query if spec.kind == "audience" else table_queries
    path = export_path(warehouse_dir, spec)
    if path.exists() and not path.is_symlink():
        raise FileExistsError(f"{path} is a real folder: exports own their path; move it away first")
    source = version or publish.readable_current(published_dir)
    root = path.parent / f".{path.name}.versions"
    # Microseconds: `_prune` keeps the newest by name, and two exports in one second sorted by
    # their random suffix could prune the one before the current (seen in the test suite).
    folder = root / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        with source.connect(duckdb_config) as con:
            if spec.masked:
                define_mask(con, key or "")
            if spec.region:
                set_region(con, spec.region)
            previous = path.resolve() if reuse and path.is_symlink() and (path / MANIFEST).exists() else None
            masking = keyed_hash(key or "", FINGERPRINT_SALT) if spec.masked else None
            selects = queries(con, spec, personal)
            if spec.masked and identifiers:
                _refuse_clear_identifiers(con, selects, identifiers)
            manifest = _write_tables(
                con,
                folder,
                selects,
                masking,
                previous,
                _states(path) if spec.kind == "bi" else None,
                whole=spec.region is None,
            )
            pub = con.execute("SELECT version, run_id, as_of_date, published_at FROM serving.publication").fetchall()[0]
        manifest = {
            "spec": asdict(spec),
            "version": pub[0],
            "run_id": pub[1],
            "as_of_date": str(pub[2]) if pub[2] else None,
            "published_at": pub[3].isoformat(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            **manifest,
            **written_bytes(folder),
        }
        source.published()  # nothing points at an export of a version that did not become current
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: its presence means complete
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    publish.switch_link(path, folder.relative_to(path.parent))
    _prune(root, folder)
    prune_states(_states(path), [p for p in root.iterdir() if p.is_dir()], MANIFEST)
    return Export(path, folder, manifest)


def _refuse_clear_identifiers(
    con: duckdb.DuckDBPyConnection, selects: dict[str, MaskedSelect], identifiers: dict[str, set[str]]
) -> None:
    """A masked export must not hold a personal identifier in clear in a column it leaves unmasked
    (a cookie inside a session id): checked on a sample of each such column, before writing."""
    leaks = clear_identifiers(con, selects, identifiers)
    if leaks:
        raise IdentifierLeak(
            "the export would hold personal identifiers in clear in unmasked columns "
            f"{', '.join(f'{c} ({n} sampled values)' for c, n in sorted(leaks.items()))}: "
            "tag them meta: {pii: true} in dbt, or rebuild them without the identifier"
        )


def _write_tables(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    queries: dict[str, MaskedSelect],
    masking: str | None,
    previous: Path | None = None,
    states: Path | None = None,
    whole: bool = True,
) -> dict:
    """`masking`: an id of the masking key (a keyed hash, not the key), None when unmasked.
    `states`: keep keyed tables' base files and write their changes, with the bases' row hashes in
    this folder (serving/row_changes.py); None: write them whole. `whole`: the export holds every
    record (not a region's)."""
    for reserved in {TABLE, FOLDER} & queries.keys():
        raise ValueError(f"a served table is called {reserved}: the export writes its corrections there")
    before_manifest = read_manifest(previous) if previous else {}
    before = before_manifest.get("tables", {})
    tables, kept_rows = {}, []
    for name, select in queries.items():
        columns = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {select.query}").fetchall()]
        by = _partitioning(name, columns)
        target = folder / name
        entry: dict[str, Any] = {
            "path": f"{name}/",
            "partitioned_by": by.key if by else None,
            "columns": [{"name": c, "type": t} for c, t in columns],
            "masked_columns": select.masked_columns,
            "masking": masking if select.masked_columns else None,
        }
        old = before.get(name, {})
        if by:
            names = [c for c, _ in columns]
            rekeyed = corrected(names)
            fingerprinted = _fingerprinted(names, by, rekeyed)
            entry["fingerprint_excludes"] = [c for c in names if c not in fingerprinted]
            same_shape = all(old.get(k, []) == entry[k] for k in ("columns", "masking", "fingerprint_excludes"))
            rows, entry["partitions"], entry["files"], kept = _write_partitions(
                con,
                f"SELECT *, {by.value()} FROM ({select.query})",
                select.plain,
                fingerprinted,
                by,
                target,
                old.get("files", {}) if same_shape else {},
                previous / name if previous else None,
            )
            if rekeyed:
                kept_rows.append(_kept_rows(name, select, by, kept, target))
        elif states and row_key(columns):
            same_shape = all(old.get(k) == entry[k] for k in ("columns", "masking")) and "state" in old.get(
                "row_changes", {}
            )
            base = Base(previous / name, states / old["row_changes"]["state"]) if previous and same_shape else None
            names = [c for c, _ in columns]
            rows, changed = write_with_changes(
                con, select, names, target, folder / FOLDER / name, base, states, PARQUET
            )
            if changed:
                entry["row_changes"] = changed
        else:
            target.mkdir()
            rows = con.execute(f"COPY ({select.query}) TO {sql_path(target / 'data.parquet')} ({PARQUET})").fetchall()[
                0
            ][0]
        tables[name] = {**entry, "rows": rows}
    changes = None
    if kept_rows:
        # A region's map holds that region's records only: its facts' current keys come from the published map.
        current_map = exported_map(folder, tables.get(MAP)) if whole else None
        before_changes = previous_corrections(previous, before_manifest) if previous and whole else None
        changes = write_key_changes(con, folder / TABLE, kept_rows, PARQUET, current_map, before_changes)
    return {"tables": tables, **({TABLE: changes} if changes else {})}


def _fingerprinted(names: list[str], by: Partitioning, rekeyed: bool) -> list[str]:
    """The columns a date's fingerprint hashes. An as-of date of the ML tables is written whole by one
    run (ml.registry.write_table) and only deleted from after (an erasure): its run id and its row
    count name its rows, and hashing every row of a history that grows a day each run is spared.
    A fact with an identity record: every column but its customer key."""
    if by.key == "as_of" and "run_id" in names:
        return ["run_id"]
    return [c for c in names if not (rekeyed and c == KEY)]


def _kept_rows(name: str, select: MaskedSelect, by: Partitioning, kept: list[str], target: Path) -> KeptRows:
    return KeptRows(name, [target / by.file(day) for day in kept], RECORD in select.masked_columns)


def _write_partitions(
    con: duckdb.DuckDBPyConnection,
    query: str,
    plain: str,
    fingerprinted: list[str],
    by: Partitioning,
    target: Path,
    reusable: dict,
    previous: Path | None,
) -> tuple[int, dict, dict, list[str]]:
    """Write the dates whose fingerprint (over the `fingerprinted` columns of the `plain`, unmasked
    rows) changed or is new, one file each; hard-link the previous export's others. Returns the
    rows, the partitions' row counts, each date's figures and the dates kept."""
    c = quoted(by.column)
    counts = con.execute(
        f"SELECT strftime({c}, '%Y-%m-%d'), count(*), sum({row_hash(fingerprinted)}) FROM ({plain}) GROUP BY 1"
    ).fetchall()
    days = {day: {"rows": n, "fingerprint": str(fp)} for day, n, fp in counts if day is not None}
    kept = sorted(d for d, f in days.items() if previous and reusable.get(d) == f and (previous / by.file(d)).is_file())
    if len(kept) < len(counts):
        written = sorted(days.keys() - set(kept))
        only_changed = f"WHERE {c} IS NULL OR {by.rows_in(written)}" if kept else ""
        staged = target.parent / f".{target.name}.staged"
        con.execute(
            f"COPY (SELECT *, strftime({c}, '%Y-%m-%d') AS _day FROM ({query}) {only_changed}) "
            f"TO {sql_path(staged)} ({PARQUET}, PARTITION_BY ({by.key}, _day))"
        ).fetchall()
        for file in staged.glob("*/*/*.parquet"):  # <key>=<value>/_day=<date>/data_0.parquet
            (target / file.parent.parent.name).mkdir(parents=True, exist_ok=True)
            file.rename(target / file.parent.parent.name / f"{file.parent.name.split('=', 1)[1]}.parquet")
        shutil.rmtree(staged)
    target.mkdir(exist_ok=True)  # also for a table without rows
    for day in kept:
        assert previous is not None  # kept dates come from it
        (target / by.file(day)).parent.mkdir(exist_ok=True)
        os.link(previous / by.file(day), target / by.file(day))
    partitions: dict[str, int] = {}
    for day, figures in sorted(days.items()):
        partitions[by.of(day)] = partitions.get(by.of(day), 0) + figures["rows"]
    return sum(n for _, n, _ in counts), partitions, days, kept


def written_bytes(folder: Path) -> dict[str, int]:
    """The export's bytes, and those it wrote rather than hard-linked from the previous export (a
    linked file has more than one link while the previous export is kept)."""
    files = [f.stat() for f in folder.rglob("*.parquet")]
    return {"bytes": sum(f.st_size for f in files), "bytes_written": sum(f.st_size for f in files if f.st_nlink == 1)}


def _prune(root: Path, keep: Path) -> None:
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in [p for p in folders if p != keep][: max(len(folders) - KEEP_EXPORTS, 0)]:
        shutil.rmtree(old)


def read_manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def known_exports(warehouse_dir: Path) -> list[Path]:
    """Every export path under the warehouse folder (each a symlink to a folder with a manifest)."""
    found = []
    for link in [
        warehouse_dir / "exports",
        *warehouse_dir.glob("exports_region/*"),
        *warehouse_dir.glob("audiences/*"),
    ]:
        if link.is_symlink() and (link / MANIFEST).exists():
            found.append(link)
    return found


def drop_all_but_current(path: Path) -> None:
    """After an erasure: older exports still hold the person, so only the current one stays."""
    current = path.resolve()
    root = path.parent / f".{path.name}.versions"
    for old in root.iterdir():
        if old.is_dir() and old.resolve() != current:
            shutil.rmtree(old)
    prune_states(_states(path), [current], MANIFEST)


def _states(path: Path) -> Path:
    """The keyed tables' row hashes of an export path's bases: beside its versions, in none of them."""
    return path.parent / f".{path.name}.row_state"


def export_path(warehouse_dir: Path, spec: ExportSpec) -> Path:
    """Where an export of this spec lives: exports/, exports_region/<region>/, audiences/<segment>_<channel>/
    (or audiences/<trigger>_<hours>h_<channel>/)."""
    if spec.kind == "audience":
        who = f"{spec.trigger}_{spec.within_hours}h" if spec.trigger else spec.segment
        name = f"{who}_{spec.channel}{'_' + spec.region if spec.region else ''}"
        return warehouse_dir / "audiences" / name.replace("/", "-").replace(" ", "_")
    if spec.region:
        return warehouse_dir / "exports_region" / spec.region.replace("/", "-")
    return warehouse_dir / "exports"
