"""The raw layer as Parquet for Spark (ingestion/lake.py), on a DuckDB file: a sync writes only
the partitions whose rows changed, whoever changed them."""

from __future__ import annotations

from pathlib import Path

import duckdb

from ingestion.contracts import CONTRACTS, LINEAGE_COLUMNS, contract_for
from ingestion.lake import sync_raw


def raw_views(con: duckdb.DuckDBPyConnection) -> None:
    """Every channel as the loader leaves it: a table of the contract's columns and lineage."""
    con.execute("CREATE SCHEMA raw")
    for channel in CONTRACTS:
        columns = [f"{f.name} {f.duckdb_type}" for f in contract_for(channel).fields]
        columns += [f"{c} {t}" for c, t in LINEAGE_COLUMNS.items()]
        con.execute(f"CREATE TABLE raw.{channel} ({', '.join(columns)})")
    con.execute("CREATE TABLE raw._load_log (source VARCHAR)")
    con.execute("CREATE TABLE raw.quarantine (source VARCHAR)")
    con.execute("""
        INSERT INTO raw.store (order_id, _row_hash, _partition_date)
        SELECT 'o' || i, 'h' || i, DATE '2025-01-01' + (i % 3)::INTEGER FROM range(30) AS t(i)""")


def test_a_sync_rewrites_only_the_partitions_that_changed(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    raw_views(con)
    lake = tmp_path / "lake"
    first = sync_raw(con, lake)
    assert (first.partitions_written, first.rows_written) == (3, 30)
    assert sorted(p.name for p in (lake / "raw" / "store").iterdir()) == [
        "2025-01-01.parquet",
        "2025-01-02.parquet",
        "2025-01-03.parquet",
    ]
    assert (lake / "raw" / "web" / "empty.parquet").exists()  # an empty channel keeps its schema
    assert sync_raw(con, lake).partitions_written == 0

    con.execute("DELETE FROM raw.store WHERE order_id = 'o4'")  # an erasure on 2025-01-02
    con.execute("DELETE FROM raw.store WHERE _partition_date = DATE '2025-01-03'")  # a day gone
    con.execute("INSERT INTO raw.web (event_id, _row_hash, _partition_date) VALUES ('e1', 'w1', DATE '2025-01-05')")
    second = sync_raw(con, lake)
    assert (second.partitions_written, second.partitions_removed) == (2, 1)
    assert not (lake / "raw" / "web" / "empty.parquet").exists()
    store = f"read_parquet('{lake}/raw/store/*.parquet')"
    assert con.execute(f"SELECT count(*), count(*) FILTER (WHERE order_id = 'o4') FROM {store}").fetchall() == [(19, 0)]
