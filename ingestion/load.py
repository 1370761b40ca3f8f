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
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path

import duckdb

from ingestion.conform import conform_sql, raw_record_sql
from ingestion.contracts import LINEAGE_COLUMNS
from ingestion.read import FilesRead, read_files
from ingestion.sources import Source

# Files expand several-fold in the staged temp tables; 256 MiB of them a run stays well inside
# DuckDB's default memory limit, so nothing spills.
CHUNK_BYTES = 1 << 28
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
    rows_suppressed: int = 0  # rows of erased persons (on the suppression list), not loaded again
    failed_files: dict[str, str] = field(default_factory=dict)  # file -> cause
    failed_dates: list[dt.date] = field(default_factory=list)  # partitions left untouched
    extra_dates: list[dt.date] = field(default_factory=list)  # other days reloaded for late rows

    def failure_summary(self) -> str:
        """One line naming the first unreadable file, its cause, and the partitions left as they were."""
        if not self.failed_files:
            return ""
        file, cause = next(iter(self.failed_files.items()))
        more = f" (and {len(self.failed_files) - 1} more files)" if len(self.failed_files) > 1 else ""
        days = self.failed_dates
        if not days:
            return f"source {self.source!r}: cannot read {file}: {cause}{more}"
        when = f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} days)"
        return f"source {self.source!r}: cannot read {file}: {cause}{more}; partitions {when} left as they were"

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


@dataclass(frozen=True)
class _StagedFile:
    """What staging learnt of one file: the day its unplaceable rows belong to, the first and last
    day of its rows within the partitions, and its records (rejects included)."""

    home: dt.date
    first_day: dt.date | None
    last_day: dt.date | None
    records: int

    def days(self) -> list[dt.date]:
        """Every day the file feeds, from its home and its rows' days."""
        first, last = min(self.home, self.first_day or self.home), max(self.home, self.last_day or self.home)
        return days_between(first, last)


def _stage(
    con: duckdb.DuckDBPyConnection, source: Source, files: list[Path], partitions: tuple[dt.date, dt.date]
) -> tuple[dict[str, _StagedFile], dict[Path, str]]:
    """Read `files` and append their conformed rows to `_staged`, their rejects to `_staged_q`.

    Returns ({file: what staging learnt of it}, {unreadable file: cause}). Rows whose event time is
    missing, broken or outside the partitions belong to the file's home date (the date in its
    name, else its first valid day), so they land in quarantine in a partition that a re-run replaces.
    """
    read, failed = read_files(con, source, files, "_read")
    if read is None:
        return {}, failed
    tz = source.timezone.replace("'", "''")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _conformed AS SELECT *, "
        f"CAST(timezone('{tz}', {source.contract.event_time}) AS DATE) AS _event_date FROM ({conform_sql(source, read)})"
    )
    staged = _staged_files(con, read, partitions)
    con.execute("CREATE OR REPLACE TEMP TABLE _homes (_file VARCHAR, _home DATE, _file_mtime BIGINT)")
    insert_rows(con, "_homes", [(f, v.home, Path(f).stat().st_mtime_ns) for f, v in staged.items()])
    _append_staged(con, source, read, partitions)
    con.execute(f"DROP TABLE {read.table}; DROP TABLE _conformed; DROP TABLE _homes")
    return staged, failed


def _staged_files(
    con: duckdb.DuckDBPyConnection, read: FilesRead, partitions: tuple[dt.date, dt.date]
) -> dict[str, _StagedFile]:
    p_start, p_end = partitions
    rejects = read.rejects_table or "(SELECT NULL::VARCHAR AS _file, NULL::BIGINT AS _row_number WHERE false)"
    stats = con.execute(
        f"""
        SELECT _file, min(_event_date) FILTER (WHERE _event_date BETWEEN $1 AND $2),
               max(_event_date) FILTER (WHERE _event_date BETWEEN $1 AND $2), count(*)
        FROM (SELECT _file, _event_date FROM _conformed UNION ALL SELECT _file, NULL FROM {rejects})
        GROUP BY _file
        """,
        [p_start, p_end],
    ).fetchall()
    return {
        file: _StagedFile(min(max(name_date(Path(file)) or lo or p_start, p_start), p_end), lo, hi, records)
        for file, lo, hi, records in stats
    }


def _append_staged(
    con: duckdb.DuckDBPyConnection, source: Source, read: FilesRead, partitions: tuple[dt.date, dt.date]
) -> None:
    """The conformed rows into `_staged` (out-of-range days to their file's home), their errors and
    the reader's rejects into `_staged_q`."""
    event = source.contract.event_time
    p_start, p_end = partitions
    out_of_range = (
        f"CASE WHEN _event_date NOT BETWEEN DATE '{p_start}' AND DATE '{p_end}' THEN "
        f"[{{'field': '{event}', 'reason': 'event date ' || _event_date || ' outside the partitions "
        f"{p_start}..{p_end}'}}] ELSE [] END"
    )
    con.execute(
        f"""
        INSERT INTO _staged BY NAME
        SELECT {", ".join(source.contract.names)}, _row_number, _file, h._file_mtime,
               CASE WHEN _event_date BETWEEN DATE '{p_start}' AND DATE '{p_end}' THEN _event_date
                    ELSE h._home END AS _partition_date,
               list_concat(_errors, {out_of_range}) AS _errors
        FROM _conformed JOIN _homes AS h USING (_file)
        """
    )
    con.execute(
        f"""
        INSERT INTO _staged_q BY NAME
        SELECT s._file AS file, s._row_number AS row_number, s._errors[1].field AS field,
               array_to_string(list_transform(s._errors, lambda e: coalesce(e.field || ': ', '') || e.reason), '; ') AS reason,
               {raw_record_sql(read, "r")} AS raw_record, s._partition_date AS partition_date
        FROM _staged AS s JOIN {read.table} AS r USING (_file, _row_number)
        WHERE len(s._errors) > 0
        """
    )
    if read.rejects_table:
        con.execute(
            f"""
            INSERT INTO _staged_q BY NAME
            SELECT _file AS file, _row_number AS row_number, field, reason, raw_record, h._home AS partition_date
            FROM {read.rejects_table} JOIN _homes AS h USING (_file)
            """
        )
        con.execute(f"DROP TABLE {read.rejects_table}")


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
    """Number missing receipt lines, hash each row, rank deliveries of the same business key and
    mark rows on the suppression list."""
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
        SELECT *,
               row_number() OVER w AS _delivery_rank,
               first_value(_row_hash) OVER w AS _kept_hash,
               -- marked, not filtered, before ranking: an erased row's older deliveries must not take its place
               _row_hash IN (SELECT row_hash FROM _suppression_list) AS _suppressed
        FROM (SELECT *, md5(to_json(struct_pack({", ".join(f"{n} := {n}" for n in names)}))) AS _row_hash
              FROM _staged WHERE len(_errors) = 0)
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
    suppression: Path | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> LoadResult:
    """Replace partitions `start`..`end` (inclusive) of `raw.<source>` from the files on disk now.

    `partitions` is the first and last partition date that exist; rows dated outside go to
    quarantine. Days that new files also feed are reloaded too (see `LoadResult.extra_dates`).
    `suppression` is the erasure suppression list (a CSV with `row_hash`): rows and quarantined
    records whose hash is on it are counted as suppressed and not loaded (serving/erasure.py).
    A long range is loaded in runs of days whose dated files total about `chunk_bytes`, one
    transaction each: a failure keeps the runs committed before it, each a whole set of days.
    """
    result = LoadResult(source.name, start, end, batch_id or uuid.uuid4().hex)
    # Dates of instants must not depend on the session's zone; DuckDB's progress bar would
    # interleave with Dagster's logs.
    con.execute("SET TimeZone = 'UTC'; SET enable_progress_bar = false")
    ensure_tables(con, source)
    files = source.files()
    if not files:
        raise LoadError(f"source {source.name!r}: path {source.path} matches no files")
    _check_none_gone(con, source, files, days_between(start, end))  # before any chunk commits
    requested = set(days_between(start, end))
    files_read: set[str] = set()
    failed_dates: set[dt.date] = set()
    counts: dict[dt.date, _DayCounts] = {}  # day -> its latest load's counts
    for chunk_start, chunk_end in _chunks(files, start, end, chunk_bytes):
        chunk = _load_days(con, source, files, chunk_start, chunk_end, partitions, result.batch_id, suppression)
        files_read |= chunk.files_read
        counts.update(chunk.counts)  # a day reloaded by a later chunk (late rows) counts once
        result.failed_files.update(chunk.failed_files)
        failed_dates = (failed_dates - chunk.counts.keys()) | set(chunk.failed_dates)  # a day's latest outcome
        result.extra_dates += [d for d in chunk.extra_dates if d not in requested]
    result.failed_dates = sorted(failed_dates)
    result.extra_dates = sorted(set(result.extra_dates))
    result.files_read = len(files_read)
    totals = _DayCounts.total(counts.values())
    result.rows_loaded, result.duplicates_skipped, result.rows_superseded = (
        totals.loaded,
        totals.duplicates,
        totals.superseded,
    )
    result.rows_quarantined = totals.quarantined
    result.rows_suppressed = totals.suppressed + totals.quarantined_suppressed
    result.rows_read = totals.read
    return result


@dataclass
class _DayCounts:
    """What a load did with the rows of some days; every row read falls in exactly one field."""

    loaded: int = 0
    duplicates: int = 0
    superseded: int = 0
    suppressed: int = 0
    quarantined: int = 0
    quarantined_suppressed: int = 0

    @property
    def read(self) -> int:
        return sum(astuple(self))

    @staticmethod
    def total(days: Iterable[_DayCounts]) -> _DayCounts:
        return _DayCounts(*(sum(column) for column in zip(*(astuple(d) for d in days))))  # no days: all zero


@dataclass
class _Chunk:
    files_read: set[str]
    counts: dict[dt.date, _DayCounts]  # every day the chunk replaced
    failed_files: dict[str, str]
    failed_dates: list[dt.date]
    extra_dates: list[dt.date]


def _chunks(files: list[Path], start: dt.date, end: dt.date, chunk_bytes: int) -> list[tuple[dt.date, dt.date]]:
    """Cut start..end into runs of days whose files (by the date in their name) total about
    `chunk_bytes`: a year of L web events staged at once spilled every temp table."""
    sizes: dict[dt.date, int] = {}
    for p in files:
        day = name_date(p)
        if day is not None and start <= day <= end:
            sizes[day] = sizes.get(day, 0) + p.stat().st_size
    chunks, first, total = [], start, 0
    for day in days_between(start, end):
        total += sizes.get(day, 0)
        if total >= chunk_bytes and day < end:
            chunks.append((first, day))
            first, total = day + dt.timedelta(days=1), 0
    return chunks + [(first, end)]


def _check_none_gone(con: duckdb.DuckDBPyConnection, source: Source, files: list[Path], dates: list[dt.date]) -> None:
    """Refuse to reload `dates` if a file that fed them is gone: reloading would drop its rows."""
    present = sorted(str(p) for p in files)
    gone = con.execute(
        f"SELECT DISTINCT _file FROM {source.table} WHERE _partition_date = ANY(?) AND NOT list_contains(?, _file) ORDER BY 1",
        [dates, present],
    ).fetchall()
    if gone:
        raise LoadError(
            f"source {source.name!r}: files loaded before are gone from {source.path}: "
            f"{[g[0] for g in gone][:5]}; restore them (re-loading would drop their rows)"
        )


def _load_days(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    files: list[Path],
    start: dt.date,
    end: dt.date,
    partitions: tuple[dt.date, dt.date],
    batch_id: str,
    suppression: Path | None,
) -> _Chunk:
    """Replace partitions `start`..`end`, and the days new files also feed, in one transaction."""
    spans = _FileSpans(_catalog(con, source))
    requested = set(days_between(start, end))
    _create_staging(con, source)
    info, failed, extra = _stage_feeding_files(con, source, files, spans, requested, end, partitions)
    dates_all = requested | extra
    blocked = _blocked_days(failed, spans, dates_all)
    dates = sorted(dates_all - blocked)
    _check_none_gone(con, source, files, dates)
    new_catalog = []
    for f, v in info.items():
        stat = Path(f).stat()
        new_catalog.append(
            (
                source.name,
                f,
                stat.st_size,
                stat.st_mtime_ns,
                _sha256(Path(f)),
                v.home,
                v.first_day,
                v.last_day,
                v.records,
            )
        )
    _load_suppression_list(con, suppression)
    _rank_staged(con, source)
    counts = _day_counts(con, dates)
    total = _DayCounts.total(counts.values())
    log = [
        batch_id,
        source.name,
        start,
        end,
        len(info),
        total.read,
        total.loaded,
        total.quarantined,
        total.duplicates,
        total.superseded,
        "; ".join(failed.values()) or None,
    ]
    try:
        _replace_partitions(con, source, dates, batch_id, new_catalog, log)
    finally:
        con.execute(
            "DROP TABLE IF EXISTS _staged; DROP TABLE IF EXISTS _staged_q; DROP TABLE IF EXISTS _ranked; "
            "DROP TABLE IF EXISTS _suppression_list"
        )
    return _Chunk(
        set(info), counts, {str(p): c for p, c in failed.items()}, sorted(blocked & dates_all), sorted(extra - blocked)
    )


class _FileSpans:
    """Which days each file feeds, as far as the file catalog knows."""

    def __init__(self, catalog: dict[str, tuple]) -> None:
        self.catalog = catalog

    def span(self, path: Path) -> tuple[dt.date, dt.date] | None:
        """Days an unchanged, catalogued file feeds; None if the file is new or changed."""
        known = self.catalog.get(str(path))
        stat = path.stat()
        if known is None or (known[0], known[1]) != (stat.st_size, stat.st_mtime_ns):
            return None
        days = [d for d in known[2:5] if d is not None]
        return min(days), max(days)

    def feeds(self, path: Path, dates: set[dt.date]) -> bool:
        s = self.span(path)
        if s is None:  # new or changed: read it, unless it was exported after these days
            exported = name_date(path)
            return exported is None or exported <= max(dates)
        return any(s[0] <= d <= s[1] for d in dates)


def _stage_feeding_files(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    files: list[Path],
    spans: _FileSpans,
    requested: set[dt.date],
    end: dt.date,
    partitions: tuple[dt.date, dt.date],
) -> tuple[dict[str, _StagedFile], dict[Path, str], set[dt.date]]:
    """Stage new and changed files and the files that feed the requested days; then, since new
    files may carry rows of other days (a till that synced late), every file that feeds those days
    too, so late rows arrive with the run that first sees them. Days after `end` wait for their own
    chunk, or run: `end` may be the run's as-of. Returns (file info, unreadable files, extra days)."""
    first = [p for p in files if spans.feeds(p, requested)]
    info, failed = _stage(con, source, first, partitions)
    extra: set[dt.date] = set()
    for f, staged in info.items():
        if spans.span(Path(f)) is None:
            extra.update(staged.days())
    extra = {d for d in extra if d <= end} - requested
    if extra:
        more = [p for p in files if p not in first and spans.feeds(p, extra)]
        more_info, more_failed = _stage(con, source, more, partitions)
        info.update(more_info)
        failed.update(more_failed)
    return info, failed, extra


def _blocked_days(failed: dict[Path, str], spans: _FileSpans, dates: set[dt.date]) -> set[dt.date]:
    """The days an unreadable file feeds: they keep what they had."""
    blocked: set[dt.date] = set()
    for path in failed:
        known = spans.span(path) if spans.catalog.get(str(path)) else None
        if known:
            blocked.update(d for d in dates if known[0] <= d <= known[1])
        elif dated := name_date(path):
            blocked.add(dated)
        else:  # nothing tells which days it feeds: every day of this run waits for it
            blocked.update(dates)
    return blocked


def _day_counts(con: duckdb.DuckDBPyConnection, dates: list[dt.date]) -> dict[dt.date, _DayCounts]:
    """What the staged rows of each day come to: loaded, duplicates, superseded, suppressed, quarantined."""
    counts = {day: _DayCounts() for day in dates}
    for day, loaded, duplicates, superseded, suppressed in con.execute(
        """
        SELECT _partition_date, count(*) FILTER (WHERE _delivery_rank = 1 AND NOT _suppressed),
               count(*) FILTER (WHERE _delivery_rank > 1 AND _row_hash = _kept_hash),
               count(*) FILTER (WHERE _delivery_rank > 1 AND _row_hash <> _kept_hash),
               count(*) FILTER (WHERE _delivery_rank = 1 AND _suppressed)
        FROM _ranked WHERE _partition_date = ANY(?) GROUP BY ALL
        """,
        [dates],
    ).fetchall():
        counts[day] = _DayCounts(loaded, duplicates, superseded, suppressed)
    for day, quarantined, quarantined_suppressed in con.execute(
        "SELECT partition_date, count(*) FILTER (WHERE NOT _suppressed), count(*) FILTER (WHERE _suppressed) "
        "FROM _staged_q WHERE partition_date = ANY(?) GROUP BY ALL",
        [dates],
    ).fetchall():
        counts[day] = replace(counts[day], quarantined=quarantined, quarantined_suppressed=quarantined_suppressed)
    return counts


def _replace_partitions(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    dates: list[dt.date],
    batch_id: str,
    new_catalog: list[tuple],
    log: list,
) -> None:
    """In one transaction: the days' raw rows and quarantine replaced by the staged ones, the files
    catalogued, the load logged."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {source.table} WHERE _partition_date = ANY(?)", [dates])
        con.execute("DELETE FROM raw.quarantine WHERE source = ? AND partition_date = ANY(?)", [source.name, dates])
        con.execute(
            f"""
            INSERT INTO {source.table} BY NAME
            SELECT {", ".join(source.contract.names)}, '{source.name}' AS _source, _file, _row_number, _row_hash,
                   _partition_date, ? AS _batch_id, now() AS _loaded_at
            FROM _ranked WHERE _delivery_rank = 1 AND NOT _suppressed AND _partition_date = ANY(?)
            ORDER BY _partition_date, _file, _row_number
            """,
            [batch_id, dates],
        )
        con.execute(
            """
            INSERT INTO raw.quarantine BY NAME
            SELECT ? AS source, ? AS channel, file, row_number, field, reason, raw_record, partition_date,
                   ? AS batch_id, now() AS loaded_at
            FROM _staged_q WHERE NOT _suppressed AND partition_date = ANY(?)
            ORDER BY partition_date, file, row_number
            """,
            [source.name, source.channel, batch_id, dates],
        )
        if new_catalog:
            insert_rows(con, "raw._file_catalog", new_catalog, verb="INSERT OR REPLACE", extra="now()")
        con.execute("INSERT INTO raw._load_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())", log)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _load_suppression_list(con: duckdb.DuckDBPyConnection, suppression: Path | None) -> None:
    """`_suppression_list`: the row hashes of erased persons, which must not be loaded again."""
    hashes = (
        f"SELECT row_hash FROM read_csv('{suppression}', header = true, columns = {{'erasure_id': 'VARCHAR', 'row_hash': 'VARCHAR'}})"
        if suppression
        else "SELECT NULL::VARCHAR AS row_hash WHERE false"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _suppression_list AS {hashes}")
    con.execute("ALTER TABLE _staged_q ADD COLUMN _suppressed BOOLEAN")
    con.execute("UPDATE _staged_q SET _suppressed = md5(raw_record) IN (SELECT row_hash FROM _suppression_list)")


def insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple], verb: str = "INSERT", extra: str = ""
) -> None:
    """Insert Python tuples as one statement of column lists."""
    if not rows:
        return
    columns = [list(c) for c in zip(*rows)]
    selects = [f"unnest(${i + 1})" for i in range(len(columns))] + ([extra] if extra else [])
    con.execute(f"{verb} INTO {table} SELECT {', '.join(selects)}", columns)


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
