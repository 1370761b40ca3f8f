"""Read extract files into a DuckDB temp table, keeping each record's file and position so lineage
and quarantine point at the exact row or line.

The fast path is DuckDB's own readers, many files per call, CSV with the dialect and each file's
header given (its sniffer does not run). A file they cannot be trusted with (another encoding than
UTF-8, a quote left open, mixed line endings, a NUL byte), that they refuse (invalid UTF-8 in JSON
lines) or whose records they reject for invalid UTF-8 or a line over DuckDB's limit takes the slow
path, ingestion/records.py, record by record: the outcome is the same, only slower. Excel
workbooks are read with fastexcel (calamine).
"""

from __future__ import annotations

import codecs
import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from ingestion.records import read_csv_records, read_json_lines
from ingestion.sources import Source

SCAN_CHUNK = 1 << 24


class UnreadableFile(RuntimeError):
    """A file as a whole cannot be read; the message names the file and the cause."""

    def __init__(self, path: Path, cause: str):
        self.path = path
        self.cause = cause
        super().__init__(f"cannot read {path}: {cause}")


@dataclass(frozen=True)
class FilesRead:
    """Files read into `table`: the files' columns (JSON lines: one `_line`) plus `_file`, `_row_number`."""

    table: str
    columns: dict[str, str]  # column -> DuckDB type, without _file and _row_number
    # CSV records the reader rejected (wrong column count, bad quoting or UTF-8), for quarantine.
    rejects_table: str | None

    @property
    def is_json_lines(self) -> bool:
        return set(self.columns) == {"_line"}


def _csv_header(path: Path, delimiter: str) -> tuple[str, ...]:
    """The column names on the file's first line (a UTF-8 BOM dropped)."""
    with path.open("rb") as f:
        first = f.readline()
    text = first.decode("utf-8-sig").rstrip("\r\n").split("\r")[0]  # a lone-CR file is one "line"
    return tuple(next(csv.reader([text], delimiter=delimiter), []))


def _read_csv(con: duckdb.DuckDBPyConnection, source: Source, files: list[str], table: str) -> str:
    rejects = f"{table}_rejects"
    delimiter = str(source.options.get("delimiter", ","))
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in files:  # files with the same header are read in one call
        groups.setdefault(_csv_header(Path(name), delimiter), []).append(name)
    # The dialect and columns are given, so DuckDB's sniffer does not run (it fails a whole file on a
    # bad quote in its sample). parallel=false keeps ORDINALITY in file order; store_rejects sets
    # malformed records aside (instead of failing the file or skipping them silently) with their
    # record number.
    selects = []
    for i, (header, group) in enumerate(groups.items()):
        columns = ", ".join(f"'{c.replace(chr(39), chr(39) * 2)}': 'VARCHAR'" for c in header)
        selects.append(
            f"""SELECT * FROM read_csv({_sql_list(group)}, delim = '{delimiter.replace(chr(39), chr(39) * 2)}',
                quote = '"', escape = '"', header = true, auto_detect = false, columns = {{{columns}}},
                filename = '_file', strict_mode = true, parallel = false, store_rejects = true,
                rejects_table = '{rejects}_errors_{i}', rejects_scan = '{rejects}_scans_{i}') WITH ORDINALITY"""
        )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_accepted AS {' UNION ALL BY NAME '.join(selects)}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {rejects}_found AS "
        + " UNION ALL ".join(
            f"SELECT s.file_path, e.line, e.column_name, e.error_type, e.error_message, e.csv_line "
            f"FROM {rejects}_errors_{i} AS e JOIN {rejects}_scans_{i} AS s USING (scan_id, file_id)"
            for i in range(len(groups))
        )
    )
    # Reject lines count records with the header as 1.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {rejects} AS
        SELECT DISTINCT ON (file_path, line) file_path AS _file, line - 1 AS _row_number,
               column_name AS field, error_type || ': ' || error_message AS reason, csv_line AS raw_record
        FROM {rejects}_found
        ORDER BY file_path, line
        """
    )
    # Accepted record k of a file is the k-th record number that was not rejected.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        WITH accepted AS (
            SELECT *, row_number() OVER (PARTITION BY _file ORDER BY ordinality) AS k FROM {table}_accepted
        ), totals AS (
            SELECT _file, count(*) AS n FROM (
                SELECT _file FROM {table}_accepted UNION ALL SELECT _file FROM {rejects}) GROUP BY _file
        ), numbers AS (
            SELECT t._file, r.n AS _row_number, row_number() OVER (PARTITION BY t._file ORDER BY r.n) AS k
            FROM totals AS t, LATERAL range(1, t.n + 1) AS r(n)
            ANTI JOIN {rejects} AS x ON x._file = t._file AND x._row_number = r.n
        )
        SELECT a.* EXCLUDE (ordinality, k), n._row_number
        FROM accepted AS a JOIN numbers AS n USING (_file, k)
        """
    )
    drops = [
        f"DROP TABLE IF EXISTS {rejects}_errors_{i}; DROP TABLE IF EXISTS {rejects}_scans_{i}"
        for i in range(len(groups))
    ]
    con.execute(f"DROP TABLE {table}_accepted; DROP TABLE {rejects}_found; {'; '.join(drops)}")
    return rejects


def _sql_list(names: list[str]) -> str:
    return "[" + ", ".join("'" + n.replace("'", "''") + "'" for n in names) + "]"


def _read_jsonl(con: duckdb.DuckDBPyConnection, files: list[str], table: str) -> None:
    # read_text + split keeps the exact line number of every line, including broken JSON that
    # read_json would reject or (with ignore_errors) drop silently. Blank lines (spaces, tabs, CR)
    # are skipped, a UTF-8 BOM is dropped. Two unnests in one SELECT advance together (line,
    # number). No trim() or rtrim(): DuckDB scans the whole string for them.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT _file, _row_number,
               CASE WHEN _row_number = 1 AND starts_with(_line, chr(65279)) THEN substr(_line, 2) ELSE _line END AS _line
        FROM (
            SELECT _file, _row_number, CASE WHEN ends_with(_line, chr(13)) THEN left(_line, -1) ELSE _line END AS _line FROM (
                SELECT filename AS _file, unnest(lines) AS _line, unnest(range(1, len(lines) + 1)) AS _row_number
                FROM (SELECT filename, string_split(content, chr(10)) AS lines FROM read_text(?))
            ) WHERE regexp_matches(_line, '[^ \t\r\ufeff]')
        )
        """,
        [files],
    )


def _read_parquet(con: duckdb.DuckDBPyConnection, files: list[str], table: str) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT * EXCLUDE (file_row_number, filename), filename AS _file, file_row_number + 1 AS _row_number
        FROM read_parquet(?, filename = true, file_row_number = true, union_by_name = true)
        """,
        [files],
    )


def _read_excel(con: duckdb.DuckDBPyConnection, source: Source, path: Path, table: str) -> None:
    """One sheet (options.sheet: name or 0-based index; default the first) with its header on
    options.header_row (1-based; default 1). Every cell becomes text as a CSV would hold it: date
    cells as ISO dates and times, whole numbers without '.0'. _row_number is the sheet's row."""
    import fastexcel
    import polars as pl

    # fastexcel warns of every empty column it types as text: every column becomes text here anyway.
    logging.getLogger("fastexcel").setLevel(logging.ERROR)

    sheet = source.options.get("sheet", 0)
    header_row = int(source.options.get("header_row", 1))
    try:
        frame = fastexcel.read_excel(str(path)).load_sheet(sheet, header_row=header_row - 1).to_polars()
    except Exception as e:  # calamine's and fastexcel's errors share no base class
        raise UnreadableFile(path, f"not a readable Excel sheet {sheet!r}: {str(e).splitlines()[0]}") from None

    def as_text(name: str, dtype: pl.DataType) -> pl.Expr:
        col = pl.col(name)
        if dtype == pl.Datetime:
            return col.dt.strftime("%Y-%m-%d %H:%M:%S")
        if dtype == pl.Date:
            return col.dt.strftime("%Y-%m-%d")
        if dtype.is_float():
            return (
                pl.when(col == col.round())
                .then(col.cast(pl.Int64, strict=False).cast(pl.String))
                .otherwise(col.cast(pl.String))
            )
        return col.cast(pl.String)

    frame = frame.select([as_text(n, t).alias(n) for n, t in frame.schema.items()]).with_columns(
        _file=pl.lit(str(path)), _row_number=pl.int_range(header_row + 1, header_row + 1 + pl.len(), dtype=pl.Int64)
    )
    con.register("_excel_sheet", frame.to_arrow())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM _excel_sheet")
    con.unregister("_excel_sheet")


def _read(
    con: duckdb.DuckDBPyConnection, source: Source, files: list[Path], table: str, slowly: bool = False
) -> FilesRead:
    """Read `files` by the fast path, or (slowly) the one file record by record."""
    names = [str(p) for p in files]
    rejects = None
    encoding = str(source.options.get("encoding", "utf-8"))
    try:
        for p in files:  # missing files and permissions fail here with a plain OS message
            with p.open("rb"):
                pass
        if source.format == "xlsx":
            _read_excel(con, source, files[0], table)
        elif slowly and source.format == "csv":
            read_csv_records(con, files[0], table, str(source.options.get("delimiter", ",")), encoding)
            rejects = f"{table}_rejects"
        elif slowly and source.format == "jsonl":
            read_json_lines(con, files[0], table, encoding)
            rejects = f"{table}_rejects"
        elif source.format == "csv":
            rejects = _read_csv(con, source, names, table)
        elif source.format == "jsonl":
            _read_jsonl(con, names, table)
        else:
            _read_parquet(con, names, table)
    except OSError as e:
        raise UnreadableFile(Path(e.filename or names[0]), e.strerror or str(e)) from None
    except (duckdb.Error, ValueError, pa.ArrowException) as e:
        raise UnreadableFile(files[0], str(e).splitlines()[0]) from None
    columns = {
        name: type_
        for name, type_, *_ in con.execute(f"DESCRIBE {table}").fetchall()
        if name not in ("_file", "_row_number")
    }
    if source.format != "jsonl":
        missing = [f"{col!r} (for {fld})" for fld, col in source.columns.items() if col not in columns]
        if missing:
            raise UnreadableFile(
                files[0], f"mapped columns {', '.join(missing)} not in the file; it has {list(columns)}"
            )
    return FilesRead(table, columns, rejects)


def needs_slow_path(source: Source, path: Path) -> str | None:
    """Why DuckDB's reader cannot be trusted with this file, or None. One pass over the bytes for
    CSV: DuckDB drops a last record whose quote is never closed without a word, and fails a file
    whose line endings are mixed."""
    if source.format == "xlsx":
        return "an Excel workbook"
    if codecs.lookup(str(source.options.get("encoding", "utf-8"))).name != "utf-8":
        return f"encoded in {source.options['encoding']}"
    if source.format != "csv":
        return None
    quotes = crlf = lf = cr = 0
    nul, last = False, b""
    with path.open("rb") as f:
        while chunk := f.read(SCAN_CHUNK):
            pair = last + chunk[:1]
            quotes += chunk.count(b'"')
            nul = nul or b"\x00" in chunk
            crlf += chunk.count(b"\r\n") + (pair == b"\r\n")
            lf += chunk.count(b"\n")
            cr += chunk.count(b"\r")
            last = chunk[-1:]
    if nul:
        return "a NUL byte"
    if quotes % 2:
        return "a quote left open"
    if (crlf and (lf != crlf or cr != crlf)) or (cr and lf and not crlf):
        return "mixed line endings"
    return None


def read_files(
    con: duckdb.DuckDBPyConnection, source: Source, files: list[Path], table: str
) -> tuple[FilesRead | None, dict[Path, str]]:
    """Read `files` into temp table `table`: those DuckDB can be trusted with in one call, the
    others (needs_slow_path) record by record.

    When the call fails, the files are read in fewer and fewer at a time (_read_fast), and a file
    DuckDB refuses is read record by record, as is one with records that path reads better
    (_files_to_read_again). The parts are combined by column name (which also covers files whose
    headers differ). Returns the read (None if no file was readable) and {unreadable file: cause}.
    """
    if not files:
        return None, {}
    slow: list[Path] = []
    failed: dict[Path, str] = {}
    for p in files:
        try:
            if needs_slow_path(source, p):
                slow.append(p)
        except OSError as e:  # gone or unreadable since it was listed: only this file fails
            failed[p] = e.strerror or str(e)
    fast = [p for p in files if p not in set(slow) and p not in failed]
    parts: list[FilesRead] = []
    refused = _read_fast(con, source, fast, f"{table}_fast", parts)
    for read in parts:
        garbled = _files_to_read_again(con, read)
        _drop_files(con, read, garbled)
        slow += garbled
    if len(parts) == 1 and not slow and not refused and not failed:
        return _renamed(con, parts[0], table), {}
    for i, p in enumerate([*refused, *slow]):
        if p in refused and source.format == "parquet":
            failed[p] = refused[p]
            continue
        try:  # a file DuckDB refuses is read record by record
            parts.append(_read(con, source, [p], f"{table}_{i}", slowly=True))
        except UnreadableFile as e:
            failed[p] = e.cause
    if not parts:
        return None, failed
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {part.table}" for part in parts)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {union}")
    rejects = None
    if any(part.rejects_table for part in parts):
        rejects = f"{table}_rejects"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {rejects} AS "
            + " UNION ALL ".join(f"SELECT * FROM {part.rejects_table}" for part in parts if part.rejects_table)
        )
    for part in parts:
        con.execute(f"DROP TABLE {part.table}; DROP TABLE IF EXISTS {part.rejects_table or part.table + '_none'}")
    columns = {c: t for part in parts for c, t in part.columns.items()}
    return FilesRead(table, columns, rejects), failed


def _read_fast(
    con: duckdb.DuckDBPyConnection, source: Source, files: list[Path], table: str, parts: list[FilesRead]
) -> dict[Path, str]:
    """Read `files` by DuckDB in as few calls as possible, appending the reads to `parts`: when a
    call fails on a file its error names, the others are read again without it; else they are read
    in two halves, so one refused file costs a few calls, not one per file. Returns {file DuckDB
    refused: its cause}."""
    if not files:
        return {}
    try:
        parts.append(_read(con, source, files, table))
        return {}
    except UnreadableFile as e:
        if len(files) == 1:
            return {files[0]: e.cause}
        named = [p for p in files if str(p) in e.cause]  # DuckDB's sniffer names the file it failed on
        if len(named) == 1:
            rest = [p for p in files if p != named[0]]
            return {named[0]: e.cause} | _read_fast(con, source, rest, f"{table}_r", parts)
    half = len(files) // 2
    return _read_fast(con, source, files[:half], f"{table}_a", parts) | _read_fast(
        con, source, files[half:], f"{table}_b", parts
    )


def _files_to_read_again(con: duckdb.DuckDBPyConnection, read: FilesRead) -> list[Path]:
    """Files with records DuckDB rejected that the slow path reads better: invalid UTF-8 (to show
    the bytes escaped) and lines over DuckDB's maximum size (which it loads)."""
    if not read.rejects_table:
        return []
    rows = con.execute(
        f"SELECT DISTINCT _file FROM {read.rejects_table} "
        "WHERE starts_with(reason, 'INVALID ENCODING') OR starts_with(reason, 'LINE SIZE OVER MAXIMUM')"
    ).fetchall()
    return [Path(f) for (f,) in rows]


def _drop_files(con: duckdb.DuckDBPyConnection, read: FilesRead, files: list[Path]) -> None:
    """Remove the rows of `files` from a read, to read them again another way."""
    if files:
        names = [str(p) for p in files]
        con.execute(f"DELETE FROM {read.table} WHERE _file IN (SELECT unnest(?))", [names])
        con.execute(f"DELETE FROM {read.rejects_table} WHERE _file IN (SELECT unnest(?))", [names])


def _renamed(con: duckdb.DuckDBPyConnection, read: FilesRead, table: str) -> FilesRead:
    con.execute(f"ALTER TABLE {read.table} RENAME TO {table}")
    rejects = None
    if read.rejects_table:
        rejects = f"{table}_rejects"
        con.execute(f"ALTER TABLE {read.rejects_table} RENAME TO {rejects}")
    return FilesRead(table, read.columns, rejects)
