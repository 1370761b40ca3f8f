"""Load a source's extracts for a range of partition dates into `raw.<source>`, idempotently.

A run replaces exactly the partitions it covers, in one transaction: re-running a day gives the
same rows; a re-delivered identical file adds nothing (its keys repeat with the same content);
a corrected re-delivery (a later file with the same business keys) supersedes the rows it
corrects. Rows that break the contract go to `raw.quarantine` with file, row, field and reason.
A file that cannot be read fails only the partitions it feeds; nothing committed before is lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ingestion.conform import conform_sql, raw_record_sql
from ingestion.contracts import LINEAGE_COLUMNS
from ingestion.read import UnreadableFile, read_file
from ingestion.sources import Source

_NAME_DATE = re.compile(r"(20\d{2}|19\d{2})-?(\d{2})-?(\d{2})")


class LoadError(RuntimeError):
    """A load could not complete; what was published before stays as it was."""


@dataclass
class LoadResult:
    source: str
    start: dt.date
    end: dt.date
    batch_id: str
    files_read: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    duplicates_skipped: int = 0
    rows_superseded: int = 0
    failed_files: dict[str, str] = field(default_factory=dict)  # file -> cause
    failed_dates: list[dt.date] = field(default_factory=list)  # partitions left untouched

    @property
    def quarantine_rate(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0


def ensure_tables(con: duckdb.DuckDBPyConnection, source: Source) -> None:
    """Create the raw tables if missing; add columns a newer contract brought."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    cols = [f"{f.name} {f.duckdb_type}" for f in source.contract.fields]
    cols += [f"{name} {type_}" for name, type_ in LINEAGE_COLUMNS.items()]
    con.execute(f"CREATE TABLE IF NOT EXISTS {source.table} ({', '.join(cols)})")
    have = {r[0] for r in con.execute(f"DESCRIBE {source.table}").fetchall()}
    for col in cols:
        if col.split()[0] not in have:
            con.execute(f"ALTER TABLE {source.table} ADD COLUMN {col}")
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS raw.quarantine (
            source VARCHAR, channel VARCHAR, file VARCHAR, row_number BIGINT, field VARCHAR, reason VARCHAR,
            raw_record VARCHAR, partition_date DATE, batch_id VARCHAR, loaded_at TIMESTAMPTZ)
        """
    )
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS raw._file_catalog (
            source VARCHAR, file VARCHAR, size BIGINT, mtime_ns BIGINT, sha256 VARCHAR,
            home_date DATE, min_date DATE, max_date DATE, records BIGINT, cataloged_at TIMESTAMPTZ,
            PRIMARY KEY (source, file))
        """
    )
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS raw._load_log (
            batch_id VARCHAR, source VARCHAR, partition_start DATE, partition_end DATE, files_read BIGINT,
            rows_read BIGINT, rows_loaded BIGINT, rows_quarantined BIGINT, duplicates_skipped BIGINT,
            rows_superseded BIGINT, failed_files VARCHAR, finished_at TIMESTAMPTZ)
        """
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def name_date(path: Path) -> dt.date | None:
    """The date a file's name carries (export date), if any."""
    m = _NAME_DATE.search(path.name)
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _catalog(con: duckdb.DuckDBPyConnection, source: Source) -> dict[str, tuple]:
    rows = con.execute(
        "SELECT file, size, mtime_ns, min_date, max_date, home_date FROM raw._file_catalog WHERE source = ?",
        [source.name],
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _stage_file(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    path: Path,
    index: int,
    partitions: tuple[dt.date, dt.date],
) -> tuple[dt.date, dt.date | None, dt.date | None, int]:
    """Read one file and append its conformed rows to `_staged` and its rejects to `_staged_q`.

    Returns (home_date, min_date, max_date, records). Rows whose event time is missing, broken or
    outside the partitions belong to the file's home date (the date in its name, else its first
    valid day) so that they land in quarantine with a partition that a re-run replaces.
    """
    read = read_file(con, source, path, f"_read_{index}")
    event = source.contract.event_time
    p_start, p_end = partitions
    conformed = f"_conformed_{index}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {conformed} AS {conform_sql(source, read)}")
    tz = source.timezone.replace("'", "''")
    con.execute(
        f"ALTER TABLE {conformed} ADD COLUMN _event_date DATE; "
        f"UPDATE {conformed} SET _event_date = CAST(timezone('{tz}', {event}) AS DATE)"
    )
    min_date, max_date, records = con.execute(
        f"SELECT min(_event_date) FILTER (WHERE _event_date BETWEEN ? AND ?), "
        f"max(_event_date) FILTER (WHERE _event_date BETWEEN ? AND ?), count(*) FROM {conformed}",
        [p_start, p_end, p_start, p_end],
    ).fetchall()[0]
    home = name_date(path) or min_date or p_start
    home = min(max(home, p_start), p_end)
    mtime = path.stat().st_mtime_ns
    field_names = source.contract.names
    out_of_range = (
        f"CASE WHEN _event_date NOT BETWEEN DATE '{p_start}' AND DATE '{p_end}' THEN "
        f"[{{'field': '{event}', 'reason': 'event date ' || _event_date || ' outside the partitions "
        f"{p_start}..{p_end}'}}] ELSE [] END"
    )
    con.execute(
        f"""
        INSERT INTO _staged BY NAME
        SELECT {', '.join(field_names)}, _row_number, '{str(path).replace("'", "''")}' AS _file, {mtime} AS _file_mtime,
               CASE WHEN _event_date BETWEEN DATE '{p_start}' AND DATE '{p_end}' THEN _event_date
                    ELSE DATE '{home}' END AS _partition_date,
               list_concat(_errors, {out_of_range}) AS _errors
        FROM {conformed}
        """
    )
    con.execute(
        f"""
        INSERT INTO _staged_q BY NAME
        SELECT s._row_number AS row_number, s._errors[1].field AS field,
               array_to_string(list_transform(s._errors, lambda e: coalesce(e.field || ': ', '') || e.reason), '; ') AS reason,
               {raw_record_sql(read, 'r')} AS raw_record, s._partition_date AS partition_date, s._file AS file
        FROM _staged AS s JOIN {read.table} AS r USING (_row_number)
        WHERE s._file = ? AND len(s._errors) > 0
        """,
        [str(path)],
    )
    if read.rejects_table:
        con.execute(
            f"""
            INSERT INTO _staged_q BY NAME
            SELECT _row_number AS row_number, field, reason, raw_record, DATE '{home}' AS partition_date, ? AS file
            FROM {read.rejects_table}
            """,
            [str(path)],
        )
        records += con.execute(f"SELECT count(*) FROM {read.rejects_table}").fetchall()[0][0]
        con.execute(f"DROP TABLE {read.rejects_table}")
    con.execute(f"DROP TABLE {read.table}; DROP TABLE {conformed}")
    return home, min_date, max_date, records


def _create_staging(con: duckdb.DuckDBPyConnection, source: Source) -> None:
    cols = ", ".join(f"{f.name} {f.duckdb_type}" for f in source.contract.fields)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _staged ({cols}, _row_number BIGINT, _file VARCHAR, _file_mtime BIGINT,
            _partition_date DATE, _errors STRUCT(field VARCHAR, reason VARCHAR)[]);
        CREATE OR REPLACE TEMP TABLE _staged_q (file VARCHAR, row_number BIGINT, field VARCHAR, reason VARCHAR,
            raw_record VARCHAR, partition_date DATE);
        """
    )


def _rank_staged(con: duckdb.DuckDBPyConnection, source: Source) -> None:
    """Number missing receipt lines, hash each row, and rank deliveries of the same business key."""
    contract = source.contract
    names = contract.names
    derived = [f for f in contract.fields if f.derivable and f.name not in source.columns]
    for f in derived:  # e.g. line_number: position of the line within its receipt in the file
        others = [k for k in contract.key if k != f.name]
        con.execute(
            f"UPDATE _staged SET {f.name} = n FROM (SELECT _file AS file, _row_number AS rn, row_number() OVER "
            f"(PARTITION BY _file, {', '.join(others)} ORDER BY _row_number) AS n FROM _staged) AS d "
            f"WHERE _staged._file = d.file AND _staged._row_number = d.rn"
        )
    key = ", ".join(contract.key)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ranked AS
        SELECT *, md5(to_json(struct_pack({', '.join(f'{n} := {n}' for n in names)}))) AS _row_hash,
        FROM _staged WHERE len(_errors) = 0
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ranked AS
        SELECT *,
               row_number() OVER w AS _delivery_rank,
               first_value(_row_hash) OVER w AS _kept_hash
        FROM _ranked
        WINDOW w AS (PARTITION BY {key} ORDER BY _file_mtime DESC, _file DESC, _row_number)
        """
    )


def load_source(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    start: dt.date,
    end: dt.date,
    partitions: tuple[dt.date, dt.date],
    batch_id: str | None = None,
) -> LoadResult:
    """Replace partitions `start`..`end` (inclusive) of `raw.<source>` from the files on disk now.

    `partitions` is the first and last partition date that exist; rows dated outside go to quarantine.
    """
    result = LoadResult(source.name, start, end, batch_id or uuid.uuid4().hex)
    ensure_tables(con, source)
    files = source.files()
    if not files:
        raise LoadError(f"source {source.name!r}: path {source.path} matches no files")
    catalog = _catalog(con, source)
    present = {str(p) for p in files}
    gone = con.execute(
        f"SELECT DISTINCT _file FROM {source.table} WHERE _partition_date BETWEEN ? AND ? "
        f"AND NOT list_contains(?, _file) ORDER BY 1",
        [start, end, sorted(present)],
    ).fetchall()
    if gone:
        raise LoadError(
            f"source {source.name!r}: files loaded before are gone from {source.path}: "
            f"{[g[0] for g in gone][:5]}; restore them (re-loading would drop their rows)"
        )

    _create_staging(con, source)
    new_catalog: list[tuple] = []
    blocked: set[dt.date] = set()
    for i, path in enumerate(files):
        stat = path.stat()
        known = catalog.get(str(path))
        changed = known is None or (known[0], known[1]) != (stat.st_size, stat.st_mtime_ns)
        if not changed:
            lo = min(d for d in (known[2], known[4]) if d is not None)
            hi = max(d for d in (known[3], known[4]) if d is not None)
            if hi < start or lo > end:
                continue
        try:
            home, lo, hi, records = _stage_file(con, source, path, i, partitions)
        except UnreadableFile as e:
            result.failed_files[str(path)] = str(e)
            span = (known[2], known[3]) if known and known[2] else None
            day = name_date(path)
            if span:
                blocked.update(_days(max(span[0], start), min(span[1], end)))
            elif day:
                blocked.add(day)
            else:  # nothing tells which days it feeds: the whole range waits for it
                blocked.update(_days(start, end))
            continue
        result.files_read += 1
        new_catalog.append((source.name, str(path), stat.st_size, stat.st_mtime_ns, _sha256(path), home, lo, hi, records))

    _rank_staged(con, source)
    dates = [d for d in _days(start, end) if d not in blocked]
    result.failed_dates = sorted(blocked.intersection(_days(start, end)))
    in_range = "_partition_date = ANY(?)"
    counts = con.execute(
        f"""
        SELECT count(*) FILTER (WHERE _delivery_rank = 1),
               count(*) FILTER (WHERE _delivery_rank > 1 AND _row_hash = _kept_hash),
               count(*) FILTER (WHERE _delivery_rank > 1 AND _row_hash <> _kept_hash)
        FROM _ranked WHERE {in_range}
        """,
        [dates],
    ).fetchall()[0]
    result.rows_loaded, result.duplicates_skipped, result.rows_superseded = counts
    result.rows_quarantined = con.execute(f"SELECT count(*) FROM _staged_q WHERE partition_date = ANY(?)", [dates]).fetchall()[0][0]
    result.rows_read = sum(counts) + result.rows_quarantined

    names = source.contract.names
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {source.table} WHERE _partition_date = ANY(?)", [dates])
        con.execute("DELETE FROM raw.quarantine WHERE source = ? AND partition_date = ANY(?)", [source.name, dates])
        con.execute(
            f"""
            INSERT INTO {source.table} BY NAME
            SELECT {', '.join(names)}, '{source.name}' AS _source, _file, _row_number, _row_hash, _partition_date,
                   ? AS _batch_id, now() AS _loaded_at
            FROM _ranked WHERE _delivery_rank = 1 AND {in_range}
            ORDER BY _partition_date, _file, _row_number
            """,
            [result.batch_id, dates],
        )
        con.execute(
            f"""
            INSERT INTO raw.quarantine BY NAME
            SELECT ? AS source, ? AS channel, file, row_number, field, reason, raw_record, partition_date,
                   ? AS batch_id, now() AS loaded_at
            FROM _staged_q WHERE {in_range.replace('_partition_date', 'partition_date')}
            ORDER BY partition_date, file, row_number
            """,
            [source.name, source.channel, result.batch_id, dates],
        )
        if new_catalog:
            con.executemany(
                "INSERT OR REPLACE INTO raw._file_catalog VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())", new_catalog
            )
        con.execute(
            "INSERT INTO raw._load_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                result.batch_id, source.name, start, end, result.files_read, result.rows_read, result.rows_loaded,
                result.rows_quarantined, result.duplicates_skipped, result.rows_superseded,
                "; ".join(result.failed_files.values()) or None,
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _staged; DROP TABLE IF EXISTS _staged_q; DROP TABLE IF EXISTS _ranked")
    return result


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
