"""Where this deployment's inputs and outputs are: decided here, from the environment, once.

CRM_SOURCES      sources file (default: the generated sample's, ingestion/examples/sample/sources.yml)
CRM_WAREHOUSE    DuckDB warehouse file (default: warehouse/crm.duckdb)
CRM_DUCKDB_MEMORY_LIMIT, CRM_DUCKDB_THREADS   DuckDB limits (default 4GB, all cores); DuckDB
                 spills to a temp folder beside the warehouse beyond the memory limit.
CRM_DBT_THREADS  models dbt builds at once (default 2). Concurrent models share DuckDB's cores and
                 memory limit: 1 suits warehouses that spill (a million customers), 2 small
                 ones, whose many short tests then overlap.
CRM_KEEP_VERSIONS  published warehouse versions kept (default 3; see serving/publish.py)
CRM_MASKING_KEY  the deployment's secret for keyed hashes of personal data in exports and the
                 erasure suppression list; `crm` creates one in warehouse/governance/ if unset
ARROW_DEFAULT_MEMORY_POOL   set to "system" unless set (see export)
DBT_LOG_LEVEL_FILE  level of dbt's dbt.log in each invocation's target folder (default info; see export)
CRM_ML_CONFIG    YAML overriding the ML settings (ml/config.py); CRM_MODELS_DIR where ML artifacts
                 and cards go (default: models/)
DAGSTER_HOME     Dagster instance folder holding dagster.yaml (default: .dagster/, set up by `crm`)
DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS, DAGSTER_EVENT_BATCH_SIZE   `crm` sets them unless
                 set: one planned event per asset of a partition-range run, and its materializations
                 written as a batch (see ensure_dagster_home)
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = REPO_ROOT / "ingestion" / "examples" / "sample" / "sources.yml"
DEFAULT_WAREHOUSE = REPO_ROOT / "warehouse" / "crm.duckdb"
DEFAULT_SAMPLE_OUT = REPO_ROOT / "warehouse" / "sample"
# Dagster's switches for partition-range runs, set for every process that runs or serves Dagster.
# One "materialization planned" event per asset for a partition-range run, not one per day: a
# year's ingestion planned thousands of events, SQLite writes before the first step. The price
# (Dagster's note): a failed range run does not mark its partitions failed in the UI; the step's
# `failed_partitions` metadata and the run's failure still say which days failed.
# The range's materializations handed to the event log as batches of up to 1,000, which
# orchestration/_compat/dagster_event_log.py (configured in dagster.yaml) writes in one transaction each.
DAGSTER_FLAGS = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true", "DAGSTER_EVENT_BATCH_SIZE": "1000"}
DUCKDB_POOL = "duckdb_writer"  # every DuckDB writer runs in this pool; dagster.yaml limits it to 1


def _environment_dbt() -> str:
    """The dbt of this Python's environment (the locked one), so `.venv/bin/crm run` works without
    the environment's bin/ on PATH; a dbt on PATH only where this environment has none."""
    dbt = Path(sys.executable).with_name("dbt")
    return str(dbt) if dbt.exists() else "dbt"


DBT_EXECUTABLE = _environment_dbt()


@dataclass(frozen=True)
class Environment:
    sources_file: Path
    warehouse: Path
    memory_limit: str
    threads: int
    keep_versions: int = 3
    dbt_threads: int = 2

    @property
    def published_dir(self) -> Path:
        """Read-only versions analysts and exports use (serving/publish.py)."""
        return self.warehouse.parent / "published"

    @property
    def exports_dir(self) -> Path:
        """The BI export of the current version (serving/export.py)."""
        return self.warehouse.parent / "exports"

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


def current() -> Environment:
    return Environment(
        sources_file=Path(os.environ.get("CRM_SOURCES", DEFAULT_SOURCES)).resolve(),
        warehouse=Path(os.environ.get("CRM_WAREHOUSE", DEFAULT_WAREHOUSE)).resolve(),
        memory_limit=os.environ.get("CRM_DUCKDB_MEMORY_LIMIT", "4GB"),
        threads=int(os.environ.get("CRM_DUCKDB_THREADS", os.cpu_count() or 2)),
        keep_versions=int(os.environ.get("CRM_KEEP_VERSIONS", 3)),
        dbt_threads=int(os.environ.get("CRM_DBT_THREADS", 2)),
    )


def export(env: Environment) -> None:
    """Hand the decided paths and limits to subprocesses (dbt reads them in profiles.yml)."""
    os.environ["CRM_WAREHOUSE"] = str(env.warehouse)
    os.environ["CRM_DUCKDB_MEMORY_LIMIT"] = env.memory_limit
    os.environ["CRM_DBT_THREADS"] = str(env.dbt_threads)
    # dbt writes its dbt.log (in each invocation's target folder) at debug level unless told: every
    # statement of every node, megabytes a run and a measurable part of each build.
    # The executed SQL stays in target/run/; DBT_LOG_LEVEL_FILE=debug brings the full log back.
    os.environ.setdefault("DBT_LOG_LEVEL_FILE", "info")
    # pandas 3 keeps strings in Arrow buffers, and Arrow's default pool (mimalloc) keeps freed
    # memory for reuse: after the identity models' frames, dbt's process held gigabytes more for
    # the rest of the build at a million customers, beside DuckDB's whole limit. The system
    # allocator returns large buffers when they are freed (and was no slower on pandas merges).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system":  # this process may have made its pool already
        import pyarrow

        pyarrow.set_memory_pool(pyarrow.system_memory_pool())


def ensure_dagster_home() -> Path:
    """Point DAGSTER_HOME at .dagster/ (git-ignored) with the repo's dagster.yaml, unless set."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster")))
    for name, value in DAGSTER_FLAGS.items():
        os.environ.setdefault(name, value)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    source = REPO_ROOT / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    return home


MASKING_KEY = "CRM_MASKING_KEY"


def ensure_masking_key(env: Environment) -> None:
    """Give this deployment a masking secret when the environment has none: a random key kept in
    governance/masking.key (mode 600), read into $CRM_MASKING_KEY. Set the variable to manage it
    yourself; it must not change once exports or erasures used it (their hashes depend on it)."""
    if os.environ.get(MASKING_KEY):
        return
    path = env.governance_dir / "masking.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.environ[MASKING_KEY] = path.read_text().strip()
