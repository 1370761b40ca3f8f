"""The one Dagster `Definitions` of crm-warehouse (`dagster dev -m orchestration.definitions`)."""

from __future__ import annotations

import warnings

import dagster as dg
from dagster_duckdb import DuckDBResource

from ingestion.sources import load_sources
from orchestration import environment
from orchestration.automation import daily_schedule, ingest_job, new_files_sensor
from orchestration.ingestion_assets import daily_partitions, ingestion_asset


@dg.definitions
def defs() -> dg.Definitions:
    """Built when Dagster loads the code location, not at import: reads only the sources file."""
    # BackfillPolicy is "beta" but is how single-run backfills are declared; say so once, not per asset.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    env = environment.current()
    config = load_sources(env.sources_file)
    partitions = daily_partitions(config)
    job = ingest_job(partitions)
    return dg.Definitions(
        assets=[ingestion_asset(s, partitions) for s in config.sources],
        jobs=[job],
        schedules=[daily_schedule(job)],
        sensors=[new_files_sensor(config, job, partitions)],
        resources={
            "warehouse": DuckDBResource(database=str(env.warehouse), connection_config=env.duckdb_config),
        },
    )
