"""The ML tables as Dagster assets keyed ["ml", table] in group `ml`, each a thin wrapper over
ml.tables.build, downstream of the marts it reads; as-of date from the run's crm/as_of tag, else
the last order date.

A table without enough history as of the date (churn on a few weeks of data) writes nothing and
says so in its metadata (`built: false`, `not_built_because`). It still reports, so that the
publish step below it runs: Dagster skips everything downstream of an output not yielded."""

import contextlib
import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from ml.config import load_config
from ml.run_context import NotEnoughHistory, RunContext, latest_order_date
from ml.tables import MART_INPUTS, TABLES, build
from orchestration.environment import DUCKDB_POOL
from orchestration.run import AS_OF_TAG


def ml_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(key=["ml", name], group_name="ml", pool=DUCKDB_POOL, description=TABLES[name].__doc__ or f"ml.{name}",
              deps=[dg.AssetKey(["marts", mart]) for mart in MART_INPUTS[name]], kinds={"python", "duckdb"})
    def _table(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
        tag = context.run.tags.get(AS_OF_TAG)
        with warehouse.get_connection() as con, contextlib.closing(con):
            ctx = RunContext(dt.date.fromisoformat(tag) if tag else latest_order_date(con), context.run.run_id)
            try:
                out = build(con, name, ctx, load_config())
            except NotEnoughHistory as e:  # nothing written (and said so), rather than a made-up table
                context.log.warning(f"ml.{name} not built as of {ctx.as_of}: {e}")
                return dg.MaterializeResult(metadata={"as_of_date": str(ctx.as_of), "built": False, "not_built_because": str(e)})
        return dg.MaterializeResult(metadata={
            "as_of_date": str(ctx.as_of), "built": True, "dagster/row_count": out.frame.height,
            **{f"metric/{k}": float(v) for k, v in out.metrics.items()},
        })

    return _table


def ml_assets() -> list[dg.AssetsDefinition]:
    return [ml_asset(name) for name in TABLES]
