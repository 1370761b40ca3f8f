"""The dbt layer's floor: the same models run as one plain DuckDB script, without dbt, Dagster,
tests or incremental logic, to show what the orchestration and modelling layers cost.

The script is not a second, hand-copied implementation of 1,400 lines of modelling logic (it would
drift from the models and no longer produce the same marts). It is dbt's own compiled SQL of every
model, in dependency order, each as one `CREATE VIEW` or `CREATE TABLE ... AS` with the model's
materialization (incremental facts as plain tables), in one DuckDB connection. The two identity
steps run as the same Python code the identity assets call (identity/duckdb.py), from scratch. The
marts it makes are checked equal, table by table and column by column, to the marts the pipeline
built.
"""

from __future__ import annotations

import graphlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from identity.duckdb import assign_customer_keys, match_profiles
from ingestion.sources import FUZZY_MATCH_THRESHOLD
from orchestration.identity_assets import KEYS_INPUTS, PAIRS_INPUTS
from orchestration.settings import DBT_EXECUTABLE

ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = ROOT / "dbt_project"
BUILT_SCHEMAS = ("staging", "intermediate", "marts")
# The identity steps (dbt's source `identity`) and the models they read.
IDENTITY_INPUTS = {"int_profiles_matched": PAIRS_INPUTS, "int_customer_keys_assigned": KEYS_INPUTS}


@dataclass(frozen=True)
class Model:
    name: str
    schema: str
    materialized: str
    language: str  # sql, or python: an identity step
    code: str  # compiled SQL, or the identity step's module


def prepare(built: Path, work: Path) -> Path:
    """A copy of the built warehouse holding only its inputs (raw tables, channel views, seeds).

    The copy keeps the file name: compiled SQL names the catalog after it."""
    work.mkdir(parents=True, exist_ok=True)
    copy = work / built.name
    shutil.copyfile(built, copy)
    with duckdb.connect(str(copy)) as con:
        seeds = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'staging'").fetchall()
        } & _seed_names()
        for schema in BUILT_SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            for name, kind in con.execute(
                "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE schema_name = $1 UNION ALL "
                "SELECT view_name, 'VIEW' FROM duckdb_views() WHERE schema_name = $1 AND NOT internal",
                [schema],
            ).fetchall():
                if name not in seeds:
                    con.execute(f'DROP {kind} IF EXISTS {schema}."{name}" CASCADE')
    return copy


def _seed_names() -> set[str]:
    return {p.stem for p in (DBT_DIR / "seeds").glob("*.csv")}


def compile_models(warehouse: Path, work: Path, manifests: list[Path] | None = None) -> list[Model]:
    """dbt's compiled code of every model against `warehouse` (where no model exists yet, so
    incremental models compile to their full select), with the identity steps, in dependency order.

    `manifests`: the manifest.json of each dbt step of the build that made the warehouse from
    nothing, which hold that same compiled code (dbt writes it after each step of a --full-refresh
    build, for the models the step built); without them, dbt compiles the project (a full parse:
    about 4 s of the benchmark, not in the floor's time)."""
    if not manifests:
        target = work / "target"
        env = {**os.environ, "CRM_WAREHOUSE": str(warehouse)}
        subprocess.run(
            [
                DBT_EXECUTABLE,
                "compile",
                "--quiet",
                "--project-dir",
                str(DBT_DIR),
                "--profiles-dir",
                str(DBT_DIR),
                "--target-path",
                str(target),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        manifests = [target / "manifest.json"]
    steps = [json.loads(m.read_text())["nodes"] for m in manifests]
    models = {uid: n for uid, n in steps[-1].items() if n["resource_type"] == "model"}
    compiled = {uid: code for nodes in steps for uid, n in nodes.items() if (code := n.get("compiled_code"))}
    by_name = {n["name"]: uid for uid, n in models.items()}
    identity = {f"source.crm_warehouse.identity.{name}": name for name in IDENTITY_INPUTS}
    order = graphlib.TopologicalSorter(
        {
            **{uid: [d for d in n["depends_on"]["nodes"] if d in models or d in identity] for uid, n in models.items()},
            **{uid: [by_name[m] for _, m in IDENTITY_INPUTS[name]] for uid, name in identity.items()},
        }
    ).static_order()
    return [
        Model(identity[uid], "intermediate", "table", "python", "identity/duckdb.py")
        if uid in identity
        else Model(
            models[uid]["name"], models[uid]["schema"], models[uid]["config"]["materialized"], "sql", compiled[uid]
        )
        for uid in order
    ]


def _create(m: Model, catalog: str, select: str) -> str:
    """The statement building model `m` from `select`: a view, or a table (incremental facts too)."""
    kind = "VIEW" if m.materialized == "view" else "TABLE"
    return f'CREATE OR REPLACE {kind} "{catalog}"."{m.schema}"."{m.name}" AS\n{select.strip()}'


def script(models: list[Model], catalog: str) -> str:
    """The SQL part of the floor as one script (the identity steps appear as comments where they run)."""
    parts = [f"CREATE SCHEMA IF NOT EXISTS {s};" for s in BUILT_SCHEMAS]
    for m in models:
        if m.language == "python":
            parts.append(f"-- {m.schema}.{m.name}: identity step, {m.code}, run as the pipeline runs it")
        else:
            parts.append(_create(m, catalog, m.code) + ";")
    return "\n\n".join(parts) + "\n"


def run(warehouse: Path, models: list[Model]) -> float:
    """Build every model into `warehouse` (prepared: its schemas exist); returns the seconds it took."""
    catalog = warehouse.stem
    start = time.perf_counter()
    with duckdb.connect(str(warehouse)) as con:
        con.execute("SET enable_progress_bar = false")
        limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        for m in models:
            if m.name == "int_profiles_matched":
                match_profiles(con, FUZZY_MATCH_THRESHOLD, full_refresh=True)
            elif m.name == "int_customer_keys_assigned":
                assign_customer_keys(con, limit.replace(" ", ""), full_refresh=True)
            else:
                con.execute(_create(m, catalog, m.code))
    return time.perf_counter() - start


def compare_marts(floor: Path, built: Path) -> dict[str, dict]:
    """Per mart: row counts in both, and the columns whose checksums differ."""
    out: dict[str, dict] = {}
    with duckdb.connect(str(floor), read_only=True) as con:
        con.execute(f"ATTACH '{str(built).replace(chr(39), chr(39) * 2)}' AS built (READ_ONLY)")
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'marts' "
                "ORDER BY 1"
            ).fetchall()
        ]
        for table in tables:
            columns = [r[0] for r in con.execute(f"DESCRIBE marts.{table}").fetchall()]
            sums = ", ".join(f'sum(hash("{c}"))' for c in columns)
            ours = con.execute(f"SELECT count(*), {sums} FROM marts.{table}").fetchall()[0]
            theirs = con.execute(f"SELECT count(*), {sums} FROM built.marts.{table}").fetchall()[0]
            out[table] = {
                "rows": ours[0],
                "built_rows": theirs[0],
                "columns_differing": [c for c, a, b in zip(columns, ours[1:], theirs[1:]) if a != b],
            }
    return out


def floor_vs_built(built: Path, work: Path, manifests: list[Path] | None = None) -> dict:
    """Prepare, compile (or take `manifests`' compiled code: see compile_models), run and compare;
    the figures for the benchmark's report."""
    if work.exists():
        shutil.rmtree(work)
    copy = prepare(built, work)
    models = compile_models(copy, work, manifests)
    (work / "floor.sql").write_text(script(models, copy.stem))
    seconds = run(copy, models)
    marts = compare_marts(copy, built)
    equal = all(m["rows"] == m["built_rows"] and not m["columns_differing"] for m in marts.values())
    return {
        "floor_seconds": seconds,
        "models": len(models),
        "marts": marts,
        "equal": equal,
        "script": str(work / "floor.sql"),
    }
