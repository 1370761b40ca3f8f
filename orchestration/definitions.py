"""The one Dagster `Definitions` of crm-warehouse (`dagster dev -m orchestration.definitions`)."""

from __future__ import annotations

import json
import logging
import warnings

import dagster as dg
from dagster_duckdb import DuckDBResource

from ingestion.contracts import CONTRACTS
from ingestion.sources import load_sources
from ingestion.start_date import with_start_date
from orchestration.automation import build_after_ingest, build_job, daily_schedule, ingest_job, new_files_sensor
from orchestration.dbt_assets import dbt_project, dbt_resource, dbt_steps
from orchestration.identity_assets import identity_assets
from orchestration.ingestion_assets import channel_view_asset, daily_partitions, ingestion_asset
from orchestration.ml_assets import ml_assets
from orchestration.serving_assets import serving_assets
from orchestration.settings import Settings, hand_to_processes


@dg.definitions
def defs() -> dg.Definitions:
    """Built when Dagster loads the code location (`dagster dev`), not at import, from the
    environment's settings."""
    return build_definitions(Settings.load())


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every asset, job, schedule and sensor for this deployment; reads only the sources file."""
    # BackfillPolicy is "beta" but is how single-run backfills are declared; say so once, not per asset.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    hand_to_processes(settings)  # dbt's profile reads the warehouse path from the environment
    dbt_project(settings.engine).prepare_if_dev()  # `dagster dev` re-parses the project; elsewhere set-up did
    config, inferred = with_start_date(load_sources(settings.sources_file), settings.warehouse)
    if inferred:
        logging.getLogger("crm").warning(inferred)
    partitions = daily_partitions(config)
    job, build = ingest_job(partitions), build_job()
    dbt_vars = json.dumps(config.dbt_vars, sort_keys=True) if config.dbt_vars else None
    transform = [
        *dbt_steps(settings.engine, config.identity_truth, dbt_vars),
        *identity_assets(settings.engine, config.fuzzy_match_threshold),
    ]
    if settings.engine == "spark":
        from orchestration.spark_assets import spark_assets

        transform += spark_assets([k for a in transform for k in a.keys], config.identity_truth)
    ml = ml_assets()
    served = [k for a in transform for k in a.keys if k.path[0] == "marts"] + list(ml.keys)
    return dg.Definitions(
        assets=[
            *(ingestion_asset(s, partitions) for s in config.sources),
            *(channel_view_asset(c, [s for s in config.sources if s.channel == c]) for c in CONTRACTS),
            *transform,
            ml,
            serving_assets(served),
        ],
        jobs=[job, build],
        schedules=[daily_schedule(job)],
        sensors=[new_files_sensor(config, job, partitions), build_after_ingest(job, build)],
        resources={
            "warehouse": DuckDBResource(database=str(settings.warehouse), connection_config=settings.duckdb_config),
            "dbt": dbt_resource(settings.engine),
            "settings": settings,  # a plain object: assets ask for it as dg.ResourceParam[Settings]
        },
    )
