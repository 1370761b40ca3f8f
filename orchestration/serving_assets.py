"""Group `serving`: publish the build database as a read-only version once everything upstream
succeeded, then write the masked BI export of that version (serving/)."""

import datetime as dt

import dagster as dg

from orchestration.dbt_assets import dbt_project
from orchestration.run import AS_OF_TAG
from orchestration.settings import DUCKDB_POOL, Settings
from serving.export import ExportSpec, write_export
from serving.identifier_leaks import identifier_columns
from serving.masking import personal_columns
from serving.publish import publish
from serving.scopes import create_scope_views

PUBLISHED = dg.AssetKey(["serving", "published_warehouse"])
EXPORTS = dg.AssetKey(["serving", "bi_exports"])


def published_warehouse(upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=PUBLISHED,
        group_name="serving",
        pool=DUCKDB_POOL,
        deps=upstream,
        kinds={"duckdb"},
        description="The build database copied to a new read-only version and switched in atomically; "
        "older versions pruned. Analysts and exports read only published versions.",
    )
    def _publish(context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
        tag = context.run.tags.get(AS_OF_TAG)
        personal = personal_columns(dbt_project().manifest_path)
        pub = publish(
            settings.warehouse,
            settings.published_dir,
            context.run.run_id,
            dt.date.fromisoformat(tag) if tag else None,
            keep=settings.keep_versions,
            prepare=lambda con: create_scope_views(con, personal),
        )
        return dg.MaterializeResult(
            metadata={
                "version": pub.version,
                "path": dg.MetadataValue.path(str(pub.path)),
                "dagster/row_count": sum(pub.row_counts.values()),
                "size_mib": round(pub.size_bytes / 2**20, 1),
                "pruned": ", ".join(pub.pruned) or "none",
                "row_counts": dg.MetadataValue.json(pub.row_counts),
            }
        )

    return _publish


@dg.asset(
    key=EXPORTS,
    group_name="serving",
    deps=[PUBLISHED],
    kinds={"parquet"},
    description="Every mart and ML table of the current version as zstd Parquet in warehouse/exports/, "
    "personal data as keyed hashes, manifest.json last, switched in atomically.",
)
def bi_exports(settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
    manifest = dbt_project().manifest_path
    export = write_export(
        settings.published_dir,
        settings.warehouse.parent,
        ExportSpec(),
        personal_columns(manifest),
        settings.masking_key(),
        settings.duckdb_config,
        identifier_columns(manifest),
    )
    tables = export.manifest["tables"]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(export.path)),
            "version": export.manifest["version"],
            "dagster/row_count": sum(v["rows"] for v in tables.values()),
            "tables": len(tables),
            "rows": dg.MetadataValue.json({t: v["rows"] for t, v in tables.items()}),
            "masked_columns": dg.MetadataValue.json(
                {t: v["masked_columns"] for t, v in tables.items() if v["masked_columns"]}
            ),
        }
    )
