"""Read extract files into a DuckDB temp table with DuckDB's own readers, many files per call,
keeping each record's file and position so lineage and quarantine point at the exact row or line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from ingestion.sources import Source


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


def _read_csv(con: duckdb.DuckDBPyConnection, source: Source, files: list[str], table: str) -> str:
    rejects = f"{table}_rejects"
    # parallel=false keeps ORDINALITY in file order; store_rejects sets malformed records aside
    # (instead of failing the file or skipping them silently) with their record number.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table}_accepted AS
        SELECT * FROM read_csv(?, delim = ?, quote = '"', escape = '"', header = true, all_varchar = true,
                               filename = '_file', strict_mode = true, parallel = false,
                               store_rejects = true, rejects_table = '{rejects}_errors', rejects_scan = '{rejects}_scans')
        WITH ORDINALITY
        """,
        [files, str(source.options.get("delimiter", ","))],
    )
    # Reject lines count records with the header as 1.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {rejects} AS
        SELECT DISTINCT ON (s.file_path, e.line) s.file_path AS _file, e.line - 1 AS _row_number,
               e.column_name AS field, e.error_type || ': ' || e.error_message AS reason, e.csv_line AS raw_record
        FROM {rejects}_errors AS e JOIN {rejects}_scans AS s USING (scan_id, file_id)
        ORDER BY s.file_path, e.line
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
    con.execute(f"DROP TABLE {table}_accepted; DROP TABLE IF EXISTS {rejects}_errors; DROP TABLE IF EXISTS {rejects}_scans")
    return rejects


def _read_jsonl(con: duckdb.DuckDBPyConnection, files: list[str], table: str) -> None:
    # read_text + split keeps the exact line number of every line, including broken JSON that
    # read_json would reject or (with ignore_errors) drop silently. Blank lines (spaces, tabs, CR)
    # are skipped. Two unnests in one SELECT advance together (line, number). No trim() or
    # rtrim(): DuckDB scans the whole string for them, which took 29 s on 3 million events.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT _file, _row_number, CASE WHEN ends_with(_line, chr(13)) THEN left(_line, -1) ELSE _line END AS _line FROM (
            SELECT filename AS _file, unnest(lines) AS _line, unnest(range(1, len(lines) + 1)) AS _row_number
            FROM (SELECT filename, string_split(content, chr(10)) AS lines FROM read_text(?))
        ) WHERE regexp_matches(_line, '[^ \t\r]')
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


def _read(con: duckdb.DuckDBPyConnection, source: Source, files: list[Path], table: str) -> FilesRead:
    names = [str(p) for p in files]
    rejects = None
    try:
        for p in files:  # missing files and permissions fail here with a plain OS message
            with p.open("rb"):
                pass
        if source.format == "csv":
            rejects = _read_csv(con, source, names, table)
        elif source.format == "jsonl":
            _read_jsonl(con, names, table)
        else:
            _read_parquet(con, names, table)
    except OSError as e:
        raise UnreadableFile(Path(e.filename or names[0]), e.strerror or str(e)) from None
    except duckdb.Error as e:
        raise UnreadableFile(files[0], str(e).splitlines()[0]) from None
    columns = {
        name: type_
        for name, type_, *_ in con.execute(f"DESCRIBE {table}").fetchall()
        if name not in ("_file", "_row_number")
    }
    if source.format != "jsonl":
        missing = [f"{col!r} (for {fld})" for fld, col in source.columns.items() if col not in columns]
        if missing:
            raise UnreadableFile(files[0], f"mapped columns {', '.join(missing)} not in the file; it has {list(columns)}")
    return FilesRead(table, columns, rejects)


def read_files(
    con: duckdb.DuckDBPyConnection, source: Source, files: list[Path], table: str
) -> tuple[FilesRead | None, dict[Path, str]]:
    """Read `files` into temp table `table`, in one call when they all read cleanly.

    Otherwise each file is read alone, to name the unreadable ones and their cause, and the
    readable ones are combined by column name (which also covers files whose headers differ).
    Returns the read (None if no file was readable) and {unreadable file: cause}.
    """
    if not files:
        return None, {}
    try:
        return _read(con, source, files, table), {}
    except UnreadableFile as e:
        if len(files) == 1:
            return None, {files[0]: e.cause}
    failed: dict[Path, str] = {}
    parts: list[FilesRead] = []
    for i, p in enumerate(files):
        try:
            parts.append(_read(con, source, [p], f"{table}_{i}"))
        except UnreadableFile as e:
            failed[p] = e.cause
    if not parts:
        return None, failed
    union = " UNION ALL BY NAME ".join(f"SELECT * FROM {part.table}" for part in parts)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {union}")
    rejects = None
    if any(part.rejects_table for part in parts):
        rejects = f"{table}_rejects"
        con.execute(f"CREATE OR REPLACE TEMP TABLE {rejects} AS " + " UNION ALL ".join(
            f"SELECT * FROM {part.rejects_table}" for part in parts if part.rejects_table))
    for part in parts:
        con.execute(f"DROP TABLE {part.table}; DROP TABLE IF EXISTS {part.rejects_table or part.table + '_none'}")
    columns = {c: t for part in parts for c, t in part.columns.items()}
    return FilesRead(table, columns, rejects), failed
