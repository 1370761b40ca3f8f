"""When things run: a daily schedule for yesterday's ingestion partition, a sensor that requests the
partitions of files that land (or are re-delivered) in a source's path, and a sensor that builds,
checks and publishes the warehouse after every successful ingestion run.

Two jobs, not one: the raw tables are daily-partitioned, everything downstream is not. A run over
a partition range that also held the unpartitioned assets would plan each of them once per day
of the range (22,000 planned events for a year), which cost minutes before any work started."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from ingestion.load import name_date
from ingestion.sources import SourcesConfig
from orchestration._compat.dagster_tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

INGEST_JOB = "ingest_sources"
BUILD_JOB = "build_warehouse"
INGEST_RUN_TAG = "crm/ingest_run"  # on a build run: the ingestion run it builds on (its checks are the version's too)
AS_OF_TAG = "crm/as_of"


def range_tags(start: dt.date, end: dt.date) -> dict[str, str]:
    """Run tags asking for partitions start..end in one run (the assets' backfill policy is single-run)."""
    return {ASSET_PARTITION_RANGE_START_TAG: start.isoformat(), ASSET_PARTITION_RANGE_END_TAG: end.isoformat()}


def ingest_job(partitions: dg.DailyPartitionsDefinition) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(INGEST_JOB, selection=dg.AssetSelection.groups("ingestion"))


def build_job() -> dg.UnresolvedAssetJobDefinition:
    """dbt models, ML tables, publish and export: everything that is not ingestion."""
    return dg.define_asset_job(BUILD_JOB, selection=dg.AssetSelection.all() - dg.AssetSelection.groups("ingestion"))


def build_after_ingest(
    ingest: dg.UnresolvedAssetJobDefinition, build: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name="build_after_ingest",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[ingest],
        request_job=build,
        minimum_interval_seconds=60,
        description="After each successful ingestion run: build the marts and ML tables, run their "
        "checks, publish a new version and export it.",
    )
    def _sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest:
        run = context.dagster_run
        as_of = {AS_OF_TAG: run.tags[AS_OF_TAG]} if AS_OF_TAG in run.tags else {}
        return dg.RunRequest(run_key=run.run_id, tags={INGEST_RUN_TAG: run.run_id, **as_of})

    return _sensor


def daily_schedule(job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    # Runs at 02:00 for the day that just ended (in the partitions' timezone).
    return dg.build_schedule_from_partitioned_job(job, name="ingest_daily", hour_of_day=2)


def new_files_sensor(
    config: SourcesConfig, job: dg.UnresolvedAssetJobDefinition, partitions: dg.DailyPartitionsDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_extract_files",
        job=job,
        minimum_interval_seconds=60,
        description="Requests the partitions of files that appear or change in a source's path.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor: dict[str, int] = json.loads(context.cursor or "{}")
        first = dt.date.fromisoformat(partitions.get_first_partition_key())
        last = dt.date.fromisoformat(partitions.get_last_partition_key())
        requests = []
        for source in config.sources:
            seen = cursor.get(source.name, 0)
            stats = [(p, p.stat().st_mtime_ns) for p in source.files()]
            landed = [p for p, mtime in stats if mtime > seen]
            if not landed:
                continue
            # A file's name date (else today) picks the partition; the loader also reloads every
            # other day the file turns out to feed.
            days = sorted({min(max(name_date(p) or last, first), last) for p in landed})
            newest = max(m for _, m in stats)
            requests.append(
                dg.RunRequest(
                    run_key=f"{source.name}:{newest}",
                    asset_selection=[dg.AssetKey(["raw", source.name])],
                    tags=range_tags(days[0], days[-1]),
                )
            )
            cursor[source.name] = newest
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return _sensor
