"""The dbt project as Dagster assets: each model an asset keyed [schema, model] (group `dbt`), its
dbt tests as asset checks, and the raw channel views as its upstream sources.

dbt builds in three steps around the identity assets (orchestration/identity_assets.py), whose
Python writes the tables the models read as the source `identity`:
  1. staging and every model that needs no identity (but dim_product)
  2. after int_profiles_matched (the fuzzy pairs): the identifier models
  3. after int_customer_keys_assigned (the keys): the customer models and the marts, and dim_product
On the Spark engine the same steps build on Spark (target `spark`), keyed ["spark", schema, model].
On DuckDB dbt runs in Dagster's process (_compat/dagster_dbt.py: InProcessDbtBuild), on Spark as
dagster-dbt's subprocess.
"""

import contextlib
import functools
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_duckdb import DuckDBResource

from orchestration._compat.dagster_dbt import InProcessDbtBuild, InstalledDbtCli
from orchestration.identity_report import identity_report
from orchestration.settings import DBT_EXECUTABLE, DUCKDB_POOL, REPO_ROOT, SPARK_POOL, Settings

DBT_DIR = REPO_ROOT / "dbt_project"
IDENTITY_MAP = dg.AssetKey(["marts", "customer_identity_map"])
# The three dbt steps around the identity assets, as dbt selections (select, exclude). dim_product
# needs no identity but waits for the sessionized events' tests, last in step 1; in step 3 it builds
# beside the identity map, which the other models there wait for.
STEPS = {
    "dbt_before_identity": ("fqn:*", "source:identity+ dim_product"),
    "dbt_identifiers": ("source:identity.int_profiles_matched+", "source:identity.int_customer_keys_assigned+"),
    "dbt_customers": ("source:identity.int_customer_keys_assigned+ dim_product", ""),
}


@functools.cache
def dbt_project(engine: str = "duckdb") -> DbtProject:
    if engine == "spark":
        return DbtProject(
            project_dir=DBT_DIR, profiles_dir=DBT_DIR, target="spark", target_path=DBT_DIR / "target" / "spark"
        )
    return DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)


def prepare_manifest(project: DbtProject | None = None) -> Path:
    """Parse the project (for its target: DuckDB's unless another project is given) when its
    manifest is missing or older than a model, macro or YAML file.

    A set-up step (`make setup`, `crm run`), never done at import.
    """
    project = project or dbt_project()
    manifest = project.manifest_path
    sources = [p for d in ("models", "macros", "tests", "seeds") for p in (DBT_DIR / d).rglob("*") if p.is_file()]
    sources += [DBT_DIR / "dbt_project.yml", DBT_DIR / "profiles.yml"]
    if not manifest.exists() or max(p.stat().st_mtime for p in sources) > manifest.stat().st_mtime:
        DbtCliResource(project_dir=project, target=project.target, dbt_executable=DBT_EXECUTABLE).cli(
            ["parse", "--quiet"], target_path=project.target_path
        ).wait()
    return manifest


class WarehouseTranslator(DagsterDbtTranslator):
    """Asset keys equal the physical table, [schema, name], for models and sources alike."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return None if dbt_resource_props["resource_type"] == "source" else "dbt"


class SparkTranslator(WarehouseTranslator):
    """Spark's tables under ["spark", schema, table]; the raw sources are the lake (ingestion/lake.py)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source" and dbt_resource_props["source_name"] == "raw":
            return dg.AssetKey(["lake", "raw", dbt_resource_props["name"]])
        return dg.AssetKey(["spark", *super().get_asset_key(dbt_resource_props).path])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return None if dbt_resource_props["resource_type"] == "source" else "spark"


class DbtBuildConfig(dg.Config):
    """Launch-time options of the dbt build (the launchpad shows them)."""

    full_refresh: bool = False  # rebuild incremental models from scratch (after a model's columns change)
    # dbt's unit tests check model logic on fixed inputs: dbt Labs recommends running them in
    # development and CI (`make test` does, with a standalone `dbt build`), not in every production
    # build, where they re-check the same code.
    unit_tests: bool = False


def dbt_build_args(config: DbtBuildConfig, dbt_vars: str | None, threads: int | None = None) -> list[str]:
    return [
        "build",
        *(["--full-refresh"] if config.full_refresh else []),
        *(["--threads", str(threads)] if threads else []),
        *([] if config.unit_tests else ["--exclude-resource-type", "unit_test"]),
        *(["--vars", dbt_vars] if dbt_vars else []),
    ]


def dbt_steps(
    engine: str, identity_truth: Path | None = None, dbt_vars: str | None = None
) -> list[dg.AssetsDefinition]:
    """The three dbt steps (STEPS) for the engine's target. On DuckDB the identity map's
    materialization carries the identity figures (on Spark, its copy does). dbt_vars: the sources
    file's settings of dbt vars, as JSON (`dbt build --vars`)."""
    project = dbt_project(engine)
    if not project.manifest_path.exists():
        raise FileNotFoundError(f"{project.manifest_path} is missing: run `make setup` (it parses the dbt project)")
    return [_dbt_step(name, engine, identity_truth, dbt_vars) for name in STEPS]


def _dbt_step(name: str, engine: str, identity_truth: Path | None, dbt_vars: str | None) -> dg.AssetsDefinition:
    select, exclude = STEPS[name]
    project, on_duckdb = dbt_project(engine), engine == "duckdb"

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        select=select,
        exclude=exclude or None,
        dagster_dbt_translator=WarehouseTranslator() if on_duckdb else SparkTranslator(),
        pool=DUCKDB_POOL if on_duckdb else SPARK_POOL,
        name=name,
    )
    def _step(
        context: dg.AssetExecutionContext,
        config: DbtBuildConfig,
        dbt: DbtCliResource,
        warehouse: DuckDBResource,
        settings: dg.ResourceParam[Settings],
    ):
        state = parse_state(Path(warehouse.database)) if on_duckdb else project.target_path / PARTIAL_PARSE
        target = invocation_target_path(context.run.run_id, name)
        seed_parse_state(target, state)
        threads = build_threads(context, config, warehouse, settings) if on_duckdb else None
        args = dbt_build_args(config, dbt_vars, threads)
        invocation = (
            InProcessDbtBuild(args, dbt, context, target)
            if on_duckdb
            else dbt.cli(args, context=context, raise_on_error=False, target_path=target)
        )
        # From the identity map on, events wait until dbt has released the warehouse file (and
        # keep their order: Dagster wants a multi-asset's outputs in dependency order).
        held: list = []
        for event in invocation.stream():
            if held or _asset_key(context, event) == IDENTITY_MAP:
                held.append(event)
            else:
                yield event
        yield from _with_identity_report(context, held, warehouse, identity_truth)
        if on_duckdb:
            _keep_parse_state(invocation.target_path, state)
        prune_invocation_targets(invocation.target_path, name)
        if not invocation.is_successful():
            error = invocation.get_error()
            failures = _stored_test_failures(invocation, warehouse) if on_duckdb else ""
            if failures:
                raise dg.Failure(description=f"{error}\n{failures}") from error
            raise error

    return _step


def build_threads(
    context: dg.AssetExecutionContext, config: DbtBuildConfig, warehouse: DuckDBResource, settings: Settings
) -> int:
    """dbt's threads for this step: the full-build count when it builds its models from nothing (a
    --full-refresh, or none of them exists yet: the first run), else the daily count. A full build's
    large models spill past DuckDB's memory limit when they run side by side; a day's are small."""
    if config.full_refresh:
        return settings.dbt_full_build_threads
    tables = [".".join(key.path) for key in context.selected_asset_keys if len(key.path) == 2]
    with warehouse.get_connection() as con, contextlib.closing(con):
        (built,) = con.execute(
            "select count(*) from information_schema.tables where table_schema || '.' || table_name = any(?)",
            [tables],
        ).fetchall()[0]
    return settings.dbt_threads if built else settings.dbt_full_build_threads


KEEP_INVOCATION_TARGETS = 5
PARTIAL_PARSE = "partial_parse.msgpack"


def prune_invocation_targets(current: Path, step: str) -> None:
    """dagster-dbt gives every invocation its own target folder (tens of MB of logs, manifest
    and compiled SQL); keep the newest few of a step's, for debugging, not one per run forever."""
    runs = sorted(current.parent.glob(f"{step}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in runs[KEEP_INVOCATION_TARGETS:]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


def invocation_target_path(run_id: str, step: str) -> Path:
    """A new target folder for this build, named after the run (as dagster-dbt names its own), so that
    its parse state can be seeded before dbt starts and the folder found again after."""
    return DBT_DIR / "target" / f"{step}-{run_id[:7]}-{uuid.uuid4().hex[:7]}"


def invocation_targets(run_id: str) -> list[Path]:
    """The target folders of a run's dbt steps, in step order, while kept."""
    return [t for step in STEPS for t in (DBT_DIR / "target").glob(f"{step}-{run_id[:7]}-*")]


# Small files. The test suite alone makes 8 deployments a run; a real deployment's state should
# outlive a few of those.
KEEP_PARSE_STATES = 32


def parse_state(warehouse: Path) -> Path:
    """Where dbt's parse state of the deployment building `warehouse` is kept between its runs.

    dbt reuses a saved parse only for the profile that made it, and the profile holds the warehouse
    path. dagster-dbt seeds every invocation with the project's one target/partial_parse.msgpack, so
    a run after another deployment's (the tests, the demo, the benchmark) parsed the whole project
    again. One state per warehouse path lets each deployment's next run, a full rebuild too,
    parse only the files that changed (dbt checks each file's hash, and the profile, first)."""
    key = hashlib.sha256(str(warehouse.resolve()).encode()).hexdigest()[:16]
    return DBT_DIR / "target" / "parse_states" / f"{key}.msgpack"


def seed_parse_state(target: Path, state: Path) -> None:
    """Put the deployment's parse state, if it has one, in the invocation's target folder before
    dbt starts (dagster-dbt then leaves it, rather than copying in the project's)."""
    if state.exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(state, target / PARTIAL_PARSE)


def _keep_parse_state(invocation: Path, state: Path) -> None:
    """Save the invocation's parse state as its deployment's; keep the newest few deployments'.

    dbt leaves the seeded state as it was when nothing changed, so the invocation's state is this
    deployment's: the one seeded from its own, the project's when dbt found it fit this profile,
    or the one dbt wrote after parsing."""
    made = invocation / PARTIAL_PARSE
    if not made.exists():
        return
    state.parent.mkdir(parents=True, exist_ok=True)
    staged = state.with_name(f".{state.name}.{os.getpid()}")
    shutil.copyfile(made, staged)
    os.replace(staged, state)  # atomic: a concurrent run of this deployment reads the old or the new
    states = sorted(state.parent.glob("*.msgpack"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in states[KEEP_PARSE_STATES:]:
        old.unlink(missing_ok=True)


def _stored_test_failures(invocation, warehouse: DuckDBResource, limit: int = 5) -> str:
    """The first rows of each failed test that stores its failures (the giant-customer alarm lists
    the customer and its identifiers there): what dbt's own message leaves out."""
    lines = []
    for result in invocation.get_artifact("run_results.json").get("results", []):
        relation = result.get("relation_name")
        if result.get("status") != "fail" or not relation:
            continue
        with warehouse.get_connection() as con, contextlib.closing(con):
            cursor = con.execute(f"select * from {relation} limit {limit}")
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        lines.append(f"{result['unique_id']} failed; first rows of {relation}:")
        lines += ["  " + ", ".join(f"{n}={v}" for n, v in zip(names, row)) for row in rows]
    return "\n".join(lines)


def _asset_key(context: dg.AssetExecutionContext, event: object) -> dg.AssetKey | None:
    if isinstance(event, dg.Output):
        return context.asset_key_for_output(event.output_name)
    return getattr(event, "asset_key", None)


def _with_identity_report(
    context: dg.AssetExecutionContext, events: list, warehouse: DuckDBResource, truth: Path | None
) -> Iterator[object]:
    for event in events:
        if isinstance(event, dg.Output) and _asset_key(context, event) == IDENTITY_MAP:
            with warehouse.get_connection() as con, contextlib.closing(con):
                report = identity_report(con, truth)
            event = event.with_metadata({**event.metadata, **{f"identity/{k}": v for k, v in report.items()}})
        yield event


def dbt_resource(engine: str = "duckdb") -> DbtCliResource:
    project = dbt_project(engine)
    return InstalledDbtCli(
        project_dir=project, profiles_dir=str(DBT_DIR), target=project.target, dbt_executable=DBT_EXECUTABLE
    )
