"""Loading raw partitions into a real DuckDB file: idempotence, re-deliveries, quarantine, failures."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
from pathlib import Path

import duckdb
import pytest

from ingestion.generator import GeneratorConfig
from ingestion.load import LoadError, load_source
from ingestion.quality import validate
from ingestion.sources import Source, load_sources

BOUNDS = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
D = dt.date(2025, 3, 1)


def source(sources_file: Path, name: str) -> Source:
    return load_sources(sources_file).source(name)


def totals(con: duckdb.DuckDBPyConnection, table: str) -> tuple:
    return con.execute(
        f"SELECT count(*), sum(quantity * unit_price), count(DISTINCT order_id) FROM {table}"
    ).fetchall()[0]


def test_rerun_and_redeliveries_never_double(
    sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    extracts, sources_file = sample_copy
    store = source(sources_file, "pos_receipt_lines")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    end = sample.end
    first = load_source(con, store, sample.start, end, BOUNDS)
    before = totals(con, store.table)
    assert first.rows_loaded == before[0] > 1000
    assert (
        first.rows_read == first.rows_loaded + first.rows_quarantined + first.duplicates_skipped + first.rows_superseded
    )
    # The generator re-delivers some files unchanged and corrects others in a later v2 file.
    assert first.duplicates_skipped > 0 and first.rows_superseded > 0

    again = load_source(con, store, sample.start, end, BOUNDS)
    assert totals(con, store.table) == before
    assert (again.rows_loaded, again.rows_quarantined) == (first.rows_loaded, first.rows_quarantined)

    # One more identical re-delivery of a day's file, under a new name: nothing is added.
    day_file = sorted(p for p in (extracts / "store" / "S02").glob("pos_S02_*.csv") if p.name.count(".") == 1)[5]
    shutil.copy2(day_file, day_file.with_name(day_file.stem + ".again.csv"))
    os.utime(day_file.with_name(day_file.stem + ".again.csv"), (day_file.stat().st_mtime + 7200,) * 2)
    day = dt.date.fromisoformat(day_file.stem.split("_")[-1])
    redelivered = load_source(con, store, day, day, BOUNDS)
    assert totals(con, store.table) == before
    assert (
        redelivered.duplicates_skipped >= len(day_file.read_text().splitlines()) - 1
    )  # the copy's rows: counted, not loaded

    # A corrected re-delivery of that file supersedes the rows it changes.
    lines = day_file.read_text().splitlines()
    cells = lines[1].split(",")
    cells[8] = "999.00"
    lines[1] = ",".join(cells)
    fixed = day_file.with_name(day_file.stem + ".fix.csv")
    fixed.write_text("\n".join(lines) + "\n")
    os.utime(fixed, (day_file.stat().st_mtime + 10 * 86400,) * 2)  # after any re-delivery of that day
    corrected = load_source(con, store, day, day, BOUNDS)
    assert corrected.rows_superseded >= 1
    count, revenue, orders = totals(con, store.table)
    assert (count, orders) == (before[0], before[2])
    price = con.execute(
        f"SELECT unit_price FROM {store.table} WHERE order_id = ? AND line_number = ?", [cells[0], int(cells[1])]
    ).fetchall()
    assert price == [(999,)]


CSV_HEADER = ",".join(
    [
        "receipt_no",
        "line_no",
        "sold_at",
        "store_code",
        "sku",
        "item_name",
        "category",
        "qty",
        "unit_price",
        "discount",
        "currency",
        "payment",
        "member_card",
        "member_phone",
    ]
)


def test_every_malformed_kind_lands_in_quarantine_while_good_rows_load(
    sample_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    extracts, sources_file = sample_copy
    store_file = extracts / "store" / "S01" / f"pos_S01_{D}.csv"
    store_file.write_text(
        "\n".join(
            [
                CSV_HEADER,
                f"X-1,1,{D} 10:00:00,S01,SKU-10001,Tea,tea,2,10.50,0,CNY,cash,,",  # good
                f"X-1,2,{D} 10:00:00,S01,,Tea,tea,1,10.50,0,CNY,cash,,",  # missing required sku
                f"X-2,1,{D} 10:05:00,S01,SKU-10002,Pot,kitchen,one,10.50,0,CNY,cash,,",  # bad integer
                "X-3,1,not a date,S01,SKU-10002,Pot,kitchen,1,10.50,0,CNY,cash,,",  # unparsable date
                f"X-4,1,{D} 10:07:00,S01,SKU-10002,Pot,kitchen,1,12.5O元,0,CNY,cash,,",  # non-numeric amount
                f"X-5,1,{D} 10:08:00,S01,SKU-10002,Pot,kitchen,1,10.50,0,CNY,cash,,,EXTRA",  # too many columns
                "X-6,1,2031-01-01 10:09:00,S01,SKU-10002,Pot,kitchen,1,10.50,0,CNY,cash,,",  # date outside partitions
                f'X-7,1,{D} 10:10:00,S01,SKU-10003,"Cup, large",home,-1,8.00,0,CNY,card,,',  # good: a return, quoted comma
            ]
        )
        + "\n"
    )
    web_file = extracts / "web" / f"events_{D}.jsonl"
    web_file.write_text(
        "\n".join(
            [
                '{"event_id":"e1","ts":"2025-03-01T10:00:00+08:00","type":"page_view","cookie":"c1","utm":{"source":"baidu"}}\r',
                '{"event_id":"e2","ts":"2025-03-01T10:01:00+08:00","type":"page_view","cookie":"c1"',  # broken JSON
                '{"event_id":"e3","ts":"yesterday","type":"page_view","cookie":"c1"}',  # unparsable date
                " \t\r",  # a blank line: skipped, and the lines after it keep their numbers
                '{"event_id":"e4","ts":"2025-03-01T02:02:00Z","type":"page_view"}',  # missing required cookie
                '{"event_id":"e5","ts":"2025-03-01T02:03:00Z","type":"purchase","cookie":"c2","qty":"2","price":"x"}',  # bad decimal
            ]
        )
        + "\n"
    )
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    store = load_source(con, source(sources_file, "pos_receipt_lines"), D, D, BOUNDS)
    web = load_source(con, source(sources_file, "web_events"), D, D, BOUNDS)

    good = con.execute(
        "SELECT order_id, line_number, quantity, unit_price, ordered_at FROM raw.pos_receipt_lines "
        "WHERE _file = ? ORDER BY order_id",
        [str(store_file)],
    ).fetchall()
    assert [(o, n, q, float(p)) for o, n, q, p, _ in good] == [("X-1", 1, 2, 10.5), ("X-7", 1, -1, 8.0)]
    # Store local time (Asia/Shanghai) is stored as an instant: 10:00 +08:00 = 02:00 UTC.
    assert good[0][4] == dt.datetime(2025, 3, 1, 2, 0, tzinfo=dt.UTC)
    q = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT row_number, field, reason, raw_record FROM raw.quarantine WHERE file = ? ORDER BY row_number",
            [str(store_file)],
        ).fetchall()
    }
    assert q[2][:2] == ("sku", "sku: missing required field")
    assert q[3][0] == "quantity" and "not a valid integer: one" in q[3][1]
    assert q[4][0] == "ordered_at" and "not a valid timestamp: not a date" in q[4][1]
    assert q[5][0] == "unit_price" and "12.5O元" in q[5][1]
    assert "TOO MANY COLUMNS" in q[6][1] and q[6][2].endswith("EXTRA")
    assert q[7][0] == "ordered_at" and "outside the partitions" in q[7][1]
    assert set(q) == {2, 3, 4, 5, 6, 7}
    assert '"sold_at":"not a date"' in q[4][2]  # the raw record, as read

    wq = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT row_number, field, reason, raw_record FROM raw.quarantine WHERE file = ? ORDER BY row_number",
            [str(web_file)],
        ).fetchall()
    }
    assert wq[2][1] == "malformed JSON line" and wq[2][2].endswith('"cookie":"c1"')
    assert wq[3][0] == "event_at" and wq[5][0] == "cookie_id" and wq[6][0] == "unit_price" and set(wq) == {2, 3, 5, 6}
    loaded = con.execute("SELECT event_id, utm_source FROM raw.web_events WHERE _file = ?", [str(web_file)]).fetchall()
    assert loaded == [("e1", "baidu")]
    assert store.rows_quarantined >= 6 and web.rows_quarantined >= 4


def test_unreadable_file_fails_only_its_partition(
    sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    extracts, sources_file = sample_copy
    calls = source(sources_file, "call_center_calls")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    load_source(con, calls, sample.start, sample.end, BOUNDS)
    day, next_day = sample.start + dt.timedelta(days=10), sample.start + dt.timedelta(days=11)
    before = con.execute("SELECT count(*) FROM raw.call_center_calls WHERE _partition_date = ?", [day]).fetchall()[0][0]
    assert before > 0
    target = extracts / "call_center" / f"calls_{day}.csv"
    target.write_bytes(random.Random(1).randbytes(3000))  # a transfer that delivered garbage
    result = load_source(con, calls, day, next_day, BOUNDS)
    assert str(target) in result.failed_files and result.failed_dates == [day]
    assert "cannot read" in result.failure_summary() and str(target) in result.failure_summary()
    after = con.execute("SELECT count(*) FROM raw.call_center_calls WHERE _partition_date = ?", [day]).fetchall()[0][0]
    assert after == before  # nothing already loaded is touched
    assert (
        con.execute("SELECT count(*) FROM raw.call_center_calls WHERE _partition_date = ?", [next_day]).fetchall()[0][0]
        > 0
    )


def test_late_rows_and_vanished_files(sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path) -> None:
    extracts, sources_file = sample_copy
    store = source(sources_file, "pos_receipt_lines")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    load_source(con, store, sample.start, sample.end, BOUNDS)
    # A till syncs two days late: its file is named for day+2 but holds sales of day.
    day = sample.start + dt.timedelta(days=5)
    late = extracts / "store" / "S03" / f"pos_S03_{day + dt.timedelta(days=2)}.late.csv"
    late.write_text(CSV_HEADER + f"\nLATE-1,1,{day} 12:00:00,S03,SKU-10001,Tea,tea,1,10.00,0,CNY,cash,,\n")
    result = load_source(con, store, day + dt.timedelta(days=2), day + dt.timedelta(days=2), BOUNDS)
    assert day in result.extra_dates
    assert con.execute("SELECT _partition_date FROM raw.pos_receipt_lines WHERE order_id = 'LATE-1'").fetchall() == [
        (day,)
    ]
    # A loaded file that disappears from the landing folder stops a reload instead of losing rows.
    late.unlink()
    with pytest.raises(LoadError, match="gone"):
        load_source(con, store, day, day, BOUNDS)


def test_a_range_loaded_in_chunks_equals_one_load(
    sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    """Long ranges load in runs of days (one transaction each); rows, quarantine and counts must not
    depend on where the runs are cut, also when a later run's file holds late rows of an earlier one."""
    extracts, sources_file = sample_copy
    day = sample.start + dt.timedelta(days=5)
    late = extracts / "store" / "S03" / f"pos_S03_{day + dt.timedelta(days=9)}.late.csv"
    late.write_text(CSV_HEADER + f"\nLATE-1,1,{day} 12:00:00,S03,SKU-10001,Tea,tea,1,10.00,0,CNY,cash,,\n")
    for s in load_sources(sources_file).sources:
        whole, chunked = tmp_path / f"{s.name}-whole.duckdb", tmp_path / f"{s.name}-chunked.duckdb"
        with duckdb.connect(str(whole)) as con:
            one = load_source(con, s, sample.start, sample.end, BOUNDS)
        with duckdb.connect(str(chunked)) as con:
            size = sum(f.stat().st_size for f in s.files())
            many = load_source(con, s, sample.start, sample.end, BOUNDS, chunk_bytes=size // 8)
            if len(s.files()) > 3:  # a campaign source is one file per campaign: nothing to cut
                assert con.execute("SELECT count(*) FROM raw._load_log").fetchall()[0][0] > 3, s.name
        probe = duckdb.connect()
        probe.execute(f"ATTACH '{whole}' AS one (READ_ONLY); ATTACH '{chunked}' AS many (READ_ONLY)")
        for table, run_columns in ((s.table, "_batch_id, _loaded_at"), ("raw.quarantine", "batch_id, loaded_at")):
            a, b = (f"SELECT * EXCLUDE ({run_columns}) FROM {db}.{table}" for db in ("one", "many"))
            differ = probe.execute(
                f"SELECT count(*) FROM (({a}) EXCEPT ALL ({b})) UNION ALL SELECT count(*) FROM (({b}) EXCEPT ALL ({a}))"
            )
            assert differ.fetchall() == [(0,), (0,)], (s.name, table)
        counts = ("rows_read", "rows_loaded", "rows_quarantined", "duplicates_skipped", "rows_superseded", "files_read")
        assert [getattr(many, c) for c in counts] == [getattr(one, c) for c in counts], s.name
        assert one.extra_dates == many.extra_dates == []
    with duckdb.connect(str(tmp_path / "pos_receipt_lines-chunked.duckdb"), read_only=True) as con:
        late_row = "SELECT _partition_date FROM raw.pos_receipt_lines WHERE order_id = 'LATE-1'"
        assert con.execute(late_row).fetchall() == [(day,)]


def test_online_retail_cancellations_missing_ids_and_non_products(tmp_path: Path) -> None:
    from tests.conftest import ONLINE_RETAIL_SOURCES

    retail = load_sources(ONLINE_RETAIL_SOURCES).sources[0]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    result = load_source(
        con, retail, dt.date(2010, 12, 1), dt.date(2011, 12, 9), (dt.date(2010, 12, 1), dt.date(2011, 12, 31))
    )
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (541_909, 541_909, 0)
    revenue, cancelled, no_customer, non_products = con.execute(
        """SELECT sum(quantity * unit_price), count(*) FILTER (WHERE order_id LIKE 'C%'),
                  count(*) FILTER (WHERE customer_ref IS NULL),
                  count(*) FILTER (WHERE sku IN ('POST', 'M', 'BANK CHARGES', 'DOT'))
           FROM raw.uk_store_sales"""
    ).fetchall()[0]
    assert float(revenue) == pytest.approx(9_747_747.93, abs=0.01)
    assert cancelled == 9_288 and no_customer == 135_080 and non_products > 2_000
    # CustomerID is a float in the file; references keep no '.0'.
    assert con.execute("SELECT customer_ref FROM raw.uk_store_sales WHERE _row_number = 1").fetchall() == [("17850",)]


def test_as_of_loads_nothing_after_it(sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path) -> None:
    _, sources_file = sample_copy
    as_of = sample.start + dt.timedelta(days=20)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    on_the_day: dict[str, int] = {}
    for s in load_sources(sources_file).sources:
        load_source(con, s, sample.start, as_of, BOUNDS)
        latest = con.execute(f"SELECT max(_partition_date) FROM {s.table}").fetchall()[0][0]
        assert latest is None or latest <= as_of, s.name
        if s.channel == "campaigns":  # a campaign list lands on its campaign's day only
            continue
        rows = con.execute(f"SELECT count(*) FROM {s.table} WHERE _partition_date = ?", [as_of]).fetchall()[0][0]
        on_the_day[s.channel] = on_the_day.get(s.channel, 0) + rows  # one franchise store may sell nothing that day
    assert all(n > 0 for n in on_the_day.values()), on_the_day
    assert con.execute("SELECT count(*) FROM raw.quarantine WHERE partition_date > ?", [as_of]).fetchall()[0][0] == 0


def test_quality_checks_count_each_expectations_bad_rows_over_batches(
    sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    """Every expectation's unexpected rows are summed over batches and reported under its own field."""
    _, sources_file = sample_copy
    store = source(sources_file, "pos_receipt_lines")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    result = load_source(con, store, sample.start, sample.start + dt.timedelta(days=13), BOUNDS)
    clean = {o.name: o for o in validate(con, store, result, batch_rows=2048)}
    assert all(o.passed for o in clean.values()), clean
    assert clean["row_count_positive"].metadata["rows"] == result.rows_loaded
    # Damage the loaded rows as a bad extract would: null keys, unknown codes, negative prices.
    # (rowid picks rows spread over every batch.)
    con.execute(f"UPDATE {store.table} SET order_id = NULL WHERE rowid % 1000 = 7")
    con.execute(f"UPDATE {store.table} SET payment_method = 'bitcoin' WHERE rowid % 20 = 3")
    con.execute(f"UPDATE {store.table} SET unit_price = -1 WHERE rowid % 100 = 5")
    expected = {
        name: con.execute(f"SELECT count(*) FROM {store.table} WHERE {where}").fetchall()[0][0]
        for name, where in (
            ("order_id", "order_id IS NULL"),
            ("payment_method", "payment_method = 'bitcoin'"),
            ("unit_price", "unit_price < 0"),
        )
    }
    assert min(expected.values()) > 0
    damaged = {o.name: o for o in validate(con, store, result, batch_rows=2048)}
    assert not damaged["keys_not_null"].passed and damaged["keys_not_null"].blocking
    assert damaged["keys_not_null"].metadata["order_id_unexpected"] == expected["order_id"]
    assert damaged["keys_not_null"].metadata["line_number_unexpected"] == 0
    assert not damaged["values_in_set"].passed  # 5 % unknown codes, 1 % allowed
    assert damaged["values_in_set"].metadata["payment_method_unexpected"] == expected["payment_method"]
    assert not damaged["values_in_range"].passed  # 1 % negative prices, 0.1 % allowed
    assert damaged["values_in_range"].metadata["unit_price_unexpected"] == expected["unit_price"]
    assert damaged["row_count_positive"].passed and damaged["quarantine_rate"].passed
