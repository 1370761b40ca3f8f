"""Region scopes: a regional team sees only its customers and their rows.

A customer belongs to region R when their current `dim_customer` version says R. Each published
version holds one view per served table in schema `scoped`, filtered by the session variable
`crm_region` (`SET VARIABLE crm_region = 'R'`); unset, the views are empty. Regional exports read
the same views, so the rule is written once.
"""

from __future__ import annotations

import duckdb

from serving.publish import served_tables

SCHEMA = "scoped"
VARIABLE = "crm_region"
REGION_CUSTOMERS = "SELECT customer_key FROM marts.dim_customer WHERE is_current AND region = getvariable('crm_region')"


class UnscopableTable(ValueError):
    """A table holds personal data but no customer_key to scope it by."""


def scoped_view_name(schema: str, table: str) -> str:
    return f"{SCHEMA}.{table}" if schema == "marts" else f"{SCHEMA}.{schema}_{table}"


def create_scope_views(con: duckdb.DuckDBPyConnection, personal: dict[str, set[str]]) -> list[str]:
    """One view per served table: rows of the region's customers where the table has customer_key;
    whole tables without it (products, dates, rules), unless they hold personal columns. Views of
    tables no longer served go (the build file keeps the views of the version it last became)."""
    con.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    con.execute(f"CREATE SCHEMA {SCHEMA}")
    views = []
    for schema, table in served_tables(con):
        columns = {r[0] for r in con.execute(f'DESCRIBE "{schema}"."{table}"').fetchall()}
        if "customer_key" in columns:
            where = f"WHERE customer_key IN ({REGION_CUSTOMERS})"
        elif personal.get(f"{schema}.{table}"):
            raise UnscopableTable(f"{schema}.{table} has personal columns but no customer_key to scope it by")
        else:
            where = ""
        name = scoped_view_name(schema, table)
        con.execute(f'CREATE OR REPLACE VIEW {name} AS SELECT * FROM "{schema}"."{table}" {where}')
        views.append(name)
    return views


def set_region(con: duckdb.DuckDBPyConnection, region: str) -> None:
    """Scope this connection's `scoped.*` views to `region`; an unknown region is an error, not an empty export."""
    known = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT region FROM marts.dim_customer WHERE is_current AND region IS NOT NULL ORDER BY 1"
        ).fetchall()
    ]
    if region not in known:
        raise ValueError(f"unknown region {region!r}; regions: {', '.join(known)}")
    con.execute(f"SET VARIABLE {VARIABLE} = ?", [region])
