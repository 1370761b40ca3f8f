"""Read one extract file into a DuckDB temp table with DuckDB's own readers, keeping each record's
position in the file so that lineage and quarantine can point at the exact row or line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from ingestion.sources import Source


class UnreadableFile(RuntimeError):
    """The file as a whole cannot be read; the message names the file and the cause."""

    def __init__(self, path: Path, cause: str):
        self.path = path
        super().__init__(f"cannot read {path}: {cause}")


@dataclass(frozen=True)
class FileRead:
    """A file read into `table`: columns of the file (JSON lines: one `_line` column) plus `_row_number`."""

    path: Path
    table: str
    columns: dict[str, str]  # column -> DuckDB type
    # Records the reader itself rejected (CSV shape errors), ready for quarantine.
    rejects_table: str | None


def _describe(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {name: type_ for name, type_, *_ in con.execute(f"DESCRIBE {table}").fetchall()}


def _read_csv(con: duckdb.DuckDBPyConnection, source: Source, path: Path, table: str) -> str:
    rejects = f"{table}_rejects"
    # parallel=false keeps ORDINALITY equal to the order of accepted records in the file;
    # store_rejects sends malformed records (wrong column count, bad quoting, bad UTF-8) aside
    # instead of failing the file or silently skipping them.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table}_accepted AS
        SELECT * FROM read_csv(?, delim = ?, quote = '"', escape = '"', header = true, all_varchar = true,
                               strict_mode = true, parallel = false, store_rejects = true,
                               rejects_table = '{rejects}_errors', rejects_scan = '{rejects}_scans')
        WITH ORDINALITY
        """,
        [str(path), str(source.options.get("delimiter", ","))],
    )
    # The reject table numbers records (header = 1); turn accepted ordinals into the same record
    # numbers by skipping the rejected ones.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {rejects} AS
        SELECT DISTINCT ON (line) line - 1 AS _row_number, column_name AS field,
               error_type || ': ' || error_message AS reason, csv_line AS raw_record
        FROM {rejects}_errors ORDER BY line
        """
    )
    accepted = con.execute(f"SELECT count(*) FROM {table}_accepted").fetchall()[0][0]
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        WITH record_numbers AS (
            SELECT n AS _row_number, row_number() OVER (ORDER BY n) AS ordinality
            FROM range(1, {accepted} + (SELECT count(*) FROM {rejects}) + 1) AS r(n)
            WHERE n NOT IN (SELECT _row_number FROM {rejects})
        )
        SELECT a.* EXCLUDE (ordinality), r._row_number
        FROM {table}_accepted AS a JOIN record_numbers AS r USING (ordinality)
        """
    )
    con.execute(f"DROP TABLE {table}_accepted; DROP TABLE IF EXISTS {rejects}_errors; DROP TABLE IF EXISTS {rejects}_scans")
    return rejects


def _read_jsonl(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    # read_text + split keeps the exact line number of every line, including broken JSON that
    # read_json would reject or (with ignore_errors) silently drop.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT _row_number, rtrim(_line, chr(13)) AS _line FROM (
            SELECT generate_subscripts(lines, 1) AS _row_number, unnest(lines) AS _line
            FROM (SELECT string_split(content, chr(10)) AS lines FROM read_text(?))
        ) WHERE trim(_line) <> ''
        """,
        [str(path)],
    )


def _read_parquet(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _row_number
        FROM read_parquet(?, file_row_number = true)
        """,
        [str(path)],
    )


def read_file(con: duckdb.DuckDBPyConnection, source: Source, path: Path, table: str) -> FileRead:
    """Load `path` into temp table `table`; raise UnreadableFile if the file cannot be read at all."""
    rejects = None
    try:
        if not path.is_file():
            raise UnreadableFile(path, "file not found")
        with path.open("rb"):  # permissions and the like fail here with a plain OS message
            pass
        if source.format == "csv":
            rejects = _read_csv(con, source, path, table)
        elif source.format == "jsonl":
            _read_jsonl(con, path, table)
        else:
            _read_parquet(con, path, table)
    except OSError as e:
        raise UnreadableFile(path, e.strerror or str(e)) from None
    except duckdb.Error as e:
        raise UnreadableFile(path, str(e).splitlines()[0]) from None
    columns = _describe(con, table)
    if source.format != "jsonl":
        missing = [f"{col!r} (for {fld})" for fld, col in source.columns.items() if col not in columns]
        if missing:
            shown = [c for c in columns if c != "_row_number"]
            raise UnreadableFile(path, f"mapped columns {', '.join(missing)} not in the file; it has {shown}")
    return FileRead(path, table, columns, rejects)
