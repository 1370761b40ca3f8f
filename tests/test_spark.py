"""The Spark engine: the same sample built through Dagster on DuckDB and on a local Spark session
gives the same marts (docs/spark.md). Marked `spark`: `make test-fast` leaves it out."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from ingestion.generator import GeneratorConfig
from orchestration.settings import REPO_ROOT, Settings
from tests.conftest import dbt_profile_rendered, sources_for

pytestmark = [pytest.mark.spark, pytest.mark.slow]

# When the rows were loaded: each engine's pipeline loads the files itself, at its own time.
RUN_TIME_COLUMNS = {"source_loaded_at"}


@dataclass(frozen=True)
class Engines:
    duckdb: Path
    spark: Path
    spark_dir: Path


@pytest.fixture(scope="module")
def engines(sample: GeneratorConfig, tmp_path_factory: pytest.TempPathFactory) -> Engines:
    """The test sample built once per engine: profiles few enough that Splink measures u on every
    pair. One run each: Spark's cost here is dbt's per-node overhead, and CI's Spark budget is 10 minutes."""
    from orchestration.run import run_pipeline

    root = tmp_path_factory.mktemp("engines")
    sources = sources_for(sample.extracts, root / "sources.yml", sample.start)
    on_duckdb, on_spark = root / "duckdb" / "crm.duckdb", root / "spark" / "crm.duckdb"
    run_pipeline(Settings.load(sources, on_duckdb, environ={}))
    summary = run_pipeline(Settings.load(sources, on_spark, environ={}, engine="spark"))
    assert all(summary.checks.values()), {k: v for k, v in summary.checks.items() if not v}
    return Engines(on_duckdb, on_spark, on_spark.parent / "spark")


def tables(con: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    return [
        r[0]
        for r in con.execute(
            "select table_name from information_schema.tables where table_schema = ? and table_type = 'BASE TABLE' "
            "order by 1",
            [schema],
        ).fetchall()
    ]


def column_checksums(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, object]:
    """Per column: the sum of a numeric column (rounded: the engines add floats in other orders),
    else an order-free hash of its values as text."""
    columns = con.execute(f"select column_name, column_type from (describe {table})").fetchall()
    sums = [
        f"round(sum({c}::double), 4)"
        if t.split("(")[0] in ("DOUBLE", "FLOAT", "DECIMAL", "BIGINT", "INTEGER", "HUGEINT", "SMALLINT", "TINYINT")
        else f"sum(hash({c}::varchar))"
        for c, t in columns
        if c not in RUN_TIME_COLUMNS
    ]
    names = [c for c, _ in columns if c not in RUN_TIME_COLUMNS]
    return dict(zip(names, con.execute(f"select {', '.join(sums)} from {table}").fetchall()[0]))


def test_every_mart_built_on_spark_equals_duckdbs(engines: Engines) -> None:
    assert_marts_equal(engines)


def assert_marts_equal(engines: Engines) -> None:
    with (
        duckdb.connect(str(engines.duckdb), read_only=True) as duck,
        duckdb.connect(str(engines.spark), read_only=True) as spark,
    ):
        marts = tables(duck, "marts")
        assert marts and tables(spark, "marts") == marts
        for mart in marts:
            counts = [con.execute(f"select count(*) from marts.{mart}").fetchall()[0][0] for con in (duck, spark)]
            assert counts[0] == counts[1], f"marts.{mart}: {counts[0]} rows on DuckDB, {counts[1]} on Spark"
            types = [
                con.execute(f"select column_name, column_type from (describe marts.{mart}) order by 1").fetchall()
                for con in (duck, spark)
            ]
            assert types[0] == types[1], f"marts.{mart}"
            assert column_checksums(spark, f"marts.{mart}") == column_checksums(duck, f"marts.{mart}"), f"marts.{mart}"


def test_an_erasure_reaches_sparks_tables_and_the_engines_still_agree(
    engines: Engines, sample: GeneratorConfig
) -> None:
    """`crm forget` on each engine's warehouse, then a run of the last day only: on Spark the lake
    loses the person's rows, Spark's own tables rebuild without them (the facts' dates through their
    re-keyed rows), and the copies stay erased. Both engines then build the same marts again."""
    from orchestration.run import run_pipeline

    with duckdb.connect(str(engines.duckdb), read_only=True) as con:
        ((email, key),) = con.execute("""
            select e.identifier_value, e.customer_key from intermediate.int_customer_keys_assigned as e
            inner join marts.customer_identity_map as m using (customer_key)
            where e.identifier_type = 'email' group by all order by count(*) desc, 1 limit 1""").fetchall()
    sources = engines.duckdb.parent.parent / "sources.yml"
    for warehouse, engine in ((engines.duckdb, "duckdb"), (engines.spark, "spark")):
        env = {"CRM_SOURCES": str(sources), "CRM_WAREHOUSE": str(warehouse), "CRM_ENGINE": engine}
        done = subprocess.run(
            [sys.executable, "-m", "orchestration.cli", "forget", "--email", email, "--by", "test"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        last = sample.start + dt.timedelta(days=sample.days - 1)
        run_pipeline(Settings.load(sources, warehouse, environ={}, engine=engine), start=last, end=last, as_of=last)

    tables_dir = engines.spark_dir / "tables"
    with duckdb.connect() as con:
        for table in ("intermediate.db/int_customer_keys_assigned", "marts.db/customer_identity_map"):
            found = con.execute(
                f"select count(*) from read_parquet('{tables_dir}/{table}/*.parquet') where customer_key = ?", [key]
            ).fetchall()[0][0]
            assert found == 0, f"{table} on Spark still holds the erased customer"
    with duckdb.connect(str(engines.spark), read_only=True) as con:
        assert con.execute(
            "select count(*) from marts.customer_identity_map where customer_key = ?", [key]
        ).fetchall() == [(0,)]
        assert con.execute(
            "select count(*) from intermediate.int_customer_keys_assigned where identifier_value = ?", [email]
        ).fetchall() == [(0,)]
    assert_marts_equal(engines)


def test_identity_on_spark_equals_duckdbs(engines: Engines) -> None:
    """The same accepted profile pairs, and the same records grouped into the same customers."""
    pairs = (
        "select customer_ref_l, customer_ref_r from intermediate.int_profiles_matched where is_accepted order by all"
    )
    # A customer as the set of its identifiers, whatever its key is called.
    groups = """select list(identifier_type || ':' || identifier_value order by identifier_type, identifier_value)
                from intermediate.int_customer_keys_assigned group by customer_key order by 1"""
    with (
        duckdb.connect(str(engines.duckdb), read_only=True) as duck,
        duckdb.connect(str(engines.spark), read_only=True) as spark,
    ):
        assert spark.execute(pairs).fetchall() == duck.execute(pairs).fetchall()
        assert spark.execute(groups).fetchall() == duck.execute(groups).fetchall()


def test_the_raw_layer_reaches_spark_as_parquet_partitions(engines: Engines) -> None:
    """One file per channel and day, as many rows as the channel's view."""
    lake = engines.spark_dir / "lake" / "raw"
    with duckdb.connect(str(engines.spark), read_only=True) as con:
        for channel in ("store", "web", "customers"):
            days = con.execute(f"select count(distinct _partition_date) from raw.{channel}").fetchall()[0][0]
            assert len(list((lake / channel).glob("*.parquet"))) == days
            rows = con.execute(f"select count(*) from read_parquet('{lake / channel}/*.parquet')").fetchall()[0][0]
            assert rows == con.execute(f"select count(*) from raw.{channel}").fetchall()[0][0]


def test_spark_session_settings_equal_dbts_profile(tmp_path: Path) -> None:
    """The identity assets' Spark session and dbt's (profiles.yml) open the same metastore and tables."""
    from orchestration.spark_assets import spark_conf

    settings = Settings.load(warehouse=tmp_path / "crm.duckdb", environ={})
    env = {  # the process's environment, but for what hand_to_processes would set for these settings
        **os.environ,
        "CRM_SPARK_DIR": str(settings.spark_dir),
        "CRM_SPARK_MASTER": settings.spark_master,
        "CRM_SPARK_DRIVER_MEMORY": settings.spark_driver_memory,
    }
    assert dbt_profile_rendered("spark", "server_side_parameters", env) == spark_conf(settings)
