"""Where ML results go: `ml.<table>` rows per as-of date, `ml.model_metrics`, and artifacts with
their cards under models/<model>/<as_of>-<run>/ (git-ignored)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path

import duckdb
import joblib
import polars as pl

from ml.run_context import RunContext

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
LIBRARIES = ["duckdb", "polars", "numpy", "scikit-learn", "scipy"]


def _replace_rows(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, where: str, params: list) -> None:
    """Write `frame` into ml.<table> in one transaction, first deleting the rows `where` selects."""
    con.execute("create schema if not exists ml").fetchall()
    con.register("ml_frame", frame.to_arrow())
    try:
        con.execute("begin transaction").fetchall()
        con.execute(f"create table if not exists ml.{table} as select * from ml_frame limit 0").fetchall()
        con.execute(f"delete from ml.{table} where {where}", params).fetchall()
        con.execute(f"insert into ml.{table} by name select * from ml_frame").fetchall()
        con.execute("commit").fetchall()
    except Exception:
        con.execute("rollback").fetchall()
        raise
    finally:
        con.unregister("ml_frame")


def _stamped(frame: pl.DataFrame, ctx: RunContext) -> pl.DataFrame:
    return frame.with_columns(as_of_date=pl.lit(ctx.as_of, dtype=pl.Date), run_id=pl.lit(ctx.run_id))


def write_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, ctx: RunContext) -> int:
    """Replace the rows of `ml.<table>` for this as-of date with `frame` (plus as_of_date, run_id)."""
    _replace_rows(con, table, _stamped(frame, ctx), "as_of_date = ?", [ctx.as_of])
    return frame.height


def write_metrics(con: duckdb.DuckDBPyConnection, model: str, metrics: dict[str, float], ctx: RunContext,
                  evaluated_on: str = "") -> None:
    """One row per metric in `ml.model_metrics`, replacing the model's rows for this as-of date."""
    frame = pl.DataFrame({
        "model": [model] * len(metrics),
        "metric": list(metrics),
        "value": [float(v) for v in metrics.values()],
        "evaluated_on": [evaluated_on] * len(metrics),
    }, schema={"model": pl.String, "metric": pl.String, "value": pl.Float64, "evaluated_on": pl.String})
    _replace_rows(con, "model_metrics", _stamped(frame, ctx), "model = ? and as_of_date = ?", [model, ctx.as_of])


def _plain(value: object) -> object:
    return asdict(value) if is_dataclass(value) else value


def save_artifact(model: str, ctx: RunContext, artifact: object | None, card: dict) -> Path:
    """Write the fitted object (joblib) and its card (JSON and Markdown): features, training window,
    metrics, configuration and library versions. Root: $CRM_MODELS_DIR, default models/."""
    folder = Path(os.environ.get("CRM_MODELS_DIR", DEFAULT_MODELS_DIR)) / model / f"{ctx.as_of}-{ctx.run_id[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    if artifact is not None:
        joblib.dump(artifact, folder / "model.joblib")
    versions = {lib: metadata.version(lib) for lib in LIBRARIES}
    full = {"model": model, "as_of_date": str(ctx.as_of), "run_id": ctx.run_id, **{k: _plain(v) for k, v in card.items()},
            "python": platform.python_version(), "libraries": versions}
    (folder / "card.json").write_text(json.dumps(full, indent=2, default=str))
    lines = [f"# {model} — as of {ctx.as_of}", "", f"Run `{ctx.run_id}`.", ""]
    for key, value in full.items():
        if key not in {"model", "as_of_date", "run_id"}:
            lines.append(f"- **{key}**: {json.dumps(value, default=str)}")
    (folder / "card.md").write_text("\n".join(lines) + "\n")
    return folder
