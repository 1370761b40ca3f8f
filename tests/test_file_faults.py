"""Files as other systems write them: one bad line, record or byte sequence is quarantined with its
file, record number and reason; every good line loads once with its values intact; a second run
changes nothing. One test per kind of fault, on the real loader and a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from ingestion.load import load_source
from ingestion.sources import Source, load_sources

DAY = dt.date(2025, 3, 1)
BOUNDS = (dt.date(1990, 1, 1), dt.date(2030, 12, 31))
HEADER = ["receipt_no", "line_no", "sold_at", "store_code", "sku", "item_name", "qty", "unit_price", "member_card"]
STORE_COLUMNS = {
    "order_id": "receipt_no",
    "line_number": "line_no",
    "ordered_at": "sold_at",
    "store_id": "store_code",
    "sku": "sku",
    "product_name": "item_name",
    "quantity": "qty",
    "unit_price": "unit_price",
    "loyalty_card": "member_card",
}
WEB_COLUMNS = {"event_id": "event_id", "event_at": "ts", "event_type": "type", "cookie_id": "cookie", "page_url": "url"}


def good_rows(n: int, name: str = "绿茶 Green tea") -> list[list[str]]:
    return [
        [
            f"S01-{i:05d}",
            "1",
            f"{DAY} 10:{i % 60:02d}:00",
            "S01",
            f"SKU-{10000 + i}",
            f"{name} {i}",
            "2",
            "12.50",
            f"8{i:011d}",
        ]
        for i in range(1, n + 1)
    ]


def csv_line(row: list[str]) -> str:
    return ",".join(f'"{v}"' if "," in v or '"' in v else v for v in row)


def store_source(tmp_path: Path, options: dict | None = None, pattern: str = "*.csv", channel: str = "store") -> Source:
    doc = {
        "partitions": {"start_date": "2025-01-01", "timezone": "Asia/Shanghai"},
        "sources": [
            {
                "name": "src",
                "channel": channel,
                "path": str(tmp_path / "in" / pattern),
                "columns": STORE_COLUMNS if channel == "store" else WEB_COLUMNS,
                "options": options or {},
            }
        ],
    }
    (tmp_path / "sources.yml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return load_sources(tmp_path / "sources.yml").source("src")


def load_twice(tmp_path: Path, source: Source) -> tuple[list[tuple], list[tuple]]:
    """Load the day twice; return (loaded rows, quarantined (row_number, reason, raw)) after the second run,
    checking the second run changed nothing."""
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    outcomes = []
    for _ in range(2):
        load_source(con, source, DAY, DAY, BOUNDS)
        loaded = con.execute(
            "SELECT order_id, product_name, quantity, unit_price, loyalty_card FROM raw.src ORDER BY order_id"
            if source.channel == "store"
            else "SELECT event_id, cookie_id, page_url FROM raw.src ORDER BY event_id"
        ).fetchall()
        quarantined = con.execute(
            "SELECT row_number, reason, raw_record FROM raw.quarantine ORDER BY row_number"
        ).fetchall()
        outcomes.append((loaded, quarantined))
    assert outcomes[0] == outcomes[1]
    return outcomes[1]


def expected(rows: list[list[str]]) -> list[tuple]:
    return sorted((r[0], r[5], 2, pytest.approx(12.5), r[8]) for r in rows)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "in" / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "bad, where, reason",
    [
        (
            'S01-99999,1,2025-03-01 10:00:00,S01,SKU-1,"Tea" large,2,12.50,8',
            1,
            "QUOT",
        ),  # text after a closing quote, early
        ('S01-99999,1,2025-03-01 10:00:00,S01,SKU-1,"Tea large,2,12.50,8', -1, "UNTERMINATED QUOTE"),  # open to the end
        ("S01-99999,1,2025-03-01 10:00:00,S01,SKU-1,Tea\x00large,2,12.50,8", 3, "NUL BYTE"),
        (
            "S01-99999,1,2025-03-01 10:00:00,S01,SKU-1," + "x" * 3_000_000 + ",2,12.50,8",
            2,
            None,
        ),  # over DuckDB's line limit: loads
    ],
)
def test_one_bad_csv_record_costs_that_record(tmp_path: Path, bad: str, where: int, reason: str | None) -> None:
    rows = good_rows(40)
    lines = [csv_line(r) for r in rows]
    lines.insert(where if where >= 0 else len(lines), bad)
    write(tmp_path, f"pos_S01_{DAY}.csv", ("\n".join([",".join(HEADER), *lines]) + "\n").encode())
    loaded, quarantined = load_twice(tmp_path, store_source(tmp_path))
    if reason is None:  # a long line is data
        assert len(loaded) == 41 and not quarantined
        return
    assert loaded == expected(rows)
    number = where + 1 if where >= 0 else 41
    assert [(q[0], reason in q[1], "S01-99999" in q[2]) for q in quarantined] == [(number, True, True)], quarantined


@pytest.mark.parametrize("layout", ["mixed", "cr", "bom"])
def test_line_endings_and_bom(tmp_path: Path, layout: str) -> None:
    rows = good_rows(30)
    lines = [",".join(HEADER), *(csv_line(r) for r in rows)]
    if layout == "mixed":  # a CRLF file with one LF line
        text = "\r\n".join(lines[:10]) + "\n" + "\r\n".join(lines[10:]) + "\r\n"
    elif layout == "cr":
        text = "\r".join(lines) + "\r"
    else:
        text = "\ufeff" + "\n".join(lines) + "\n"
    write(tmp_path, f"pos_S01_{DAY}.csv", text.encode())
    loaded, quarantined = load_twice(tmp_path, store_source(tmp_path))
    assert loaded == expected(rows) and quarantined == []


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "big5", "utf-16", "latin-1"])
def test_declared_encodings_decode_before_duckdb(tmp_path: Path, encoding: str) -> None:
    name = "Café crème" if encoding == "latin-1" else "綠茶 特級" if encoding == "big5" else "绿茶 特级"
    rows = good_rows(25, name)
    text = "\r\n".join([",".join(HEADER), *(csv_line(r) for r in rows)]) + "\r\n"
    write(tmp_path, f"pos_S01_{DAY}.csv", text.encode(encoding))
    loaded, quarantined = load_twice(tmp_path, store_source(tmp_path, {"encoding": encoding}))
    assert loaded == expected(rows) and quarantined == []


def test_invalid_byte_sequence_in_gbk_is_one_quarantined_line(tmp_path: Path) -> None:
    rows = good_rows(20, "绿茶")
    body = [csv_line(r).encode("gbk") for r in rows]
    body.insert(5, b"S01-99999,1,2025-03-01 10:00:00,S01,SKU-1,\x81\x20bad,2,12.50,8")  # 0x81 0x20: no GBK character
    write(tmp_path, f"pos_S01_{DAY}.csv", b"\n".join([",".join(HEADER).encode(), *body]) + b"\n")
    loaded, quarantined = load_twice(tmp_path, store_source(tmp_path, {"encoding": "gbk"}))
    assert loaded == expected(rows)
    assert [(q[0], "INVALID ENCODING" in q[1], "\\x81" in q[2]) for q in quarantined] == [(6, True, True)]


def test_invalid_utf8_in_csv_is_quarantined_with_its_bytes_escaped(tmp_path: Path) -> None:
    rows = good_rows(20)
    body = [csv_line(r).encode() for r in rows]
    body.insert(3, b"S01-99999,1,2025-03-01 10:00:00,S01,SKU-1,\xff\xfe,2,12.50,8")
    write(tmp_path, f"pos_S01_{DAY}.csv", b"\n".join([",".join(HEADER).encode(), *body]) + b"\n")
    loaded, quarantined = load_twice(tmp_path, store_source(tmp_path))
    assert loaded == expected(rows)
    assert [(q[0], "INVALID ENCODING" in q[1], "\\xff\\xfe" in q[2]) for q in quarantined] == [(4, True, True)]


def web_event(i: int) -> str:
    return json.dumps(
        {
            "event_id": f"e{i}",
            "ts": f"{DAY}T10:00:{i % 60:02d}+08:00",
            "type": "page_view",
            "cookie": f"c{i}",
            "url": f"/p/茶{i}",
        },
        ensure_ascii=False,
    )


def test_json_lines_with_invalid_utf8_a_truncated_object_and_a_bom(tmp_path: Path) -> None:
    good = [web_event(i) for i in range(1, 31)]
    lines = [
        ("\ufeff" + good[0]).encode(),
        *(g.encode() for g in good[1:10]),
        b'{"event_id": "bad\xff\xfe", "ts": 1}',
        *(g.encode() for g in good[10:20]),
        good[20][: len(good[20]) // 2].encode(),
        *(g.encode() for g in good[21:]),
    ]
    write(tmp_path, f"events_{DAY}.jsonl", b"\n".join(lines) + b"\n")
    loaded, quarantined = load_twice(tmp_path, store_source(tmp_path, pattern="*.jsonl", channel="web"))
    kept = [g for i, g in enumerate(good) if i != 20]
    assert loaded == sorted((json.loads(g)["event_id"], json.loads(g)["cookie"], json.loads(g)["url"]) for g in kept)
    assert [q[0] for q in quarantined] == [11, 22]
    assert "INVALID ENCODING" in quarantined[0][1] and "\\xff\\xfe" in quarantined[0][2]


def test_excel_sheet_with_date_cells_and_text_dates(tmp_path: Path) -> None:
    rows = good_rows(12)
    frame = pl.DataFrame({h: [r[i] for r in rows] for i, h in enumerate(HEADER)}).with_columns(
        pl.col("qty").cast(pl.Int64), pl.col("unit_price").cast(pl.Float64)
    )
    dated = frame.with_columns(  # half the rows carry a real Excel date cell, half a text date
        sold_at=pl.col("sold_at").str.to_datetime("%Y-%m-%d %H:%M:%S")
    )
    (tmp_path / "in").mkdir()
    with_dates, with_text = tmp_path / "in" / f"pos_a_{DAY}.xlsx", tmp_path / "in" / f"pos_b_{DAY}.xlsx"
    dated.head(6).write_excel(with_dates, worksheet="receipts", autofit=False)
    frame.tail(6).write_excel(with_text, worksheet="receipts", autofit=False)
    loaded, quarantined = load_twice(tmp_path, store_source(tmp_path, {"sheet": "receipts"}, pattern="*.xlsx"))
    assert loaded == expected(rows) and quarantined == []
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    times = {r[0] for r in con.execute("SELECT DISTINCT ordered_at FROM raw.src").fetchall()}
    assert len(times) == 12 and all(t.date() == DAY for t in times)


def test_a_file_gone_since_it_was_listed_fails_alone(tmp_path: Path) -> None:
    from ingestion.read import read_files

    rows = good_rows(5)
    write(tmp_path, f"pos_S01_{DAY}.csv", ("\n".join([",".join(HEADER), *(csv_line(r) for r in rows)]) + "\n").encode())
    gone = tmp_path / "in" / "pos_S02_2025-03-01.csv"
    with duckdb.connect() as con:
        read, failed = read_files(con, store_source(tmp_path), [tmp_path / "in" / f"pos_S01_{DAY}.csv", gone], "_r")
        assert read is not None and con.execute("SELECT count(*) FROM _r").fetchall()[0][0] == 5
    assert list(failed) == [gone]
