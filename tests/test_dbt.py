"""The dbt project stands alone: `dbt build` with the repo's profile, on a warehouse the pipeline loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from orchestration.dbt_assets import DBT_DIR
from orchestration.run import run_pipeline


def test_dbt_build_runs_standalone_with_exact_schema_names(sample_copy: tuple[Path, Path], tmp_path: Path) -> None:
    warehouse = tmp_path / "crm.duckdb"
    run_pipeline(sample_copy[1], warehouse)
    dbt = Path(sys.executable).with_name("dbt")
    build = subprocess.run(
        [str(dbt), "build", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR), "--target-path", str(tmp_path / "target")],
        capture_output=True, text=True, env={**os.environ, "CRM_WAREHOUSE": str(warehouse)}, timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:]
    assert "1 unit test" in build.stdout  # the phone / email / name normalization unit test ran
    docs = subprocess.run(
        [str(dbt), "docs", "generate", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR), "--target-path", str(tmp_path / "target")],
        capture_output=True, text=True, env={**os.environ, "CRM_WAREHOUSE": str(warehouse)}, timeout=600,
    )
    assert docs.returncode == 0, docs.stdout[-3000:]
    assert (tmp_path / "target" / "catalog.json").exists()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        schemas = {r[0] for r in con.execute("SELECT DISTINCT table_schema FROM information_schema.tables").fetchall()}
    assert {"raw", "staging"} <= schemas and not any(s.startswith("main_") for s in schemas)
