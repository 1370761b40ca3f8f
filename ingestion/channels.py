"""One view per channel, `raw.<channel>`, the union of that channel's raw tables.

It is the stable interface between ingestion and dbt: whatever sources a deployment declares,
dbt reads one view per channel with the contract's columns plus lineage (campaigns also carry their
source's options). A channel without sources gets an empty view of the same shape, so every
downstream model builds (a store-only deployment still gets customers, orders and lines).
"""

from __future__ import annotations

import duckdb

from ingestion.contracts import LINEAGE_COLUMNS, contract_for
from ingestion.load import ensure_tables
from ingestion.sources import Source

# The channel options each row carries into the view (campaigns: the experiment its file describes).
OPTION_COLUMNS: dict[str, dict[str, str]] = {
    "campaigns": {"_is_control": "BOOLEAN", "_randomized": "BOOLEAN", "_response_window_days": "INTEGER"}
}


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _option_values(source: Source) -> list[str]:
    """SQL of the view's option columns for one source's rows."""
    if source.channel != "campaigns":
        return []
    controls = [v.strip().lower() for v in source.channel_option("control_arms")]
    is_control = f"lower(trim(arm)) IN ({', '.join(map(_sql_text, controls))})" if controls else "false"
    return [
        f"{is_control} AS _is_control",
        f"{str(bool(source.channel_option('randomized'))).lower()} AS _randomized",
        f"CAST({int(source.channel_option('response_window_days'))} AS INTEGER) AS _response_window_days",
    ]


def create_channel_view(con: duckdb.DuckDBPyConnection, channel: str, sources: list[Source]) -> int:
    """(Re)create `raw.<channel>` over `sources` (all of this channel); return its row count."""
    contract = contract_for(channel)
    columns = [*contract.names, *LINEAGE_COLUMNS]
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for source in sources:
        ensure_tables(con, source)  # a source never loaded yet still has its (empty) table
    if sources:
        body = " UNION ALL ".join(f"SELECT {', '.join(columns + _option_values(s))} FROM {s.table}" for s in sources)
    else:
        typed = [f"CAST(NULL AS {f.duckdb_type}) AS {f.name}" for f in contract.fields]
        typed += [f"CAST(NULL AS {t}) AS {c}" for c, t in (LINEAGE_COLUMNS | OPTION_COLUMNS.get(channel, {})).items()]
        body = f"SELECT {', '.join(typed)} WHERE false"
    con.execute(f"CREATE OR REPLACE VIEW raw.{channel} AS {body}")
    return con.execute(f"SELECT count(*) FROM raw.{channel}").fetchall()[0][0]
