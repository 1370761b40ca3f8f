"""Who is writing: the as-of date and run id every ML table and metric carries, and where its models go."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb


class NotEnoughHistory(ValueError):
    """The warehouse holds too little data, as of this date, to fit this model: say what is missing."""


DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class RunContext:
    as_of: dt.date  # nothing after this day may influence a feature, label or score
    run_id: str
    models_dir: Path = DEFAULT_MODELS_DIR  # where fitted models and their cards go (ml/registry.py)


def latest_order_date(con: duckdb.DuckDBPyConnection) -> dt.date:
    """The default as-of date: the last local day with an order in the warehouse."""
    day = con.execute("select max(ordered_local_date) from marts.fct_orders").fetchall()[0][0]
    if day is None:
        raise ValueError("marts.fct_orders is empty: load orders before the ML tables")
    return day
