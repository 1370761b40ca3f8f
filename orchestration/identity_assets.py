"""Identity resolution as two assets between the dbt steps (orchestration/dbt_assets.py: STEPS), on
the engine's backend: identity/duckdb.py in the warehouse, identity/spark.py on a Spark session.

  staging.stg_customers__profiles -> int_profiles_matched (Splink)
  int_identifiers_collected, int_identifier_quality -> int_customer_keys_assigned (stable keys)

dbt reads both as the source `identity`. On Spark they are keyed ["spark", schema, table], as
every Spark table is.
"""

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from orchestration.settings import DUCKDB_POOL, SPARK_POOL, Settings

PAIRS = ("intermediate", "int_profiles_matched")
KEYS = ("intermediate", "int_customer_keys_assigned")
PAIRS_INPUTS = [("staging", "stg_customers__profiles")]
KEYS_INPUTS = [("intermediate", "int_identifiers_collected"), ("intermediate", "int_identifier_quality")]


class IdentityConfig(dg.Config):
    """Launch-time options of the identity assets (`crm run --full-refresh` sets it with dbt's)."""

    full_refresh: bool = False  # search every pair and recompute every component (Spark always does)


@contextlib.contextmanager
def engine_session(on_spark: bool, warehouse: DuckDBResource, settings: Settings) -> Iterator[Any]:
    """A Spark session, or a connection to the warehouse."""
    if on_spark:
        from orchestration.spark_assets import spark_session

        with spark_session(settings) as spark:
            yield spark
    else:
        with warehouse.get_connection() as con, contextlib.closing(con):
            yield con


def identity_ops(engine: str) -> list[str]:
    """The identity assets' op names (their keys as identifiers), which run config addresses."""
    prefix = ["spark"] if engine == "spark" else []
    return [dg.AssetKey([*prefix, *k]).to_python_identifier() for k in (PAIRS, KEYS)]


def identity_assets(engine: str, fuzzy_match_threshold: float) -> list[dg.AssetsDefinition]:
    on_spark = engine == "spark"
    prefix = ["spark"] if on_spark else []
    common = {"group_name": "spark" if on_spark else "identity", "pool": SPARK_POOL if on_spark else DUCKDB_POOL}

    @dg.asset(
        key=[*prefix, *PAIRS],
        deps=[dg.AssetKey([*prefix, *k]) for k in PAIRS_INPUTS],
        kinds={"spark" if on_spark else "duckdb", "splink"},
        description="Pairs of registry profiles Splink scores as one person; accepted at the threshold.",
        **common,
    )
    def int_profiles_matched(
        config: IdentityConfig, warehouse: DuckDBResource, settings: dg.ResourceParam[Settings]
    ) -> dg.MaterializeResult:
        with engine_session(on_spark, warehouse, settings) as session:
            if on_spark:
                from identity.spark import match_profiles as match_on_spark

                matched = match_on_spark(session, fuzzy_match_threshold)
            else:
                from identity.duckdb import match_profiles

                matched = match_profiles(session, fuzzy_match_threshold, config.full_refresh)
        return dg.MaterializeResult(metadata=dataclasses.asdict(matched))

    @dg.asset(
        key=[*prefix, *KEYS],
        deps=[dg.AssetKey([*prefix, *k]) for k in KEYS_INPUTS],
        kinds={"spark", "splink"} if on_spark else {"duckdb", "scipy"},
        description="Stable customer keys of the identity graph's components (one row per identifier).",
        **common,
    )
    def int_customer_keys_assigned(
        config: IdentityConfig, warehouse: DuckDBResource, settings: dg.ResourceParam[Settings]
    ) -> dg.MaterializeResult:
        with engine_session(on_spark, warehouse, settings) as session:
            if on_spark:
                from identity.spark import assign_customer_keys as assign_on_spark

                assigned = assign_on_spark(session)
            else:
                from identity.duckdb import assign_customer_keys

                assigned = assign_customer_keys(session, settings.memory_limit, config.full_refresh)
        return dg.MaterializeResult(metadata=dataclasses.asdict(assigned))

    return [int_profiles_matched, int_customer_keys_assigned]
