"""The slow path of reading: split a file into records in Python, so that one bad line costs that
line, not the file. Used where DuckDB's readers cannot be trusted with a file: another encoding
than UTF-8, unbalanced quotes, mixed line endings, NUL bytes, lines longer than DuckDB's limit,
invalid UTF-8 in JSON lines. Good records land in a DuckDB temp table shaped like the fast path's
(the file's columns as VARCHAR, or `_line`, plus `_file` and `_row_number`); bad ones in a rejects
table (`_file`, `_row_number`, `field`, `reason`, `raw_record`) with the raw bytes escaped.

Memory is bounded: files are read line by line and records are written in batches.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

BATCH = 50_000
BLOCK_BYTES = 1 << 24  # JSON lines are decoded this much at a time
MAX_RECORD_LINES = 200  # a quote left open joins at most this many lines before its line is rejected
csv.field_size_limit(sys.maxsize)  # a long line is data, not an error (DuckDB stops at its line limit)

REJECTS_SCHEMA = pa.schema(
    [
        ("_file", pa.string()),
        ("_row_number", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("raw_record", pa.string()),
    ]
)


@dataclass(frozen=True)
class Line:
    number: int  # physical line, 1-based
    text: str | None  # None when the bytes are invalid in the encoding
    raw: bytes


def _is_wide(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def decoded_lines(path: Path, encoding: str) -> Iterator[Line]:
    """The file's lines, decoded one by one: LF, CRLF and lone CR all end a line; a UTF-8 BOM is
    dropped. A line whose bytes are invalid in `encoding` comes with text None."""
    number = 0
    if _is_wide(encoding):  # UTF-16/32: newlines are not single bytes; decode as a stream
        with path.open("r", encoding=encoding, errors="replace", newline="") as f:
            for decoded in _split_cr(f):
                number += 1
                yield Line(
                    number, None if "\ufffd" in decoded else decoded, decoded.encode("utf-8", "backslashreplace")
                )
        return
    with path.open("rb") as f:
        for chunk in f:
            body = chunk.rstrip(b"\r\n")
            for raw in body.split(b"\r") if b"\r" in body else [body]:
                number += 1
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                try:
                    yield Line(number, raw.decode(encoding), raw)
                except UnicodeDecodeError:
                    yield Line(number, None, raw)


def _split_cr(f: io.TextIOBase) -> Iterator[str]:
    for line in f:
        body = line.rstrip("\r\n")
        yield from body.split("\r") if "\r" in body else [body]


def escaped(raw: bytes) -> str:
    """Raw bytes as text that shows every byte: invalid UTF-8 as \\xNN, NUL as \\x00."""
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


class _Sink:
    """Accepted rows and rejects, written to DuckDB temp tables in batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, columns: list[str], file: str) -> None:
        self.con, self.table, self.columns, self.file = con, table, columns, file
        self.rows: list[list[str | None]] = []
        self.numbers: list[int] = []
        self.rejects: list[tuple[str, int, str | None, str, str]] = []
        schema = ", ".join(f'"{c}" VARCHAR' for c in [*columns, "_file"])
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({schema}, _row_number BIGINT)")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table}_rejects "
            "(_file VARCHAR, _row_number BIGINT, field VARCHAR, reason VARCHAR, raw_record VARCHAR)"
        )

    def accept(self, number: int, values: list[str | None]) -> None:
        self.rows.append(values)
        self.numbers.append(number)
        if len(self.rows) >= BATCH:
            self.flush()

    def add_lines(self, lines: pa.Array, numbers: np.ndarray) -> None:
        """Many JSON lines at once, cleaned as the fast path cleans them: a CR before the newline
        and a BOM dropped, blank lines skipped."""
        self.flush()
        self.con.register("_lines_batch", pa.table({"line": lines, "number": pa.array(numbers, pa.int64())}))
        self.con.execute(
            f"""
            INSERT INTO {self.table}
            SELECT CASE WHEN number = 1 AND starts_with(l, chr(65279)) THEN substr(l, 2) ELSE l END, ?, number
            FROM (SELECT CASE WHEN ends_with(line, chr(13)) THEN left(line, -1) ELSE line END AS l, number
                  FROM _lines_batch)
            WHERE regexp_matches(l, '[^ \t\r\ufeff]')
            """,
            [self.file],
        )
        self.con.unregister("_lines_batch")

    def reject(self, number: int, reason: str, raw: str, field: str | None = None) -> None:
        self.rejects.append((self.file, number, field, reason, raw))

    def flush(self) -> None:
        if self.rows:
            data = {c: pa.array([r[i] for r in self.rows], pa.string()) for i, c in enumerate(self.columns)}
            batch = pa.table(
                {
                    **data,
                    "_file": pa.array([self.file] * len(self.rows), pa.string()),
                    "_row_number": pa.array(self.numbers, pa.int64()),
                }
            )
            self._insert(self.table, batch)
            self.rows, self.numbers = [], []
        if self.rejects:
            self._insert(
                f"{self.table}_rejects",
                pa.Table.from_pylist([dict(zip(REJECTS_SCHEMA.names, r)) for r in self.rejects], REJECTS_SCHEMA),
            )
            self.rejects = []

    def _insert(self, table: str, rows: pa.Table) -> None:
        self.con.register("_records_batch", rows)
        self.con.execute(f"INSERT INTO {table} SELECT * FROM _records_batch")
        self.con.unregister("_records_batch")


def _csv_records(lines: Iterator[Line], quote: str) -> Iterator[tuple[int, str | None, bytes, str | None]]:
    """(first line number, record text, raw bytes, reason) per record: lines joined while a quote
    is open. A line whose quote is still open after MAX_RECORD_LINES lines, or at the end of the
    file, is a record of its own with reason 'quote left open'; reading goes on after it."""
    pending: list[Line] = []
    for line in lines:
        if line.text is None:
            if pending:  # a record cut by an undecodable line: its first line is the bad one
                yield pending[0].number, None, pending[0].raw, "quote left open"
                yield from _csv_records(iter(pending[1:] + [line]), quote)
                pending = []
                continue
            yield line.number, None, line.raw, "invalid"
            continue
        pending.append(line)
        text = "\n".join(p.text or "" for p in pending)
        if text.count(quote) % 2 == 0:
            yield pending[0].number, text, b"\n".join(p.raw for p in pending), None
            pending = []
        elif len(pending) >= MAX_RECORD_LINES:
            yield pending[0].number, None, pending[0].raw, "quote left open"
            yield from _csv_records(iter(pending[1:]), quote)
            pending = []
    if pending:
        yield pending[0].number, None, pending[0].raw, "quote left open"
        yield from _csv_records(iter(pending[1:]), quote)


def read_csv_records(
    con: duckdb.DuckDBPyConnection, path: Path, table: str, delimiter: str, encoding: str
) -> list[str]:
    """Read one CSV file record by record into `table` and `{table}_rejects`; returns its columns.

    Record numbers count records after the header (the first is 1), as DuckDB's reader does."""
    records = _csv_records(decoded_lines(path, encoding), '"')
    header: list[str] | None = None
    sink: _Sink | None = None
    number = 0
    for _, text, raw, reason in records:
        if header is None:
            if text is None:
                raise ValueError(f"its header line is unreadable ({reason or 'invalid'} {encoding})")
            if not text.strip():
                continue
            header = next(csv.reader([text], delimiter=delimiter, strict=True))
            sink = _Sink(con, table, header, str(path))
            continue
        assert sink is not None and header is not None
        if text is not None and not text.strip():
            continue  # a blank line is no record, as in DuckDB
        number += 1
        if reason == "invalid":
            sink.reject(number, f"INVALID ENCODING: not valid {encoding}", escaped(raw))
        elif reason is not None:
            sink.reject(number, "UNTERMINATED QUOTE: a quote opened on this line is never closed", escaped(raw))
        elif text is None or "\x00" in text:
            sink.reject(number, "NUL BYTE: the record holds a NUL byte", escaped(raw))
        else:
            try:
                values = next(csv.reader([text], delimiter=delimiter, strict=True))
            except csv.Error as e:
                sink.reject(number, f"MALFORMED QUOTING: {e}", escaped(raw))
                continue
            if len(values) != len(header):
                sink.reject(
                    number,
                    f"{'TOO MANY' if len(values) > len(header) else 'MISSING'} COLUMNS: "
                    f"{len(values)} fields, the header has {len(header)}",
                    escaped(raw),
                )
                continue
            sink.accept(number, [v if v != "" else None for v in values])
    if sink is None or header is None:
        raise ValueError("it holds no header line")
    sink.flush()
    return header


def read_json_lines(con: duckdb.DuckDBPyConnection, path: Path, table: str, encoding: str) -> None:
    """Read one JSON-lines file into `table` (`_line`) and `{table}_rejects`: a line invalid in the
    encoding is rejected with its bytes escaped; broken JSON is left to conform. Decoded a block of
    lines at a time, in C: only the rare invalid line is looked at in Python."""
    sink = _Sink(con, table, ["_line"], str(path))
    if _is_wide(encoding):
        _add_wide_json_lines(sink, path, encoding)
    else:
        _add_json_line_blocks(sink, path, encoding)
    sink.flush()


def _add_wide_json_lines(sink: _Sink, path: Path, encoding: str) -> None:
    """UTF-16/32, rare: newlines are not single bytes, so the file is decoded line by line."""
    texts, numbers = [], []
    for line in decoded_lines(path, encoding):
        if line.text is None:
            sink.reject(line.number, f"INVALID ENCODING: not valid {encoding}", escaped(line.raw))
        else:
            texts.append(line.text)
            numbers.append(line.number)
    sink.add_lines(pa.array(texts, pa.string()), np.asarray(numbers, dtype=np.int64))


def _add_json_line_blocks(sink: _Sink, path: Path, encoding: str) -> None:
    first = 1
    for block in _line_blocks(path):
        text, invalid = _decoded(block, encoding)
        lines = pa.array(text.split("\n"), pa.string())
        numbers = np.arange(first, first + len(lines), dtype=np.int64)
        first += len(lines)
        if invalid:
            raw = block.split(b"\n")
            for i in sorted(invalid):
                sink.reject(int(numbers[i]), f"INVALID ENCODING: not valid {encoding}", escaped(raw[i].rstrip(b"\r")))
            keep = np.ones(len(lines), dtype=bool)
            keep[sorted(invalid)] = False
            lines, numbers = lines.filter(pa.array(keep)), numbers[keep]
        sink.add_lines(lines, numbers)


def _line_blocks(path: Path, size: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The file in blocks of whole lines (each but the last ends before a newline, which it drops)."""
    rest = b""
    with path.open("rb") as f:
        while chunk := f.read(size):
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            yield data[:cut]
            rest = data[cut + 1 :]
    if rest:
        yield rest


_DECODE_ERRORS: list[int] = []


def _note_decode_error(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    _DECODE_ERRORS.append(error.start)
    return "\ufffd", error.end


codecs.register_error("crm_note_invalid", _note_decode_error)


def _decoded(block: bytes, encoding: str) -> tuple[str, set[int]]:
    """`block` decoded in one pass (in C), and the indexes of its lines holding a byte sequence
    invalid in `encoding` (the error handler notes where each one starts)."""
    _DECODE_ERRORS.clear()
    text = block.decode(encoding, "crm_note_invalid")
    return text, {block.count(b"\n", 0, position) for position in _DECODE_ERRORS}
