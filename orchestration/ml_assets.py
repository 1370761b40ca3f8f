"""The ML tables as Dagster assets keyed ["ml", table] in group `ml`: one multi-asset, a thin wrapper
over ml.tables.build_tables, so that the tables built in one step share their reads of the marts
(ml.tables.MartInputs) and build in two lanes side by side; any subset can be selected. As-of date from the run's crm/as_of tag, else
the last order date.

A table without enough history as of the date (churn on a few weeks of data) writes nothing and
says so in its metadata (`built: false`, `not_built_because`). It still reports, so that the
publish step below it runs: Dagster skips everything downstream of an output not yielded. A table
that fails does not stop the others; the step fails after them."""

import contextlib
import datetime as dt
import traceback
from dataclasses import replace

import dagster as dg
from dagster_duckdb import DuckDBResource

from ingestion.sources import load_sources
from ml.config import MLConfig, load_config
from ml.run_context import NotEnoughHistory, RunContext, latest_order_date
from ml.tables import MART_INPUTS, TABLES, build_tables
from orchestration.run import AS_OF_TAG
from orchestration.settings import DUCKDB_POOL, Settings


def with_calendar(cfg: MLConfig, settings: Settings) -> MLConfig:
    """The sources file's calendar of known events for the forecasts, unless the ML config names one."""
    calendar = load_sources(settings.sources_file).calendar
    if cfg.forecast.calendar or calendar is None:
        return cfg
    return replace(cfg, forecast=replace(cfg.forecast, calendar=str(calendar)))


def ml_assets() -> dg.AssetsDefinition:
    specs = [
        dg.AssetSpec(
            ["ml", name],
            group_name="ml",
            description=TABLES[name].__doc__ or f"ml.{name}",
            deps=[dg.AssetKey(["marts", mart]) for mart in MART_INPUTS[name]],
            kinds={"python", "duckdb"},
        )
        for name in TABLES
    ]

    @dg.multi_asset(specs=specs, name="ml_tables", pool=DUCKDB_POOL, can_subset=True)
    def _tables(context: dg.AssetExecutionContext, warehouse: DuckDBResource, settings: dg.ResourceParam[Settings]):
        tag = context.run.tags.get(AS_OF_TAG)
        with warehouse.get_connection() as con, contextlib.closing(con):
            as_of = dt.date.fromisoformat(tag) if tag else latest_order_date(con)
        ctx = RunContext(as_of, context.run.run_id, settings.models_dir)
        cfg, failed = with_calendar(load_config(settings.ml_config), settings), []
        names = [n for n in TABLES if dg.AssetKey(["ml", n]) in context.selected_asset_keys]
        for built in build_tables(warehouse.get_connection, names, ctx, cfg):
            if isinstance(built.error, NotEnoughHistory):  # nothing written (and said so), not a made-up table
                context.log.warning(f"ml.{built.name} not built as of {ctx.as_of}: {built.error}")
                yield dg.MaterializeResult(
                    asset_key=["ml", built.name],
                    metadata={"as_of_date": str(ctx.as_of), "built": False, "not_built_because": str(built.error)},
                )
            elif built.error is not None or built.output is None:
                trace = "".join(traceback.format_exception(built.error)) if built.error else "no output"
                context.log.error(f"ml.{built.name} failed as of {ctx.as_of}:\n{trace}")
                failed.append(built.name)
            else:
                yield dg.MaterializeResult(
                    asset_key=["ml", built.name],
                    metadata={
                        "as_of_date": str(ctx.as_of),
                        "built": True,
                        "dagster/row_count": built.output.frame.height,
                        "seconds": round(built.seconds, 3),
                        **{f"metric/{k}": float(v) for k, v in built.output.metrics.items()},
                    },
                )
        if failed:
            raise RuntimeError(f"ML tables failed: {', '.join(failed)} (see the step's log; the others were written)")

    return _tables
