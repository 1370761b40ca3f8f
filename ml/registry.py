"""Where ML results go: `ml.<table>` rows per as-of date, `ml.model_metrics`, and artifacts with
their cards under models/<model>/<as_of>-<run>/ (git-ignored), where later runs find a model fitted
in their last refit_days days to score with."""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import asdict, dataclass, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import joblib
import polars as pl

from ml.run_context import RunContext

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


# Amounts of money in the ML tables: DECIMAL(18,4) like the marts, so sums print as amounts.
MONEY_COLUMNS = frozenset(
    {"monetary", "segment_mean_monetary", "mean_repeat_spend", "expected_spend_per_purchase", "predicted_value"}
)
MONEY_TYPE = "DECIMAL(18,4)"


def _money_as_decimal(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its money columns as DECIMAL(18,4); a table written before with them DOUBLE is altered."""
    money = [c for c in frame.columns if c in MONEY_COLUMNS]
    doubles = {
        r[0]
        for r in con.execute(
            "select column_name from information_schema.columns where table_schema = 'ml' and table_name = ? "
            "and data_type = 'DOUBLE'",
            [table],
        ).fetchall()
    }
    for column in sorted(doubles & set(money)):
        con.execute(f'alter table ml.{table} alter column "{column}" type {MONEY_TYPE}').fetchall()
    return frame.with_columns([pl.col(c).round(4).cast(pl.Decimal(18, 4)) for c in money])


def write_table(
    con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, ctx: RunContext, keep_days: int | None = None
) -> int:
    """Replace the rows of `ml.<table>` for this as-of date with `frame` (plus as_of_date, run_id);
    with `keep_days` (ml.config.HistoryConfig, checked there), then delete the as-of dates more than
    that many days before the newest (a backfill of an older date is deleted with them)."""
    _replace_rows(con, table, _stamped(_money_as_decimal(con, table, frame), ctx), "as_of_date = ?", [ctx.as_of])
    if keep_days is not None:
        con.execute(
            f"delete from ml.{table} where as_of_date < (select max(as_of_date) from ml.{table}) - to_days(?)",
            [keep_days],
        ).fetchall()
    return frame.height


def write_metrics(
    con: duckdb.DuckDBPyConnection, model: str, metrics: dict[str, float], ctx: RunContext, evaluated_on: str = ""
) -> None:
    """One row per metric in `ml.model_metrics`, replacing the model's rows for this as-of date."""
    frame = pl.DataFrame(
        {
            "model": [model] * len(metrics),
            "metric": list(metrics),
            "value": [float(v) for v in metrics.values()],
            "evaluated_on": [evaluated_on] * len(metrics),
        },
        schema={"model": pl.String, "metric": pl.String, "value": pl.Float64, "evaluated_on": pl.String},
    )
    _replace_rows(con, "model_metrics", _stamped(frame, ctx), "model = ? and as_of_date = ?", [model, ctx.as_of])


def _plain(value: object) -> object:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


@dataclass(frozen=True)
class Fitted:
    """A model fitted in an earlier run, found to score with."""

    artifact: Any  # the fitted model, of the kind its table asked for
    as_of: dt.date  # the date it was fitted as of
    folder: Path


def _versions() -> dict[str, str]:
    return {lib: metadata.version(lib) for lib in LIBRARIES}


def _card_value(value: object) -> object:
    """`value` as a card holds it (JSON)."""
    return json.loads(json.dumps(_plain(value), default=str))


def warehouse_of(con: duckdb.DuckDBPyConnection) -> str | None:
    """The warehouse file `con` works on (None in memory): a fit is reused only on the warehouse it
    was fitted on, since models/ may serve several deployments."""
    path = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchall()[0][0]
    return str(Path(path).resolve()) if path else None


def fitted_model(con: duckdb.DuckDBPyConnection, model: str, ctx: RunContext, config: Any, kind: type) -> Fitted | None:
    """The newest `kind` fitted for `model` on this warehouse, in `ctx.models_dir`, as of a date in the
    `config.refit_days` days up to `ctx.as_of` (never after it: nothing later may shape a score), with this configuration
    and these library versions; None when the table must fit."""
    warehouse = warehouse_of(con)
    if warehouse is None:
        return None
    found: list[tuple[dt.date, float, Path]] = []
    as_of = ctx.as_of
    for card_path in (ctx.models_dir / model).glob("*/card.json"):
        folder = card_path.parent
        card = json.loads(card_path.read_text())
        fitted_as_of = dt.date.fromisoformat(card.get("fitted_as_of", card["as_of_date"]))
        if (
            card.get("fitted_in") is None
            and card.get("warehouse") == warehouse
            and (folder / "model.joblib").exists()
            and 0 <= (as_of - fitted_as_of).days < config.refit_days
            and card.get("config") == _card_value(config)
            and card.get("libraries") == _versions()
        ):
            found.append((fitted_as_of, card_path.stat().st_mtime, folder))
    for fitted_as_of, _, folder in sorted(found, key=lambda f: f[:2], reverse=True):
        artifact = joblib.load(folder / "model.joblib")
        if isinstance(artifact, kind):  # an artifact of an older version of the code is fitted again
            return Fitted(artifact, fitted_as_of, folder)
    return None


def save_artifact(
    model: str,
    ctx: RunContext,
    artifact: object | None,
    card: dict,
    reused: Fitted | None = None,
    warehouse: str | None = None,
) -> Path:
    """Write the fitted object (joblib) and its card (JSON and Markdown): features, training window,
    metrics, configuration and library versions. A run that scored with an earlier fit (`reused`)
    writes only the card, naming that fit's folder. Root: `ctx.models_dir`."""
    folder = ctx.models_dir / model / f"{ctx.as_of}-{ctx.run_id[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    if artifact is not None and reused is None:
        joblib.dump(artifact, folder / "model.joblib")
    fitted = (
        {"fitted_as_of": str(reused.as_of), "fitted_in": str(reused.folder)}
        if reused
        else ({"fitted_as_of": str(ctx.as_of)} if artifact is not None else {})
    )
    full = {
        "model": model,
        "as_of_date": str(ctx.as_of),
        "run_id": ctx.run_id,
        "warehouse": warehouse,
        **fitted,
        **{k: _plain(v) for k, v in card.items()},
        "python": platform.python_version(),
        "libraries": _versions(),
    }
    (folder / "card.json").write_text(json.dumps(full, indent=2, default=str))
    lines = [f"# {model} — as of {ctx.as_of}", "", f"Run `{ctx.run_id}`.", ""]
    for key, value in full.items():
        if key not in {"model", "as_of_date", "run_id"}:
            lines.append(f"- **{key}**: {json.dumps(value, default=str)}")
    (folder / "card.md").write_text("\n".join(lines) + "\n")
    return folder
