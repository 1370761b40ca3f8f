"""The dbt project as Dagster assets: each model an asset keyed [schema, model] (group `dbt`),
its dbt tests as asset checks, and the raw channel views as its upstream sources."""


import functools
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from orchestration.environment import DUCKDB_POOL, REPO_ROOT

DBT_DIR = REPO_ROOT / "dbt_project"


@functools.cache
def dbt_project() -> DbtProject:
    return DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)


def prepare_manifest() -> Path:
    """Parse the project when its manifest is missing or older than a model, macro or YAML file.

    A set-up step (`make setup`, `crm run`), never done at import.
    """
    project = dbt_project()
    manifest = project.manifest_path
    sources = [p for d in ("models", "macros") for p in (DBT_DIR / d).rglob("*") if p.is_file()]
    sources += [DBT_DIR / "dbt_project.yml", DBT_DIR / "profiles.yml"]
    if not manifest.exists() or max(p.stat().st_mtime for p in sources) > manifest.stat().st_mtime:
        DbtCliResource(project_dir=project).cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return manifest


class WarehouseTranslator(DagsterDbtTranslator):
    """Asset keys equal the physical table, [schema, name], for models and sources alike."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return None if dbt_resource_props["resource_type"] == "source" else "dbt"


@functools.cache
def dbt_models() -> dg.AssetsDefinition:
    project = dbt_project()
    if not project.manifest_path.exists():
        raise FileNotFoundError(f"{project.manifest_path} is missing: run `make setup` (it parses the dbt project)")

    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=WarehouseTranslator(),
                pool=DUCKDB_POOL, name="dbt_models")
    def _models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt.cli(["build"], context=context).stream()

    return _models


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project(), profiles_dir=str(DBT_DIR))
