"""The Spark engine's assets (CRM_ENGINE=spark, docs/spark.md): the same dbt models built on Spark.

  raw.<channel> (DuckDB) -> lake/raw (Parquet) -> dbt on Spark, in three steps around identity:
    1. staging and everything that needs no identity
    2. int_profiles_matched (Splink on Spark)  -> the identifier models
    3. int_customer_keys_assigned (clusters)   -> the customer models and the marts
  -> Spark's staging, intermediate and marts tables copied into the DuckDB warehouse -> ML, publish, exports

Spark's tables are keyed ["spark", schema, table]; their copies in the warehouse keep the DuckDB
keys ([schema, table]), so ML and serving read what they read on DuckDB. Every asset that runs a
Spark session is in one pool, SPARK_POOL (limit 1): the embedded Derby metastore allows one JVM.
"""

import contextlib
import functools
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets
from dagster_duckdb import DuckDBResource

from ingestion.contracts import CONTRACTS
from ingestion.lake import copy_spark_tables, sync_raw
from orchestration._compat.dagster_dbt import InstalledDbtCli
from orchestration.dbt_assets import (
    DBT_DIR,
    PARTIAL_PARSE,
    DbtBuildConfig,
    WarehouseTranslator,
    dbt_build_args,
    invocation_target_path,
    prune_invocation_targets,
    seed_parse_state,
)
from orchestration.identity_report import identity_report
from orchestration.settings import DBT_EXECUTABLE, DUCKDB_POOL, Settings

SPARK_POOL = "spark_session"
LAKE_TABLES = [*CONTRACTS, "load_log"]  # the dbt sources `raw.*` on Spark (ingestion/lake.py writes them)
PAIRS = dg.AssetKey(["spark", "intermediate", "int_profiles_matched"])
KEYS = dg.AssetKey(["spark", "intermediate", "int_customer_keys_assigned"])
# What ML, serving and the identity report read; staging for erasure (`crm forget` finds a
# person's raw rows through it).
COPIED_SCHEMAS = ("staging", "intermediate", "marts")
KEY_RUNS = ("intermediate", "int_customer_keys_assigned__runs")  # the keys asset's log, which the identity report reads
# The three dbt steps around the identity assets, as dbt selections (select, exclude).
STEPS = {
    "dbt_spark_before_identity": ("fqn:*", "source:identity+"),
    "dbt_spark_identifiers": ("source:identity.int_profiles_matched+", "source:identity.int_customer_keys_assigned+"),
    "dbt_spark_customers": ("source:identity.int_customer_keys_assigned+", ""),
}


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


@functools.cache
def spark_dbt_project() -> DbtProject:
    return DbtProject(
        project_dir=DBT_DIR, profiles_dir=DBT_DIR, target="spark", target_path=DBT_DIR / "target" / "spark"
    )


class SparkTranslator(WarehouseTranslator):
    """Spark's tables under ["spark", schema, table]; the raw sources are the lake."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source" and dbt_resource_props["source_name"] == "raw":
            return dg.AssetKey(["lake", "raw", dbt_resource_props["name"]])
        return dg.AssetKey(["spark", *super().get_asset_key(dbt_resource_props).path])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return None if dbt_resource_props["resource_type"] == "source" else "spark"


def spark_dbt_step(name: str, dbt_vars: str | None) -> dg.AssetsDefinition:
    select, exclude = STEPS[name]
    project = spark_dbt_project()

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        select=select,
        exclude=exclude or None,
        dagster_dbt_translator=SparkTranslator(),
        pool=SPARK_POOL,
        name=name,
    )
    def _step(context: dg.AssetExecutionContext, config: DbtBuildConfig, dbt_spark: DbtCliResource):
        # The Spark manifest's parse state, not the DuckDB one dagster-dbt would copy in.
        target = invocation_target_path(context.run.run_id, name)
        seed_parse_state(target, project.target_path / PARTIAL_PARSE)
        invocation = dbt_spark.cli(dbt_build_args(config, dbt_vars), context=context, target_path=target)
        yield from invocation.stream()
        prune_invocation_targets(invocation.target_path, name)

    return _step


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


def identity_assets(fuzzy_match_threshold: float) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=PAIRS,
        group_name="spark",
        pool=SPARK_POOL,
        kinds={"spark", "splink"},
        deps=[dg.AssetKey(["spark", "staging", "stg_customers__profiles"])],
        description="Pairs of registry profiles Splink's Spark backend scores (identity/spark.py).",
    )
    def profiles_matched(settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
        from identity.spark import match_profiles

        with spark_session(settings) as spark:
            pairs, accepted = match_profiles(spark, fuzzy_match_threshold)
        return dg.MaterializeResult(metadata={"pairs": pairs, "pairs_accepted": accepted})

    @dg.asset(
        key=KEYS,
        group_name="spark",
        pool=SPARK_POOL,
        kinds={"spark", "splink"},
        deps=[
            dg.AssetKey(["spark", "intermediate", t]) for t in ("int_identifiers_collected", "int_identifier_quality")
        ],
        description="Stable customer keys of the identity graph's components (identity/spark.py).",
    )
    def customer_keys_assigned(settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
        from identity.spark import assign_customer_keys

        with spark_session(settings) as spark:
            identifiers, customers = assign_customer_keys(spark)
        return dg.MaterializeResult(metadata={"identifiers": identifiers, "customers": customers})

    return [profiles_matched, customer_keys_assigned]


def spark_transform(identity_truth: Path | None, dbt_vars: str | None) -> list[dg.AssetsDefinition]:
    """Every asset between the raw views and ML on the Spark engine."""
    path = spark_dbt_project().manifest_path
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: `crm run --engine spark` parses the project for Spark")
    manifest = json.loads(path.read_text())
    # The model's own setting (its YAML), which the Spark manifest keeps though the model is off there.
    matcher = manifest["disabled"]["model.crm_warehouse.int_profiles_matched"][0]
    steps = [spark_dbt_step(name, dbt_vars) for name in STEPS]
    identity = identity_assets(float(matcher["config"]["fuzzy_match_threshold"]))
    built = [k for a in [*steps, *identity] for k in a.keys]
    return [lake_raw, *identity, *steps, spark_tables_copied(built, identity_truth)]


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


def spark_resource() -> DbtCliResource:
    return InstalledDbtCli(
        project_dir=spark_dbt_project(), profiles_dir=str(DBT_DIR), target="spark", dbt_executable=DBT_EXECUTABLE
    )
