"""`crm run`: materialize the whole asset graph in-process through Dagster, over a partition range,
so that metadata, check results and run history are recorded as for any Dagster run."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ingestion.probe import latest_event_date
from ingestion.sources import SourcesConfig, load_sources
from ingestion.start_date import with_start_date
from orchestration.automation import AS_OF_TAG, BUILD_JOB, INGEST_JOB, INGEST_RUN_TAG, range_tags
from orchestration.settings import Settings, hand_to_processes

PROGRESS_POLL_SECONDS = 2.0
PID_TAG, HOST_TAG = "crm/pid", "crm/host"  # which process runs it, to notice when one was killed


class RunFailed(RuntimeError):
    """The Dagster run failed; the message is the first failing step's error."""


@dataclass
class RunSummary:
    run_id: str
    start: dt.date
    end: dt.date
    as_of: dt.date | None
    materialized: dict[str, dict] = field(default_factory=dict)  # asset key -> metadata
    checks: dict[str, bool] = field(default_factory=dict)  # "asset:check" -> passed
    run_ids: list[str] = field(default_factory=list)  # the ingestion run, then the build run
    notes: list[str] = field(default_factory=list)  # what the run decided on its own, for the user


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first failing step's own message: a Failure's description, else the root exception."""
    for event in result.all_events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return f"{event.step_key}: {data.user_failure_data.description}"
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            return f"{event.step_key}: {error.message.strip().splitlines()[0]}"
    return "run failed"


def run_pipeline(
    settings: Settings,
    as_of: dt.date | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    log_level: str = "WARNING",
    full_refresh: bool = False,
) -> RunSummary:
    """Materialize every asset for partitions start..end.

    Defaults: start = the sources file's start_date (or the earliest event, recorded on the first
    run); end = as_of; as_of = the last day with data.
    """
    settings.warehouse.parent.mkdir(parents=True, exist_ok=True)
    # Fail fast, before Dagster starts, on a bad sources file; infer and record a missing start date.
    config, inferred = with_start_date(load_sources(settings.sources_file), settings.warehouse)
    hand_to_processes(settings)

    from orchestration.dbt_assets import STEPS, dbt_project, prepare_manifest
    from orchestration.definitions import build_definitions
    from orchestration.identity_assets import identity_ops

    prepare_manifest()
    if settings.engine != "duckdb":
        prepare_manifest(dbt_project(settings.engine))
    refreshed_ops = [*STEPS, *identity_ops(settings.engine)]  # what --full-refresh rebuilds from scratch

    definitions = build_definitions(settings)
    partitions = definitions.resolve_assets_def(dg.AssetKey(["raw", config.sources[0].name])).partitions_def
    last = dt.date.fromisoformat(partitions.get_last_partition_key())
    start, end, as_of = _partition_range(config, settings.sources_file, last, as_of, start, end)

    as_of_tag = {AS_OF_TAG: as_of.isoformat()} if as_of else {}
    runs = [  # ingestion over the partition range, then everything downstream (see automation.py)
        (definitions.resolve_job_def(INGEST_JOB), {**range_tags(start, end), **as_of_tag}, {}),
        (
            definitions.resolve_job_def(BUILD_JOB),
            as_of_tag,
            {"ops": {op: {"config": {"full_refresh": full_refresh}} for op in refreshed_ops}},
        ),
    ]
    total = sum(len(job.graph.node_defs) for job, _, _ in runs)
    results: list[dg.ExecuteInProcessResult] = []
    with dg.DagsterInstance.get() as instance:
        release_abandoned_runs(instance)
        for job, tags, run_config in runs:
            done_before = sum(len(j.graph.node_defs) for j, _, _ in runs[: len(results)])
            built_on = {INGEST_RUN_TAG: results[0].run_id} if results else {}  # the build names its ingestion
            result = _execute(
                instance,
                job,
                {**tags, **built_on},
                {"loggers": {"console": {"config": {"log_level": log_level}}}, **run_config},
                (lambda n, before=done_before: on_progress(before + n, total)) if on_progress else None,
            )
            results.append(result)
            if not result.success:
                raise RunFailed(_failure_message(result))
    if on_progress:
        on_progress(total, total)

    summary = RunSummary(
        results[-1].run_id, start, end, as_of, run_ids=[r.run_id for r in results], notes=[inferred] if inferred else []
    )
    for result in results:
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            summary.materialized["/".join(mat.asset_key.path)] = {k: v.value for k, v in mat.metadata.items()}
        for event in result.get_asset_check_evaluations():
            summary.checks[f"{'/'.join(event.asset_key.path)}:{event.check_name}"] = event.passed
    return summary


def _partition_range(
    config: SourcesConfig,
    sources_file: Path,
    last: dt.date,
    as_of: dt.date | None,
    start: dt.date | None,
    end: dt.date | None,
) -> tuple[dt.date, dt.date, dt.date | None]:
    """start, end and as-of of a run: as-of defaults to the last day with data in the files (when
    no end is given either), start to the sources file's start date, end to as-of."""
    if as_of is None and end is None:
        reach = [d for d in (latest_event_date(s, last) for s in config.sources) if d]
        if not reach:
            raise ValueError(f"no data found in the files of {sources_file}")
        as_of = max(reach)
    start = start or config.start_date
    end = end or as_of
    if start is None or end is None:
        raise ValueError("no partition range: give --from and --to, or --as-of")
    if start > end:
        raise ValueError(f"--from {start} is after --to/--as-of {end}")
    if as_of and end > as_of:
        raise ValueError(f"--to {end} is after --as-of {as_of}: nothing after the as-of date may be loaded")
    if start < config.start_date or end > last:
        raise ValueError(f"partitions run from {config.start_date} to {last}; asked for {start}..{end}")
    return start, end, as_of


def release_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the in-process runs whose process is gone (killed, crashed) and free their slots.

    A run in the `duckdb_writer` pool holds the pool's one slot until it ends; a killed `crm run`
    never ends, so without this every later run would wait for that slot forever. (Runs launched
    by the Dagster daemon are watched by its run monitoring instead.)
    """
    released = []
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING], tags={HOST_TAG: socket.gethostname()}
        )
    )
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid and pid != os.getpid() and not _alive(pid):
            instance.report_run_failed(run, f"the process that ran it (pid {pid}) is gone: killed or crashed")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            released.append(run.run_id)
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _execute(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    tags: dict[str, str],
    run_config: dict,
    on_steps: Callable[[int], None] | None,
) -> dg.ExecuteInProcessResult:
    """Run `job` in a worker thread, reporting finished steps from the instance meanwhile (every
    PROGRESS_POLL_SECONDS, and only when asked: each poll reads the run's event log while the run writes to it)."""
    # Both threads query the instance's SQLite storage; SQLAlchemy's ORM imports parts of itself on
    # first use, and two threads doing that at once fail with a circular import. Import it here.
    import sqlalchemy.orm  # noqa: F401

    run_id = str(uuid.uuid4())
    done = threading.Event()
    outcome: dict[str, object] = {}

    def execute() -> None:
        try:
            outcome["result"] = job.execute_in_process(
                run_config=run_config, instance=instance, run_id=run_id, tags=tags, raise_on_error=False
            )
        except BaseException as e:  # surfaced below, in the caller's thread
            outcome["error"] = e
        finally:
            done.set()

    tags = {**tags, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    worker = threading.Thread(target=execute, daemon=True)
    worker.start()
    while not done.wait(PROGRESS_POLL_SECONDS if on_steps else None):
        if on_steps and instance.has_run(run_id):
            stats = instance.get_run_stats(run_id)
            on_steps(stats.steps_succeeded + stats.steps_failed)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
