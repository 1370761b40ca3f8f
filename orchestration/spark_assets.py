"""The Spark engine's own assets (CRM_ENGINE=spark, docs/spark.md); the dbt steps and the identity
assets are the DuckDB engine's, built on Spark (orchestration/dbt_assets.py, identity_assets.py).

  raw.<channel> (DuckDB) -> lake/raw (Parquet) -> the dbt steps and identity, on Spark
  -> Spark's staging, intermediate and marts tables copied into the DuckDB warehouse -> ML, publish, exports

Spark's tables are keyed ["spark", schema, table]; their copies in the warehouse keep the DuckDB
keys ([schema, table]), so ML and serving read what they read on DuckDB. Every asset that runs a
Spark session is in one pool, SPARK_POOL (limit 1): the embedded Derby metastore allows one JVM.
"""

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from ingestion.contracts import CONTRACTS
from ingestion.lake import copy_spark_tables, sync_raw
from orchestration.identity_report import identity_report
from orchestration.settings import DUCKDB_POOL, Settings

LAKE_TABLES = [*CONTRACTS, "load_log"]  # the dbt sources `raw.*` on Spark (ingestion/lake.py writes them)
# What ML, serving and the identity report read; staging for erasure (`crm forget` finds a
# person's raw rows through it).
COPIED_SCHEMAS = ("staging", "intermediate", "marts")
KEY_RUNS = ("intermediate", "int_customer_keys_assigned__runs")  # the keys asset's log, which the identity report reads


def spark_conf(settings: Settings) -> dict[str, str]:
    """The session settings, as dbt_project/profiles.yml's spark target gives them to dbt's session
    (tests/test_spark.py pins the two equal)."""
    home = settings.spark_dir
    return {
        "spark.master": settings.spark_master,
        "spark.sql.warehouse.dir": f"{home}/tables",
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={home}/metastore_db;create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={home}",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.ansi.enabled": "false",
    }


def require_java() -> None:
    if not shutil.which("java"):
        raise RuntimeError(
            "the Spark engine needs Java 17 or newer on PATH (`java -version`): "
            "apt-get install openjdk-17-jre-headless, or set CRM_ENGINE=duckdb"
        )


@contextlib.contextmanager
def spark_session(settings: Settings) -> Iterator[Any]:
    """A local Spark session with Splink's similarity functions; its JVM ends with it, so that
    dbt's own session (another process) can open the Derby metastore next."""
    require_java()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    builder = SparkSession.builder.appName("crm-identity").enableHiveSupport()
    for key, value in {**spark_conf(settings), "spark.jars": similarity_jar_location()}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setCheckpointDir(str(settings.spark_dir / "checkpoints"))
    try:
        yield spark
    finally:
        spark.stop()
        gateway = SparkContext._gateway
        if gateway is not None:  # the JVM outlives stop() and holds the metastore's lock: end it
            gateway.shutdown()
            gateway.proc.terminate()
            gateway.proc.wait(timeout=60)
            SparkContext._gateway, SparkContext._jvm = None, None


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            ["lake", "raw", t],
            deps=[dg.AssetKey(["raw", t])] if t in CONTRACTS else [],
            group_name="spark",
            kinds={"parquet"},
        )
        for t in LAKE_TABLES
    ],
    name="lake_raw",
    pool=DUCKDB_POOL,
)
def lake_raw(warehouse: DuckDBResource, settings: dg.ResourceParam[Settings]) -> Iterator[dg.MaterializeResult]:
    """The raw channel views as Parquet, one file per partition date, for Spark (ingestion/lake.py)."""
    with warehouse.get_connection() as con, contextlib.closing(con):
        synced = sync_raw(con, settings.spark_dir / "lake")
    metadata = {  # of the whole sync: one pass writes every channel's changed partitions
        "partitions_written": synced.partitions_written,
        "partitions_removed": synced.partitions_removed,
        "rows_written": synced.rows_written,
    }
    for table in LAKE_TABLES:
        yield dg.MaterializeResult(asset_key=["lake", "raw", table], metadata=metadata)


def spark_assets(built: list[dg.AssetKey], identity_truth: Path | None) -> list[dg.AssetsDefinition]:
    """The lake before the Spark-built assets `built`, and their copy into the warehouse after."""
    return [lake_raw, spark_tables_copied(built, identity_truth)]


def spark_tables_copied(spark_keys: list[dg.AssetKey], identity_truth: Path | None) -> dg.AssetsDefinition:
    """Spark's staging, intermediate and marts tables as tables of the DuckDB warehouse, keyed as on DuckDB."""
    copied = [k for k in spark_keys if k.path[0] == "spark" and k.path[1] in COPIED_SCHEMAS]
    specs = [dg.AssetSpec(k.path[1:], deps=[k], group_name="spark", kinds={"duckdb"}) for k in copied]

    @dg.multi_asset(specs=specs, name="spark_tables_copied", pool=DUCKDB_POOL)
    def _copy(context: dg.AssetExecutionContext, warehouse: DuckDBResource, settings: dg.ResourceParam[Settings]):
        tables = [(k.path[1], k.path[2]) for k in copied]
        with warehouse.get_connection() as con, contextlib.closing(con):
            rows = copy_spark_tables(con, settings.spark_dir / "tables", [*tables, KEY_RUNS])
            report = identity_report(con, identity_truth)
        for (schema, table), n in ((t, rows[t]) for t in tables):
            metadata: dict[str, Any] = {"dagster/row_count": n}
            if (schema, table) == ("marts", "customer_identity_map"):
                metadata |= {f"identity/{k}": v for k, v in report.items()}
            yield dg.MaterializeResult(asset_key=[schema, table], metadata=metadata)

    return _copy
