"""Where this deployment's inputs and outputs are: decided here, from the environment, once.

CRM_SOURCES      sources file (default: the generated sample's, ingestion/examples/sample/sources.yml)
CRM_WAREHOUSE    DuckDB warehouse file (default: warehouse/crm.duckdb)
CRM_DUCKDB_MEMORY_LIMIT, CRM_DUCKDB_THREADS   DuckDB limits (default 4GB, all cores); DuckDB
                 spills to a temp folder beside the warehouse beyond the memory limit.
CRM_ML_CONFIG    YAML overriding the ML settings (ml/config.py); CRM_MODELS_DIR where ML artifacts
                 and cards go (default: models/)
DAGSTER_HOME     Dagster instance folder holding dagster.yaml (default: .dagster/, set up by `crm`)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = REPO_ROOT / "ingestion" / "examples" / "sample" / "sources.yml"
DEFAULT_WAREHOUSE = REPO_ROOT / "warehouse" / "crm.duckdb"
DEFAULT_SAMPLE_OUT = REPO_ROOT / "warehouse" / "sample"
DUCKDB_POOL = "duckdb_writer"  # every DuckDB writer runs in this pool; dagster.yaml limits it to 1


@dataclass(frozen=True)
class Environment:
    sources_file: Path
    warehouse: Path
    memory_limit: str
    threads: int

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
    )


def export(env: Environment) -> None:
    """Hand the decided paths and limits to subprocesses (dbt reads them in profiles.yml)."""
    os.environ["CRM_WAREHOUSE"] = str(env.warehouse)
    os.environ["CRM_DUCKDB_MEMORY_LIMIT"] = env.memory_limit


def ensure_dagster_home() -> Path:
    """Point DAGSTER_HOME at .dagster/ (git-ignored) with the repo's dagster.yaml, unless set."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster")))
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    source = REPO_ROOT / "dagster.yaml"
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    return home
