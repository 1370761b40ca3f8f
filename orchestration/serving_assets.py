"""Group `serving`: once everything upstream succeeded, publish the build database as a read-only
version and write the masked BI export and the insight report of that version (serving/), in one
step: the export and the report read the build file, which holds the version byte for byte, while
it is copied to the version (serving.publish.publishing), and side by side."""

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from ingestion.sources import load_sources
from orchestration.automation import INGEST_RUN_TAG
from orchestration.dbt_assets import dbt_project
from orchestration.run import AS_OF_TAG
from orchestration.settings import DUCKDB_POOL, Settings
from serving.export import ExportSpec, write_export
from serving.identifier_leaks import identifier_columns
from serving.masking import personal_columns
from serving.publish import Publication, Readable, publishing
from serving.report.pdf import BrowserMissing, find_browser
from serving.report.write import ReportSpec, published_run_id, write_report
from serving.scopes import create_scope_views

PUBLISHED = dg.AssetKey(["serving", "published_warehouse"])
EXPORTS = dg.AssetKey(["serving", "bi_exports"])
REPORT = dg.AssetKey(["serving", "insight_report"])


def bi_exports(settings: Settings, key: str, version: Readable | None) -> dg.MaterializeResult:
    manifest = dbt_project().manifest_path
    started = time.perf_counter()
    export = write_export(
        settings.published_dir,
        settings.warehouse.parent,
        ExportSpec(),
        personal_columns(manifest),
        key,
        settings.duckdb_config,
        identifier_columns(manifest),
        version=version,
    )
    tables = export.manifest["tables"]
    return dg.MaterializeResult(
        asset_key=EXPORTS,
        metadata={
            "path": dg.MetadataValue.path(str(export.path)),
            "version": export.manifest["version"],
            "dagster/row_count": sum(v["rows"] for v in tables.values()),
            "tables": len(tables),
            "bytes": export.manifest["bytes"],
            "bytes_written": export.manifest["bytes_written"],
            "seconds": round(time.perf_counter() - started, 3),
            "rows": dg.MetadataValue.json({t: v["rows"] for t, v in tables.items()}),
            "masked_columns": dg.MetadataValue.json(
                {t: v["masked_columns"] for t, v in tables.items() if v["masked_columns"]}
            ),
        },
    )


def checks_of_run(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, bool]] | None:
    """(asset:check, passed) of every check the build run evaluated, and the ingestion run it built
    on (the sources' quality gates); None when this instance never saw the run."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return None
    runs = [run_id, *([run.tags[INGEST_RUN_TAG]] if INGEST_RUN_TAG in run.tags else [])]
    records = [r for i in runs for r in instance.all_logs(i, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    evaluations = (r.dagster_event.event_specific_data for r in records if r.dagster_event)
    return sorted((f"{'/'.join(e.asset_key.path)}:{e.check_name}", e.passed) for e in evaluations)


def insight_report(
    settings: Settings, key: str, checks: list[tuple[str, bool]] | None, pdf: bool, version: Readable | None
) -> dg.MaterializeResult:
    lang = load_sources(settings.sources_file).report_lang
    started = time.perf_counter()
    report = write_report(
        settings.published_dir,
        settings.reports_dir,
        ReportSpec(lang=lang, default_lang=lang, pdf=pdf),
        key,
        checks,
        settings.duckdb_config,  # the export's: one DuckDB instance serves both, and takes one configuration
        version,
    )
    return dg.MaterializeResult(
        asset_key=REPORT,
        metadata={
            "path": dg.MetadataValue.path(str(report.html)),
            "pdf": dg.MetadataValue.path(str(report.pdf)) if report.pdf else "not written (no Chromium)",
            "as_of_date": report.as_of,
            "version": report.version,
            "size_mib": round(report.size_bytes / 2**20, 2),
            "seconds": round(time.perf_counter() - started, 3),
            **{f"seconds/{k}": v for k, v in report.seconds.items()},
        },
    )


def publication_metadata(pub: Publication) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=PUBLISHED,
        metadata={
            "version": pub.version,
            "path": dg.MetadataValue.path(str(pub.path)),
            "dagster/row_count": sum(pub.row_counts.values()),
            "size_mib": round(pub.size_bytes / 2**20, 1),
            "pruned": ", ".join(pub.pruned) or "none",
            "seconds": round(pub.seconds, 3),  # to the switch: the export and the report may end later
            "row_counts": dg.MetadataValue.json(pub.row_counts),
        },
    )


def serving_assets(upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                PUBLISHED,
                group_name="serving",
                deps=upstream,
                kinds={"duckdb"},
                description="The build database copied to a new read-only version and switched in atomically; "
                "older versions pruned. Analysts and exports read only published versions.",
            ),
            dg.AssetSpec(
                EXPORTS,
                group_name="serving",
                deps=[PUBLISHED],
                kinds={"parquet"},
                description="Every mart and ML table of the current version as zstd Parquet in warehouse/exports/, "
                "personal data as keyed hashes, manifest.json last, switched in atomically.",
            ),
            dg.AssetSpec(
                REPORT,
                group_name="serving",
                deps=[PUBLISHED],
                kinds={"html", "pdf"},
                description="The insight report of the current published version: reports/<as_of>/report.html, and "
                "report.pdf where Chromium is installed; reports/latest points at it. Reads only the published version.",
            ),
        ],
        name="serving",
        pool=DUCKDB_POOL,  # the publish writes the build file, and the export and report read it meanwhile
        can_subset=True,
    )
    def _serving(context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]):
        """The publish's copy waits on the disk, the export mostly on DuckDB, the report on Python and
        Chromium: an in-process run (`crm run`) executes one step at a time, so they share one."""
        if PUBLISHED not in context.selected_asset_keys:  # the export or the report again, of the current version
            results, failed = _outputs(
                context, settings, None, published_run_id(settings.published_dir, settings.duckdb_config)
            )
        else:
            tag = context.run.tags.get(AS_OF_TAG)
            personal = personal_columns(dbt_project().manifest_path)
            with publishing(
                settings.warehouse,
                settings.published_dir,
                context.run.run_id,
                dt.date.fromisoformat(tag) if tag else None,
                keep=settings.keep_versions,
                prepare=lambda con: create_scope_views(con, personal),
                copy_parts=settings.threads,
            ) as pending:
                results, failed = _outputs(context, settings, pending.build, context.run.run_id)
            yield publication_metadata(pending.publication())
        yield from results
        if failed:
            raise RuntimeError(f"{', '.join(failed)} failed (see the step's log; the other was written)")

    return _serving


def _outputs(
    context: dg.AssetExecutionContext, settings: Settings, version: Readable | None, run_id: str
) -> tuple[list[dg.MaterializeResult], list[str]]:
    """The export and the report of `version` (the current one if None), which `run_id` built, side by
    side (they read the same version and nothing of each other); and those that failed, logged."""
    key = settings.masking_key()  # once, before the threads: the first use creates it
    work: dict[dg.AssetKey, Callable[[], dg.MaterializeResult]] = {EXPORTS: lambda: bi_exports(settings, key, version)}
    if REPORT in context.selected_asset_keys:
        try:
            find_browser()
            pdf = True
        except BrowserMissing as e:
            context.log.warning(f"report.pdf not written: {e}")
            pdf = False
        checks = checks_of_run(context.instance, run_id)
        work[REPORT] = lambda: insight_report(settings, key, checks, pdf, version)
    selected = [k for k in work if k in context.selected_asset_keys]
    with ThreadPoolExecutor(max_workers=max(len(selected), 1)) as pool:
        running = {key: pool.submit(work[key]) for key in selected}
    results, failed = [], []
    for key, future in running.items():
        try:
            results.append(future.result())
        except Exception:
            context.log.exception(f"{key.to_user_string()} failed")
            failed.append(key.to_user_string())
    return results, failed
