"""Shared fixtures: a small generated sample with its own sources file, and a Dagster home per test session."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import jinja2
import pytest
import yaml

from ingestion.generator import GeneratorConfig, MessRates, generate, sources_file_for
from orchestration.settings import REPO_ROOT, SAMPLE_DAYS, SAMPLE_START, Settings

SAMPLE_SOURCES = REPO_ROOT / "ingestion" / "examples" / "sample" / "sources.yml"
ONLINE_RETAIL_SOURCES = REPO_ROOT / "ingestion" / "examples" / "online_retail" / "sources.yml"


# Tests that use these fixtures run the whole pipeline (a minute or more each): `make test-fast`
# leaves them out, with every test marked `slow` by hand.
PIPELINE_FIXTURES = {"grown", "year", "deployment", "next_days", "daily_runs", "definitions", "con"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs of the tests land in a throw-away Dagster instance, not the developer's."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def model_metrics(con: duckdb.DuckDBPyConnection, model: str, as_of: dt.date) -> dict[str, float]:
    """One ML table's `ml.model_metrics` as of a date, by metric name."""
    return dict(
        con.execute(
            "select metric, value from ml.model_metrics where model = ? and as_of_date = ?", [model, as_of]
        ).fetchall()
    )


def dbt_profile_rendered(output: str, section: str, env: Mapping[str, str]) -> dict[str, str]:
    """One section of an output of dbt's profiles.yml, rendered as dbt renders it in environment `env`."""
    profile = yaml.safe_load((REPO_ROOT / "dbt_project" / "profiles.yml").read_text())
    return {
        key: jinja2.Template(str(value)).render(env_var=lambda name, default=None: env.get(name, default))
        for key, value in profile["crm_warehouse"]["outputs"][output][section].items()
    }


def repoint_lineage(warehouse: Path, old: Path, new: Path) -> None:
    """The loader remembers the files it read by path: point a copied warehouse's lineage, and the
    staging tables' copy of it, at the copied extracts."""
    with duckdb.connect(str(warehouse)) as con:
        for schema, table, column in con.execute(
            "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns AS c "
            "INNER JOIN information_schema.tables AS t USING (table_schema, table_name) "
            "WHERE t.table_type = 'BASE TABLE' AND ((c.table_schema = 'raw' AND c.column_name IN ('_file', 'file')) "
            "OR (c.table_schema = 'staging' AND c.column_name = 'source_file'))"
        ).fetchall():
            con.execute(f"UPDATE {schema}.{table} SET {column} = replace({column}, ?, ?)", [str(old), str(new)])


def sources_for(extracts: Path, dest: Path, start: dt.date) -> Path:
    """A copy of the sample sources file whose paths point at `extracts` (a generator's output,
    whose first day is `start`)."""
    return sources_file_for(extracts, dest, start)


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> GeneratorConfig:
    """1,500 persons over 45 days: every channel and every kind of planted mess, in seconds."""
    cfg = GeneratorConfig(out=tmp_path_factory.mktemp("sample"), customers=1500, days=45, seed=7)
    generate(cfg)
    return cfg


@pytest.fixture
def sample_copy(sample: GeneratorConfig, tmp_path: Path) -> tuple[Path, Path]:
    """(extracts folder, sources file) on a private copy of the sample, for tests that change files."""
    extracts = tmp_path / "extracts"
    shutil.copytree(sample.extracts, extracts)  # copy2 keeps delivery times (mtimes)
    shutil.copytree(sample.truth, tmp_path / "truth")
    return extracts, sources_for(extracts, tmp_path / "sources.yml", sample.start)


@pytest.fixture(scope="session", autouse=True)
def dbt_manifest() -> Path:
    """The dbt manifest, parsed as `make setup` does (tests may run without it)."""
    from orchestration.dbt_assets import prepare_manifest

    return prepare_manifest()


@dataclass(frozen=True)
class Grown:
    """The sample loaded in two runs, as a deployment grows: its first 20 days, then the rest."""

    warehouse: Path
    midway: Path  # a copy of the warehouse after the first run
    sources: Path
    identity_metadata: dict


@pytest.fixture(scope="session")
def grown(sample: GeneratorConfig, tmp_path_factory: pytest.TempPathFactory) -> Grown:
    from orchestration.run import run_pipeline

    root = tmp_path_factory.mktemp("grown")
    shutil.copytree(sample.extracts, root / "extracts")
    shutil.copytree(sample.truth, root / "truth")
    sources = sources_for(root / "extracts", root / "sources.yml", sample.start)
    warehouse = root / "crm.duckdb"
    run_pipeline(Settings.load(sources, warehouse), as_of=sample.start + dt.timedelta(days=20))
    shutil.copyfile(warehouse, root / "midway.duckdb")
    summary = run_pipeline(Settings.load(sources, warehouse))  # the rest arrives: incremental marts, identity merges
    assert all(summary.checks.values()), {k: v for k, v in summary.checks.items() if not v}
    metadata = summary.materialized["marts/customer_identity_map"]
    return Grown(warehouse, root / "midway.duckdb", sources, metadata)


@dataclass(frozen=True)
class Year:
    cfg: GeneratorConfig
    warehouse: Path
    as_of_first_run: dt.date


@pytest.fixture(scope="session")
def year(tmp_path_factory: pytest.TempPathFactory) -> Year:
    """3,000 persons over a year, loaded as of day 300 (ML tables as of then), then to its end.

    As of D means events dated D or earlier: a receipt synced late or a price corrected later still
    belongs to its own day and rightly moves the past, and so does later evidence on who is who: a
    contact that later data shows is shared (the guard splits customers of before D), or a
    re-registration whose fuzzy score moves with the grown registry. This sample plants none of
    them, so that every row the second run adds is dated after D and identities stay put.
    """
    mess = replace(
        MessRates(),
        store_late_receipt=0.0,
        store_corrected_file=0.0,
        placeholder_phone=0.0,
        placeholder_email=0.0,
        household_landline=0.0,
        shop_phone_receipt=0.0,
        duplicate_registration=0.0,
    )
    cfg = GeneratorConfig(out=tmp_path_factory.mktemp("year"), customers=3000, days=365, seed=5, mess=mess)
    generate(cfg)
    sources = sources_for(cfg.extracts, cfg.out / "sources.yml", cfg.start)
    warehouse = cfg.out / "crm.duckdb"
    first = cfg.start + dt.timedelta(days=299)
    from orchestration.run import run_pipeline

    run_pipeline(Settings.load(sources, warehouse), as_of=first)
    run_pipeline(Settings.load(sources, warehouse))
    return Year(cfg, warehouse, first)


@dataclass(frozen=True)
class Demo:
    """The sample `crm generate` writes by default (10,000 persons over a year, seed 42), built as
    `make demo` builds it: the sample the issues' quality bars speak of."""

    cfg: GeneratorConfig
    warehouse: Path


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    from orchestration.run import run_pipeline

    cfg = GeneratorConfig(out=tmp_path_factory.mktemp("demo"), days=SAMPLE_DAYS, start=SAMPLE_START)
    generate(cfg)
    sources = sources_for(cfg.extracts, cfg.out / "sources.yml", cfg.start)
    warehouse = cfg.out / "crm.duckdb"
    run_pipeline(Settings.load(sources, warehouse))
    return Demo(cfg, warehouse)
