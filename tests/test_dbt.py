"""The dbt project stands alone (`dbt build` with the repo's profile), its incremental facts
equal a full refresh after the warehouse grew run by run, and the benchmark's SQL floor of the
models builds the same marts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

from orchestration.dbt_assets import DBT_DIR
from tests.conftest import Grown

INCREMENTAL = ["marts.fct_order_lines", "marts.fct_web_sessions", "marts.fct_interactions",
               "intermediate.int_web_events_sessionized"]


def dbt(*args: str, warehouse: Path, target: Path) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [str(Path(sys.executable).with_name("dbt")), *args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
         "--target-path", str(target)],
        capture_output=True, text=True, env={**os.environ, "CRM_WAREHOUSE": str(warehouse)}, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    return run


def test_dbt_build_standalone_and_full_refresh_equals_incremental(grown: Grown, tmp_path: Path) -> None:
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(grown.warehouse, warehouse)
    build = dbt("build", "--full-refresh", warehouse=warehouse, target=tmp_path / "target")
    assert "4 unit tests" in build.stdout  # phones/emails/names, latest delivery, identity rules, sessionization

    # Built run by run (midway, then the rest: new dates, late rows, re-keyed customers) = built at once.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute(f"ATTACH '{grown.warehouse}' AS grown (READ_ONLY)").fetchall()
        for table in INCREMENTAL:
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            only_full = con.execute(f"SELECT count(*) FROM (FROM {table} EXCEPT ALL FROM grown.{table})").fetchall()[0][0]
            only_incremental = con.execute(f"SELECT count(*) FROM (FROM grown.{table} EXCEPT ALL FROM {table})").fetchall()[0][0]
            assert rows > 0 and (only_full, only_incremental) == (0, 0), (table, rows, only_full, only_incremental)
        schemas = {r[0] for r in con.execute("SELECT DISTINCT table_schema FROM information_schema.tables").fetchall()}
    assert {"raw", "staging", "intermediate", "marts"} <= schemas and not any(s.startswith("main_") for s in schemas)

    dbt("docs", "generate", warehouse=warehouse, target=tmp_path / "target")
    assert (tmp_path / "target" / "catalog.json").exists()


def test_the_benchmarks_sql_floor_builds_the_same_marts(grown: Grown, tmp_path: Path) -> None:
    """bench/floor.py: the models as one plain DuckDB script give the marts the pipeline built."""
    from bench.floor import floor_vs_built

    floor = floor_vs_built(grown.warehouse, tmp_path / "floor")
    assert floor["equal"], {t: m for t, m in floor["marts"].items() if m["columns_differing"] or m["rows"] != m["built_rows"]}
    assert len(floor["marts"]) == 12 and all(m["rows"] > 0 for m in floor["marts"].values())
    script = Path(floor["script"]).read_text()
    assert script.count("CREATE OR REPLACE TABLE") >= 12 and "{{" not in script  # compiled SQL, no Jinja left
