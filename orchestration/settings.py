"""This deployment's settings, decided once: `Settings.load` reads CLI options, then the environment,
then defaults; the runner, the Dagster assets (as the `settings` resource) and the libraries get the
object, never the environment. `hand_to_processes` is the one place that writes the environment,
for the programs that read only it: dbt's profile (profiles.yml) and Dagster's own switches.

CRM_SOURCES      sources file (default: the generated sample's, ingestion/examples/sample/sources.yml)
CRM_WAREHOUSE    DuckDB warehouse file (default: warehouse/crm.duckdb)
CRM_DUCKDB_MEMORY_LIMIT, CRM_DUCKDB_THREADS   DuckDB limits (default 4GB, all cores); DuckDB
                 spills to a temp folder beside the warehouse beyond the memory limit.
CRM_DBT_THREADS  models dbt builds at once (default 2). Concurrent models share DuckDB's cores and
                 memory limit: 2 suits daily runs and small warehouses, whose many short models and
                 tests then overlap.
CRM_DBT_FULL_BUILD_THREADS  the same for a build from nothing (the first run, a --full-refresh;
                 default CRM_DBT_THREADS): 1 suits warehouses whose full build spills (a million customers).
CRM_KEEP_VERSIONS  published warehouse versions kept (default 3; see serving/publish.py)
CRM_MASKING_KEY  the deployment's secret for keyed hashes of personal data in exports and the
                 erasure suppression list; without it one is created in warehouse/governance/
CRM_ML_CONFIG    YAML overriding the ML settings (ml/config.py); CRM_MODELS_DIR where ML artifacts
                 and cards go (default: models/)
CRM_ENGINE       where dbt builds the warehouse: duckdb (default) or spark (docs/spark.md)
CRM_SPARK_DIR    the Spark engine's folder: the raw layer as Parquet, Spark's tables and its
                 metastore (default: spark/ beside the warehouse file)
CRM_SPARK_MASTER, CRM_SPARK_DRIVER_MEMORY   Spark's master (default local[*]) and driver memory (4g)
DAGSTER_HOME     Dagster instance folder holding dagster.yaml (default: .dagster/, set up by `crm`)
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ml.run_context import DEFAULT_MODELS_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = REPO_ROOT / "ingestion" / "examples" / "sample" / "sources.yml"
DEFAULT_WAREHOUSE = REPO_ROOT / "warehouse" / "crm.duckdb"
DEFAULT_SAMPLE_OUT = REPO_ROOT / "warehouse" / "sample"
# The default sample (`crm generate`, `make demo`): two years to 2025-12-31, so that the sales
# forecasts see two yearly cycles (a seasonal model and the seasonal-naive baseline need them).
SAMPLE_START = dt.date(2024, 1, 1)
SAMPLE_DAYS = 731
# Dagster's switches for partition-range runs, which Dagster reads from the environment only.
# One "materialization planned" event per asset for a partition-range run, not one per day: a
# year's ingestion planned thousands of events, SQLite writes before the first step. The price
# (Dagster's note): a failed range run does not mark its partitions failed in the UI; the step's
# `failed_partitions` metadata and the run's failure still say which days failed.
# The range's materializations handed to the event log as batches of up to 1,000, which
# orchestration/_compat/dagster_event_log.py (configured in dagster.yaml) writes in one transaction each.
DAGSTER_FLAGS = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true", "DAGSTER_EVENT_BATCH_SIZE": "1000"}
DUCKDB_POOL = "duckdb_writer"  # every DuckDB writer runs in this pool; dagster.yaml limits it to 1
SPARK_POOL = "spark_session"  # every step with a Spark session (Derby allows one JVM); limited to 1 too
MASKING_KEY = "CRM_MASKING_KEY"
ENGINES = ("duckdb", "spark")


def _environment_dbt() -> str:
    """The dbt of this Python's environment (the locked one), so `.venv/bin/crm run` works without
    the environment's bin/ on PATH; a dbt on PATH only where this environment has none."""
    dbt = Path(sys.executable).with_name("dbt")
    return str(dbt) if dbt.exists() else "dbt"


DBT_EXECUTABLE = _environment_dbt()


@dataclass(frozen=True)
class Settings:
    sources_file: Path
    warehouse: Path
    memory_limit: str = "4GB"
    threads: int = 2
    keep_versions: int = 3
    dbt_threads: int = 2
    dbt_full_build_threads: int = 2
    models_dir: Path = DEFAULT_MODELS_DIR
    ml_config: Path | None = None
    dagster_home: Path = REPO_ROOT / ".dagster"
    masking_key_given: str | None = field(default=None, repr=False)  # $CRM_MASKING_KEY, when set
    engine: str = "duckdb"
    spark_dir_given: Path | None = None
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r} (CRM_ENGINE or --engine): choose one of {', '.join(ENGINES)}")

    @classmethod
    def load(
        cls,
        sources: Path | None = None,
        warehouse: Path | None = None,
        environ: Mapping[str, str] = os.environ,
        engine: str | None = None,
    ) -> Settings:
        """Options given on the command line win over the environment, which wins over defaults."""
        ml_config = environ.get("CRM_ML_CONFIG")
        return cls(
            sources_file=Path(sources or environ.get("CRM_SOURCES", DEFAULT_SOURCES)).resolve(),
            warehouse=Path(warehouse or environ.get("CRM_WAREHOUSE", DEFAULT_WAREHOUSE)).resolve(),
            memory_limit=environ.get("CRM_DUCKDB_MEMORY_LIMIT", "4GB"),
            threads=int(environ.get("CRM_DUCKDB_THREADS", os.cpu_count() or 2)),
            keep_versions=int(environ.get("CRM_KEEP_VERSIONS", 3)),
            dbt_threads=int(environ.get("CRM_DBT_THREADS", 2)),
            dbt_full_build_threads=int(environ.get("CRM_DBT_FULL_BUILD_THREADS", environ.get("CRM_DBT_THREADS", 2))),
            models_dir=Path(environ.get("CRM_MODELS_DIR", DEFAULT_MODELS_DIR)).resolve(),
            ml_config=Path(ml_config).resolve() if ml_config else None,
            dagster_home=Path(environ.get("DAGSTER_HOME", REPO_ROOT / ".dagster")).resolve(),
            masking_key_given=environ.get(MASKING_KEY) or None,
            engine=engine or environ.get("CRM_ENGINE", "duckdb"),
            spark_dir_given=Path(environ["CRM_SPARK_DIR"]).resolve() if environ.get("CRM_SPARK_DIR") else None,
            spark_master=environ.get("CRM_SPARK_MASTER", "local[*]"),
            spark_driver_memory=environ.get("CRM_SPARK_DRIVER_MEMORY", "4g"),
        )

    @property
    def spark_dir(self) -> Path:
        """The Spark engine's files: lake/ (raw as Parquet), tables/ (Spark's warehouse), the metastore."""
        return self.spark_dir_given or self.warehouse.parent / "spark"

    @property
    def published_dir(self) -> Path:
        """Read-only versions analysts and exports use (serving/publish.py)."""
        return self.warehouse.parent / "published"

    @property
    def exports_dir(self) -> Path:
        """The BI export of the current version (serving/export.py)."""
        return self.warehouse.parent / "exports"

    @property
    def reports_dir(self) -> Path:
        """The insight reports, one folder per as-of date (serving/report/)."""
        return self.warehouse.parent / "reports"

    @property
    def governance_dir(self) -> Path:
        """Erasure audit log, suppression list and the generated masking key (serving/erasure.py)."""
        return self.warehouse.parent / "governance"

    @property
    def duckdb_config(self) -> dict[str, object]:
        return {
            "memory_limit": self.memory_limit,
            "threads": self.threads,
            "temp_directory": str(self.warehouse.parent / ".duckdb_tmp"),
        }

    def masking_key(self) -> str:
        """$CRM_MASKING_KEY, else this deployment's random key kept in governance/masking.key (mode 600),
        created on first use. It must not change once exports or erasures used it (their hashes depend on it)."""
        if self.masking_key_given:
            return self.masking_key_given
        path = self.governance_dir / "masking.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            try:
                os.link(staged, path)  # whole or not at all; a key another process made first stays
            except FileExistsError:
                pass
            finally:
                staged.unlink()
        return path.read_text().strip()


def hand_to_processes(settings: Settings) -> None:
    """Write the settings that other programs read from the environment only: dbt's profile
    (profiles.yml reads the warehouse path and limits) and Dagster (its instance folder and
    switches, kept if the user set them). The only place that writes os.environ."""
    os.environ["CRM_WAREHOUSE"] = str(settings.warehouse)
    os.environ["CRM_DUCKDB_MEMORY_LIMIT"] = settings.memory_limit
    os.environ["CRM_DBT_THREADS"] = str(settings.dbt_threads)
    os.environ["CRM_SPARK_DIR"] = str(settings.spark_dir)
    os.environ["CRM_SPARK_MASTER"] = settings.spark_master
    os.environ["CRM_SPARK_DRIVER_MEMORY"] = settings.spark_driver_memory
    # dbt writes its dbt.log (in each invocation's target folder) at debug level unless told: every
    # statement of every node, megabytes a run. DBT_LOG_LEVEL_FILE=debug brings the full log back.
    os.environ.setdefault("DBT_LOG_LEVEL_FILE", "info")
    # Arrow's default pool (mimalloc) keeps freed memory: after the identity models' pandas frames,
    # dbt's process would hold it for the rest of the build beside DuckDB's whole limit.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system":  # this process may have made its pool already
        import pyarrow

        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    for name, value in DAGSTER_FLAGS.items():
        os.environ.setdefault(name, value)
    _ensure_dagster_home(settings.dagster_home)


def _ensure_dagster_home(home: Path) -> None:
    """The instance folder (.dagster/ by default, git-ignored) with the repo's dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    source = REPO_ROOT / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
