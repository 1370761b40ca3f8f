"""Connected components of the identity graph, with customer keys that stay put (DuckDB).

Records and identifiers are nodes; a record links to each identifier it carries. The components
come from SciPy here; the key rules (kept, merged, split, new) are identity.keys', which the Spark
engine's identity asset shares. Contact values that int_identifier_quality guards are not edges:
they would join strangers.

Incremental: the edges a run used are kept beside the table (EDGES_USED). The next run compares
them with the current edges, and recomputes only the components an added or removed edge touches
(the previous customers of its identifiers and records, and the anonymous nodes they reach), with
the same rules; the other rows stay as they are. A component's result depends only on its own
edges and previous keys, so this equals recomputing every component, which a full refresh does
(and every run without the kept edges). Each run's path is logged in RUNS.
"""

import contextlib
import os

import duckdb
import numpy as np
import pandas as pd

from identity.keys import GUARDED_EDGES_SQL, assign_keys


def previous_keys(dbt, session) -> pd.DataFrame | None:
    """The last run's key of each identifier in _identity_identifiers, in its numbering's order
    (NULL for an identifier new since), or None on a first build. Joined in DuckDB: merging the
    previous keys in pandas on the two identifier strings was slow at a million customers."""
    if not table_exists(session, dbt.this.schema, dbt.this.identifier):
        return None
    has_change = session.execute(
        "select count(*) from information_schema.columns where table_schema = ? and table_name = ? and column_name = 'key_change'",
        [dbt.this.schema, dbt.this.identifier],
    ).fetchall()[0][0]
    key_change = "previous.key_change" if has_change else "cast(null as varchar) as key_change"  # a table from before splits
    return session.execute(f"""
        select previous.customer_key, previous.assigned_at, previous.previous_customer_key, previous.merged_at, {key_change}
        from _identity_identifiers as i
        left join {dbt.this} as previous using (identifier_type, identifier_value)
        order by i.ident_idx
    """).df()


def guarded_edges(dbt, session) -> None:
    """The temp table _identity_edges: every edge of int_identifiers_collected whose identifier the
    guard lets link. A table: the scope, the graph and the kept edges each read it."""
    dbt.ref("int_identifiers_collected").create_view("_identity_all_edges", replace=True)
    dbt.ref("int_identifier_quality").create_view("_identity_guarded", replace=True)
    edges = GUARDED_EDGES_SQL.format(collected="_identity_all_edges", guarded="_identity_guarded")
    session.execute(f"create or replace temp table _identity_edges as {edges}").fetchall()


def changed_scope(session, this: str, edges_used: str) -> int:
    """The temp table _identity_scope: the records whose components an edge added or removed since
    the last run touches, closed over the current edges (every record of those components, and of
    the anonymous nodes they reach). Returns the number of edges that changed."""
    session.execute(f"""
        create or replace temp table _identity_changed_edges as
        (select * from _identity_edges except select * from {edges_used})
        union all
        (select * from {edges_used} except select * from _identity_edges)
    """).fetchall()
    changed = session.execute("select count(*) from _identity_changed_edges").fetchall()[0][0]
    # Seeds: the identifiers of the changed edges and of every edge, old or new, of their records.
    session.execute(f"""
        create or replace temp table _identity_scope_identifiers as
        with records as (select distinct record_type, record_id from _identity_changed_edges),
        seeds as (
            select identifier_type, identifier_value from _identity_changed_edges
            union
            select e.identifier_type, e.identifier_value from _identity_edges as e semi join records using (record_type, record_id)
            union
            select e.identifier_type, e.identifier_value from {edges_used} as e semi join records using (record_type, record_id)
        ),
        customers as (select distinct k.customer_key from {this} as k semi join seeds using (identifier_type, identifier_value))
        select * from seeds
        union
        select k.identifier_type, k.identifier_value from {this} as k semi join customers using (customer_key)
    """).fetchall()
    while True:  # close over the current edges: an anonymous identifier can reach more records
        grown = session.execute("""
            insert into _identity_scope_identifiers
            with records as (
                select distinct e.record_type, e.record_id from _identity_edges as e
                semi join _identity_scope_identifiers using (identifier_type, identifier_value)
            )
            select distinct e.identifier_type, e.identifier_value from _identity_edges as e
            semi join records using (record_type, record_id)
            anti join _identity_scope_identifiers using (identifier_type, identifier_value)
        """).fetchall()[0][0]
        if not grown:
            break
    session.execute("""
        create or replace temp table _identity_scope as
        select distinct e.record_type, e.record_id from _identity_edges as e
        semi join _identity_scope_identifiers using (identifier_type, identifier_value)
    """).fetchall()
    return changed


def graph_edges(dbt, session, scoped: bool) -> tuple[int, np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame | None]:
    """The graph (of the records in _identity_scope when `scoped`) as the number of records, two
    arrays of node numbers (record, identifier) per edge, numbered in DuckDB, the identifiers by
    number and their previous keys (previous_keys). The edges never become Python strings: at a
    million customers they are tens of millions of rows, which as a pandas frame held more memory
    than DuckDB's limit. Identifiers are numbered in value order, so ordering by number is ordering
    by value: pandas sorting millions of identifier strings is slow."""
    scope = "semi join _identity_scope using (record_type, record_id)" if scoped else ""
    session.execute(f"""
        create or replace temp view _identity_graph as select e.* from _identity_edges as e {scope}
    """).fetchall()
    session.execute("""
        create or replace temp table _identity_records as
        select record_type, record_id, (row_number() over () - 1)::integer as record_idx
        from (select distinct record_type, record_id from _identity_graph)
    """).fetchall()
    session.execute("""
        create or replace temp table _identity_identifiers as
        select identifier_type, identifier_value,
               (row_number() over (order by identifier_value, identifier_type) - 1)::integer as ident_idx
        from (select distinct identifier_type, identifier_value from _identity_graph)
    """).fetchall()
    pairs = session.execute("""
        select r.record_idx, i.ident_idx
        from _identity_graph as e
        inner join _identity_records as r using (record_type, record_id)
        inner join _identity_identifiers as i using (identifier_type, identifier_value)
    """).fetchnumpy()
    identifiers = session.execute(
        "select identifier_type, identifier_value from _identity_identifiers order by ident_idx").df()
    records = session.execute("select count(*) from _identity_records").fetchall()[0][0]
    previous = previous_keys(dbt, session)
    for drop in ("table _identity_records", "table _identity_identifiers", "view _identity_graph"):
        session.execute(f"drop {drop}").fetchall()
    return records, np.asarray(pairs["record_idx"]), np.asarray(pairs["ident_idx"]), identifiers, previous


@contextlib.contextmanager
def duckdb_cache_released(session, limit: str = "1GB"):
    """Lower DuckDB's memory limit while the model's pandas frames are alive, then restore it.

    DuckDB keeps blocks cached up to its limit in this process, beside the frames (at a million
    customers, the previous keys merged onto millions of identifiers). Lowering the limit evicts
    cached blocks (temporary ones spill). If a model running beside this one holds too much to
    evict, the limit stays as it was: the frames then cost what they did before.
    """
    # The profile's own value: DuckDB shows the limit rounded down.
    before = os.environ.get("CRM_DUCKDB_MEMORY_LIMIT") or session.execute(
        "select current_setting('memory_limit')").fetchall()[0][0]
    try:
        session.execute(f"set memory_limit = '{limit}'").fetchall()
    except duckdb.OutOfMemoryException:
        yield
        return
    try:
        yield
    finally:
        session.execute(f"set memory_limit = '{before}'").fetchall()


EDGES_USED = "int_customer_keys_assigned__edges"  # beside the table: the edges its last run used
RUNS = "int_customer_keys_assigned__runs"  # each run's path: full or incremental, and its scope


def table_exists(session, schema: str, table: str) -> bool:
    return bool(session.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table],
    ).fetchall()[0][0])


def with_keyless(session, this: str, keys: pd.DataFrame, scope: str | None) -> pd.DataFrame:
    """`keys` and, without a key, the identifiers of the previous table (in `scope`, a table of
    identifiers, if given) that are not in it: the post-hook deletes them."""
    within = f"semi join {scope} using (identifier_type, identifier_value)" if scope else ""
    session.register("_identity_new_keys", keys[["identifier_type", "identifier_value"]])
    gone = session.execute(f"""
        select k.identifier_type, k.identifier_value from {this} as k {within}
        anti join _identity_new_keys using (identifier_type, identifier_value)
    """).df()
    session.unregister("_identity_new_keys")
    typed = keys.astype({"component_records": "Int64"})  # a keyless row has no count
    return pd.concat([typed, gone.astype("string")], ignore_index=True).astype(typed.dtypes.to_dict())


def model(dbt, session):
    # Incremental: rows of recomputed components replace theirs by identifier; the identifiers
    # that left them come back without a key, and the post-hook deletes them (YAML config).
    dbt.config(materialized="incremental", incremental_strategy="python_delete_insert",
               unique_key=["identifier_type", "identifier_value"], on_schema_change="fail")
    schema = dbt.this.schema
    edges_used = f'"{schema}"."{EDGES_USED}"'
    guarded_edges(dbt, session)
    incremental = dbt.is_incremental and table_exists(session, schema, EDGES_USED)
    changed = changed_scope(session, str(dbt.this), edges_used) if incremental else None
    in_scope = session.execute("select count(*) from _identity_scope").fetchall()[0][0] if incremental else None
    edges = graph_edges(dbt, session, scoped=incremental)
    with duckdb_cache_released(session):  # from here on the work is in pandas and SciPy
        keys = assign_keys(*edges)
    if dbt.is_incremental:  # replaced by identifier: those no longer in a customer come back keyless
        keys = with_keyless(session, str(dbt.this), keys, "_identity_scope_identifiers" if incremental else None)
    if incremental:
        for table in ("_identity_changed_edges", "_identity_scope_identifiers", "_identity_scope"):
            session.execute(f"drop table {table}").fetchall()
    session.execute(f"create or replace table {edges_used} as select * from _identity_edges").fetchall()
    session.execute(f"""
        create table if not exists "{schema}"."{RUNS}" (
            run_at timestamp, path varchar, edges_changed bigint, records_recomputed bigint, rows_written bigint)
    """).fetchall()
    session.execute(f'insert into "{schema}"."{RUNS}" values (current_timestamp::timestamp, ?, ?, ?, ?)',
                    ["incremental" if incremental else "full", changed, in_scope if incremental else edges[0],
                     len(keys)]).fetchall()
    for drop in ("table _identity_edges", "view _identity_all_edges", "view _identity_guarded"):
        session.execute(f"drop {drop}").fetchall()
    return keys
