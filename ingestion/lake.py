"""The raw layer as Parquet files, for engines that read files rather than the DuckDB warehouse (Spark).

Each channel view (`raw.<channel>`) is written one file per partition date,
`<lake>/raw/<channel>/<date>.parquet`, with its lineage columns; the load log and the quarantine
as one file each. A sync rewrites only the partitions whose rows changed since the last sync: a
fingerprint of each partition (row count and a hash of its row hashes) is kept in
`<lake>/raw/_fingerprints.parquet`, so loads, re-deliveries and erasures alike are picked up from
the data, not from who changed it. A file is written under a temporary name and renamed, so a
reader sees a partition's old rows or its new ones. An empty channel gets one zero-row file, so
its schema is still there to read.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ingestion.contracts import CONTRACTS

# The lineage's load time (contracts.LINEAGE_COLUMNS `_loaded_at`, TIMESTAMPTZ) as the models name it.
LOAD_TIME_COLUMNS = {"_loaded_at", "source_loaded_at"}
WHOLE_TABLES = {"load_log": "raw._load_log", "quarantine": "raw.quarantine"}  # small: one file each
EMPTY = "empty.parquet"


@dataclass(frozen=True)
class LakeSync:
    partitions_written: int
    partitions_removed: int
    rows_written: int


def _write(con: duckdb.DuckDBPyConnection, query: str, target: Path, params: list | None = None) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{os.getpid()}")
    rows = con.execute(f"COPY ({query}) TO '{staged}' (FORMAT parquet)", params or []).fetchall()[0][0]
    os.replace(staged, target)
    return rows


def _fingerprints(con: duckdb.DuckDBPyConnection) -> str:
    """SQL of every channel partition's fingerprint now."""
    return " UNION ALL ".join(
        f"SELECT '{c}' AS channel, _partition_date AS partition_date, count(*) AS row_count, "
        f"sum(hash(_row_hash)) AS row_hash_sum FROM raw.{c} GROUP BY _partition_date"
        for c in CONTRACTS
    )


def sync_raw(con: duckdb.DuckDBPyConnection, lake: Path) -> LakeSync:
    """Bring `<lake>/raw` up to the warehouse's raw channel views; returns what it wrote."""
    root = lake / "raw"
    root.mkdir(parents=True, exist_ok=True)
    kept = root / "_fingerprints.parquet"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _lake_now AS {_fingerprints(con)}").fetchall()
    previous = f"read_parquet('{kept}')" if kept.exists() else "(SELECT * FROM _lake_now WHERE false)"
    changed = con.execute(f"""
        SELECT channel, partition_date FROM (SELECT * FROM _lake_now EXCEPT SELECT * FROM {previous})
        ORDER BY ALL
    """).fetchall()
    gone = con.execute(f"""
        SELECT channel, partition_date FROM {previous} AS p
        WHERE NOT EXISTS (SELECT 1 FROM _lake_now AS n WHERE n.channel = p.channel AND n.partition_date = p.partition_date)
    """).fetchall()
    rows = 0
    for channel, day in changed:
        query = f"SELECT * FROM raw.{channel} WHERE _partition_date IS NOT DISTINCT FROM ?"
        rows += _write(con, query, _partition_file(root, channel, day), [day])
    for channel, day in gone:
        _partition_file(root, channel, day).unlink(missing_ok=True)
    filled = {c for (c,) in con.execute("SELECT DISTINCT channel FROM _lake_now").fetchall()}
    for channel in CONTRACTS:  # an empty channel keeps its schema in a zero-row file; else none
        empty = root / channel / EMPTY
        if channel in filled:
            empty.unlink(missing_ok=True)
        elif not empty.exists():
            _write(con, f"SELECT * FROM raw.{channel} WHERE false", empty)
    for name, table in WHOLE_TABLES.items():
        _write(con, f"SELECT * FROM {table}", root / name / "data.parquet")
    _write(con, "SELECT * FROM _lake_now", kept)
    con.execute("DROP TABLE _lake_now").fetchall()
    return LakeSync(len(changed), len(gone), rows)


def _partition_file(root: Path, channel: str, day: dt.date | None) -> Path:
    return root / channel / f"{day.isoformat() if day else 'undated'}.parquet"


def copy_spark_tables(con: duckdb.DuckDBPyConnection, tables_dir: Path, tables: list[tuple[str, str]]) -> dict:
    """Spark's Parquet tables (`<tables_dir>/<schema>.db/<table>`, hive-partitioned or not) as tables
    of the DuckDB warehouse, replaced whole; returns each one's rows. Copied rather than viewed: a
    published version is a copy of the warehouse file and must not change under its readers."""
    rows = {}
    for schema, table in tables:
        folder = tables_dir / f"{schema}.db" / table
        files = [p for p in folder.rglob("*.parquet") if not p.name.startswith((".", "_"))]
        if not files:
            raise FileNotFoundError(f"{folder}: Spark wrote no Parquet file for {schema}.{table}")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}").fetchall()
        scan = f"read_parquet('{folder}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
        # Spark's timestamps are instants (Parquet's UTC-adjusted): back to UTC wall time, as DuckDB's
        # models keep them, but for the lineage's load time, an instant there too.
        columns = [
            f"timezone('UTC', {name}) AS {name}"
            if kind == "TIMESTAMP WITH TIME ZONE" and name not in LOAD_TIME_COLUMNS
            else name
            for name, kind in con.execute(
                f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {scan})"
            ).fetchall()
        ]
        con.execute(f"CREATE OR REPLACE TABLE {schema}.{table} AS SELECT {', '.join(columns)} FROM {scan}").fetchall()
        rows[(schema, table)] = con.execute(f"SELECT count(*) FROM {schema}.{table}").fetchall()[0][0]
    return rows
