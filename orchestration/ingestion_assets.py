"""One daily-partitioned Dagster asset per source of the sources file, with its GX checks beside it."""

import contextlib
import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from ingestion.channels import create_channel_view
from ingestion.load import LoadError, days_between, load_source
from ingestion.quality import check_names, validate
from ingestion.sources import Source, SourcesConfig
from orchestration.settings import DUCKDB_POOL, Settings
from serving.erasure import suppression_list


def daily_partitions(config: SourcesConfig) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's partition exists, so files landing today can be loaded today.
    return dg.DailyPartitionsDefinition(
        start_date=config.start_date.isoformat(), timezone=config.timezone, end_offset=1
    )


def ingestion_asset(source: Source, partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    key = dg.AssetKey(["raw", source.name])
    specs = [
        dg.AssetCheckSpec(name, asset=key, description=desc, blocking=blocking)
        for name, desc, blocking in check_names(source.contract)
    ]

    @dg.asset(
        key=key,
        group_name="ingestion",
        description=f"{source.contract.description} Loaded from `{source.path}` ({source.format}).",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=DUCKDB_POOL,
        kinds={"duckdb", source.format},
        check_specs=specs,
        metadata={"channel": source.channel, "path": source.path, "dagster/table_name": source.table},
    )
    def _load(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, settings: dg.ResourceParam[Settings]
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        start, end = window.start.date(), (window.end - dt.timedelta(days=1)).date()
        bounds = (
            dt.date.fromisoformat(partitions.get_first_partition_key()),
            dt.date.fromisoformat(partitions.get_last_partition_key()),
        )
        # closing(): dagster-duckdb's get_connection skips close() when the body raises, which would
        # keep the file open in this process after a failed step.
        with warehouse.get_connection() as con, contextlib.closing(con):
            try:
                result = load_source(
                    con,
                    source,
                    start,
                    end,
                    bounds,
                    batch_id=context.run.run_id,
                    suppression=suppression_list(settings.governance_dir),
                )
            except LoadError as e:
                raise dg.Failure(description=str(e)) from None
            if result.failed_files:
                raise dg.Failure(
                    description=result.failure_summary(),
                    metadata={
                        "failed_files": dg.MetadataValue.json(result.failed_files),
                        "failed_partitions": [str(d) for d in result.failed_dates],
                        "loaded_partitions": len(set(days_between(start, end)) - set(result.failed_dates)),
                    },
                )
            outcomes = validate(con, source, result)
            total = con.execute(f"SELECT count(*) FROM {source.table}").fetchall()[0][0]
        return dg.MaterializeResult(
            metadata={
                "files_read": result.files_read,
                "rows_read": result.rows_read,
                "rows_loaded": result.rows_loaded,
                "rows_quarantined": result.rows_quarantined,
                "duplicates_skipped": result.duplicates_skipped,
                "rows_superseded": result.rows_superseded,
                "rows_suppressed": result.rows_suppressed,
                "quarantine_rate": round(result.quarantine_rate, 6),
                "late_partitions_reloaded": len(result.extra_dates),
                "batch_id": result.batch_id,
                "dagster/row_count": total,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=o.name,
                    passed=o.passed,
                    severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
                    metadata=o.metadata,
                )
                for o in outcomes
            ],
        )

    return _load


def channel_view_asset(channel: str, sources: list[Source]) -> dg.AssetsDefinition:
    """`raw.<channel>`: the union of the channel's sources, the table dbt's staging reads."""

    @dg.asset(
        key=["raw", channel],
        group_name="ingestion",
        description=f"All `{channel}` sources in one view with the contract's columns (empty if none).",
        deps=[dg.AssetKey(["raw", s.name]) for s in sources],
        pool=DUCKDB_POOL,
        kinds={"duckdb"},
        metadata={"dagster/table_name": f"raw.{channel}"},
    )
    def _view(warehouse: DuckDBResource) -> dg.MaterializeResult:
        with warehouse.get_connection() as con, contextlib.closing(con):
            rows = create_channel_view(con, channel, sources)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "sources": ", ".join(s.name for s in sources) or "none"}
        )

    return _view
