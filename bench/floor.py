"""The dbt layer's floor: the same models run as one plain DuckDB script, without dbt, Dagster,
tests or incremental logic, to show what the orchestration and modelling layers cost.

The script is not a second, hand-copied implementation of 1,400 lines of modelling logic (it would
drift from the models and no longer produce the same marts). It is dbt's own compiled SQL of every
model, in dependency order, each as one `CREATE VIEW` or `CREATE TABLE ... AS` with the model's
materialization (incremental facts as plain tables), in one DuckDB connection. The two Python
identity models run as the same Python code, called directly. The marts it makes are checked
equal, table by table and column by column, to the marts the pipeline built.
"""

from __future__ import annotations

import graphlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from orchestration.settings import DBT_EXECUTABLE

ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = ROOT / "dbt_project"
BUILT_SCHEMAS = ("staging", "intermediate", "marts")


@dataclass(frozen=True)
class Model:
    name: str
    schema: str
    materialized: str
    language: str
    code: str  # compiled SQL, or the Python model's file
    config: dict


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


def compile_models(warehouse: Path, work: Path, manifest: Path | None = None) -> list[Model]:
    """dbt's compiled code of every model against `warehouse` (where no model exists yet, so
    incremental models compile to their full select), in dependency order.

    `manifest`: the manifest.json of the build that made the warehouse from nothing, which holds
    that same compiled code (dbt writes it after the build); without one, dbt compiles the project
    (a full parse: about 4 s of the benchmark)."""
    if manifest is None:
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
        manifest = target / "manifest.json"
    nodes = json.loads(manifest.read_text())["nodes"]
    models = {uid: n for uid, n in nodes.items() if n["resource_type"] == "model"}
    order = graphlib.TopologicalSorter(
        {uid: [d for d in n["depends_on"]["nodes"] if d in models] for uid, n in models.items()}
    ).static_order()
    return [
        Model(
            n["name"],
            n["schema"],
            n["config"]["materialized"],
            n["language"],
            n["compiled_code"] if n["language"] == "sql" else str(DBT_DIR / n["original_file_path"]),
            n["config"],
        )
        for n in (models[uid] for uid in order)
    ]


def _create(m: Model, catalog: str, select: str) -> str:
    """The statement building model `m` from `select`: a view, or a table (incremental facts too)."""
    kind = "VIEW" if m.materialized == "view" else "TABLE"
    return f'CREATE OR REPLACE {kind} "{catalog}"."{m.schema}"."{m.name}" AS\n{select.strip()}'


def script(models: list[Model], catalog: str) -> str:
    """The SQL part of the floor as one script (Python models appear as comments where they run)."""
    parts = [f"CREATE SCHEMA IF NOT EXISTS {s};" for s in BUILT_SCHEMAS]
    for m in models:
        if m.language == "python":
            parts.append(f"-- {m.schema}.{m.name}: Python model {Path(m.code).relative_to(ROOT)}, run as is")
        else:
            parts.append(_create(m, catalog, m.code) + ";")
    return "\n\n".join(parts) + "\n"


def run(warehouse: Path, models: list[Model]) -> float:
    """Build every model into `warehouse` (prepared: its schemas exist); returns the seconds it took."""
    catalog = warehouse.stem
    start = time.perf_counter()
    with duckdb.connect(str(warehouse)) as con:
        con.execute("SET enable_progress_bar = false")
        for m in models:
            if m.language == "python":
                frame = _load_python_model(m.code).model(_DbtShim(con, m, models), con)
                con.register("_python_model_frame", frame)
                con.execute(_create(m, catalog, "SELECT * FROM _python_model_frame"))
                con.unregister("_python_model_frame")
            else:
                con.execute(_create(m, catalog, m.code))
    return time.perf_counter() - start


def _load_python_model(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _DbtShim:
    """The part of dbt's Python-model API our models use: ref, config, this."""

    def __init__(self, con: duckdb.DuckDBPyConnection, model: Model, models: list[Model]) -> None:
        self._con, self._schemas = con, {m.name: m.schema for m in models}
        self.config = _Config(model.config)
        self.this = _This(model.schema, model.name)
        self.is_incremental = False  # the floor builds everything from scratch

    def ref(self, name: str) -> duckdb.DuckDBPyRelation:
        return self._con.sql(f'SELECT * FROM {self._schemas[name]}."{name}"')


@dataclass(frozen=True)
class _This:
    schema: str
    identifier: str

    def __str__(self) -> str:
        return f'{self.schema}."{self.identifier}"'


class _Config(dict):
    def __call__(self, **_: object) -> None:  # dbt.config(materialized=...) only declares
        return None


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


def floor_vs_built(built: Path, work: Path, manifest: Path | None = None) -> dict:
    """Prepare, compile (or take `manifest`'s compiled code: see compile_models), run and compare;
    the figures for the benchmark's report."""
    if work.exists():
        shutil.rmtree(work)
    copy = prepare(built, work)
    models = compile_models(copy, work, manifest)
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
