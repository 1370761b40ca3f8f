"""One view per channel, `raw.<channel>`, the union of that channel's raw tables.

It is the stable interface between ingestion and dbt: whatever sources a deployment declares,
dbt reads five views with the contract's columns plus lineage. A channel without sources gets an
empty view of the same shape, so every downstream model builds (a store-only deployment still
gets customers, orders and lines).
"""

from __future__ import annotations

import duckdb

from ingestion.contracts import LINEAGE_COLUMNS, contract_for
from ingestion.load import ensure_tables
from ingestion.sources import Source


def create_channel_view(con: duckdb.DuckDBPyConnection, channel: str, sources: list[Source]) -> int:
    """(Re)create `raw.<channel>` over `sources` (all of this channel); return its row count."""
    contract = contract_for(channel)
    columns = [*contract.names, *LINEAGE_COLUMNS]
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for source in sources:
        ensure_tables(con, source)  # a source never loaded yet still has its (empty) table
    if sources:
        body = " UNION ALL ".join(f"SELECT {', '.join(columns)} FROM {s.table}" for s in sources)
    else:
        typed = [f"CAST(NULL AS {f.duckdb_type}) AS {f.name}" for f in contract.fields]
        typed += [f"CAST(NULL AS {t}) AS {c}" for c, t in LINEAGE_COLUMNS.items()]
        body = f"SELECT {', '.join(typed)} WHERE false"
    con.execute(f"CREATE OR REPLACE VIEW raw.{channel} AS {body}")
    return con.execute(f"SELECT count(*) FROM raw.{channel}").fetchall()[0][0]
