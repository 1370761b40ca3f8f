"""Identity resolution on DuckDB: the fuzzy profile pairs and the stable customer keys, written as
the warehouse tables `intermediate.int_profiles_matched` and `intermediate.int_customer_keys_assigned`,
which the dbt models read as the source `identity` (on Spark, identity/spark.py writes them).

Both are incremental (dbt_project/README.md):
- the pairs: a run searches again only the pairs of profiles with a version loaded since the last
  run, against every current profile; the pairs it keeps are scored again with the run's model,
  so their probabilities equal a full refresh's. Every pair is searched on a full refresh, on the
  first run, and when a profile version the last run saw has gone (a re-delivered day, an erasure);
- the keys: the edges a run used are kept beside the table (EDGES_USED); the next run takes again
  only the edges collected since (changed_edges) and recomputes only the components an added or
  removed edge touches, with the same rules (identity.keys). A
  component's result depends only on its own edges and previous keys, so this equals recomputing
  every component, which a full refresh does. Each run's path is logged in RUNS. An incremental run
  adds to STALE the records whose identity-map row it may have changed: those it recomputed, those
  of a removed edge, and those whose edges the guard holds back changed (they name them in the
  map); the map (marts.customer_identity_map) rebuilds those rows and empties STALE. A full run
  drops STALE: the map then rebuilds whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from splink import DuckDBAPI

from identity.keys import COLUMNS as KEY_COLUMNS
from identity.keys import GUARDED_EDGES_SQL, PREVIOUS, Assigned, assign_keys
from identity.matching import COLUMNS as PAIR_TABLE_COLUMNS
from identity.matching import PAIR_COLUMNS, Matched, predict

PROFILES = "staging.stg_customers__profiles"
COLLECTED = "intermediate.int_identifiers_collected"
GUARDED = "intermediate.int_identifier_quality"
PAIRS = "intermediate.int_profiles_matched"
KEYS = "intermediate.int_customer_keys_assigned"
EDGES_USED = "intermediate.int_customer_keys_assigned__edges"  # the edges the last run of KEYS used
RUNS = "intermediate.int_customer_keys_assigned__runs"  # each run's path: full or incremental, and its scope
# The collected edges the guard held back at the last run, and the records whose identity-map row
# may be stale (absent: every row is; the map's build empties it).
HELD_BACK_USED = "intermediate.int_customer_keys_assigned__held_back"
STALE = "intermediate.int_customer_keys_assigned__stale"
GUARDED_EDGES = GUARDED_EDGES_SQL.format(collected=COLLECTED, guarded=GUARDED)  # the edges the guard lets link
# The records the identifier collection left without an edge (its post-hook lists them: their edges go).
EMPTIED = "intermediate.int_identifiers_collected__emptied"
KEYS_SCHEMA = (
    "identifier_type varchar, identifier_value varchar, customer_key varchar, assigned_at timestamp, "
    "previous_customer_key varchar, merged_at timestamp, key_change varchar, component_records bigint"
)
SIZE_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}  # as current_setting() prints them


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    schema, table = name.split(".")
    return bool(
        con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
        ).fetchall()[0][0]
    )


# --- the fuzzy pairs ---------------------------------------------------------------------------


def splink_connection(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Splink's own in-memory DuckDB, with half the warehouse connection's memory limit and a spill
    folder beside the warehouse's (DuckDB creates one level of folder, not its parents). Left to
    its defaults it may take 80 % of the machine on top of the warehouse's own limit."""
    limit, temp = con.execute("select current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
    number, unit = limit.split()
    return duckdb.connect(
        config={
            "memory_limit": f"{int(float(number) * SIZE_UNITS[unit] / 2)}B",
            "temp_directory": f"{temp}-splink",
        }
    )


def changed_refs(con: duckdb.DuckDBPyConnection) -> list[str] | None:
    """The customer refs with a profile version loaded since the last run, or None when every pair
    must be searched: no pairs kept, or a version loaded by the last run has gone since."""
    if not table_exists(con, PAIRS):
        return None
    is_nothing_gone, changed = con.execute(f"""
        with built as (
            select max(profiles_loaded_at) as scored_through, max(profile_versions) as versions from {PAIRS}
        )
        select
            (select count(*) from _profile_versions, built where loaded_at <= scored_through) = (select versions from built),
            (select coalesce(list(distinct customer_ref), []) from _profile_versions, built where loaded_at > scored_through)
    """).fetchall()[0]
    return changed if is_nothing_gone else None


def kept_pairs(con: duckdb.DuckDBPyConnection, changed: list[str]) -> pd.DataFrame:
    """The last run's pairs of two profiles that have not changed since and are still paired (a
    profile whose name or birth date went blank is not)."""
    return con.execute(
        f"""
        select {", ".join(PAIR_COLUMNS)} from {PAIRS}
        where customer_ref_l in (select customer_ref from _current_profiles)
          and customer_ref_r in (select customer_ref from _current_profiles)
          and not list_contains($changed, customer_ref_l) and not list_contains($changed, customer_ref_r)
    """,
        {"changed": changed},
    ).df()


def match_profiles(con: duckdb.DuckDBPyConnection, threshold: float, full_refresh: bool = False) -> Matched:
    """Score the pairs of current registry profiles into PAIRS (pairs at `threshold` or above are
    accepted); incremental unless `full_refresh`."""
    # The current version of each member is chosen in DuckDB: pulling every version into pandas
    # to sort it there cost several times the time and memory at a million customers.
    con.execute(f"""
        create or replace temp table _profile_versions as
        select customer_ref, full_name, birth_date, city, gender, updated_at, profile_version_id,
               timezone('UTC', source_loaded_at) as loaded_at
        from {PROFILES}
    """).fetchall()
    con.execute("""
        create or replace temp table _current_profiles as
        select customer_ref, full_name, birth_date, city, gender
        from _profile_versions
        where full_name is not null and birth_date is not null
        qualify row_number() over (partition by customer_ref order by updated_at desc, profile_version_id desc) = 1
    """).fetchall()
    loaded_at, n_versions = con.execute("select max(loaded_at), count(*) from _profile_versions").fetchall()[0]
    profiles = con.execute("select * from _current_profiles order by customer_ref").df()
    changed = None if full_refresh else changed_refs(con)
    searched = len(profiles) if changed is None else int(profiles["customer_ref"].isin(changed).sum())
    if len(profiles) < 2:
        pairs = pd.DataFrame({c: pd.Series(dtype=t) for c, t in PAIR_COLUMNS.items()})  # typed, even when empty
    elif changed is None:
        with splink_connection(con) as splink:
            pairs = predict(profiles, DuckDBAPI(splink))
    else:
        kept = kept_pairs(con, changed)
        rescored = profiles[profiles["customer_ref"].isin(changed)]
        if len(rescored) or len(kept):
            with splink_connection(con) as splink:
                pairs = predict(profiles, DuckDBAPI(splink), rescored, kept)
        else:
            pairs = kept
    for table in ("_profile_versions", "_current_profiles"):
        con.execute(f"drop table {table}").fetchall()
    table = (
        pairs.astype(PAIR_COLUMNS)
        .assign(
            is_accepted=lambda p: p["match_probability"] >= threshold,
            profiles_loaded_at=pd.Timestamp(loaded_at) if loaded_at else pd.NaT,
            profile_versions=n_versions,
        )[list(PAIR_TABLE_COLUMNS)]
        .astype(PAIR_TABLE_COLUMNS)
        .sort_values(["customer_ref_l", "customer_ref_r"])
    )
    with registered(con, "_identity_pairs", table):
        con.execute("begin transaction").fetchall()
        con.execute(f"create or replace table {PAIRS} as select * from _identity_pairs").fetchall()
        con.execute("commit").fetchall()
    path = "full" if changed is None else "incremental"
    return Matched(len(table), int(table["is_accepted"].sum()), path, searched)


# --- the customer keys -------------------------------------------------------------------------


def held_back(con: duckdb.DuckDBPyConnection) -> None:
    """The temp table _identity_held_back: the collected edges whose identifier the guard holds back."""
    con.execute(f"""
        create or replace temp table _identity_held_back as
        select record_type, record_id, identifier_type, identifier_value from {COLLECTED}
        semi join {GUARDED} using (identifier_type, identifier_value)
    """).fetchall()


def guarded_edges(con: duckdb.DuckDBPyConnection) -> None:
    """For a full run, the temp tables _identity_edges: every collected edge whose identifier the
    guard lets link, and _identity_held_back: the others."""
    con.execute(f"create or replace temp table _identity_edges as {GUARDED_EDGES}").fetchall()
    held_back(con)


def collected_through(con: duckdb.DuckDBPyConnection) -> object | None:
    """When the newest edge the last run read was collected, if the collection's lineage can tell
    what changed since: None when the last run did not note it, or the collection (or the guard's
    record of what it held back) has been rebuilt whole since."""
    if not table_exists(con, RUNS) or not table_exists(con, HELD_BACK_USED):
        return None
    con.execute(f"alter table {RUNS} add column if not exists collected_through timestamp with time zone").fetchall()
    last = con.execute(f"select collected_through from {RUNS} order by run_at desc limit 1").fetchall()
    if not last or last[0][0] is None:
        return None
    rebuilt = con.execute(f"select coalesce(min(collected_at) > ?, true) from {COLLECTED}", [last[0][0]]).fetchall()
    return None if rebuilt[0][0] else last[0][0]


@dataclass(frozen=True)
class Retaken:
    edges: str  # the condition on EDGES_USED's rows (as `e`) that _identity_fresh replaces
    fresh: int  # the current edges taken again
    changed: int  # edges added or removed


def changed_edges(con: duckdb.DuckDBPyConnection, since: object | None) -> Retaken:
    """Temp tables of the guarded edges taken again since the last run's (EDGES_USED): _identity_fresh,
    the current guarded edges of the records collected after `since` (and of the identifiers the
    guard began or stopped holding back); _identity_changed_edges, the edges added or removed. The
    view _identity_edges is every current guarded edge: EDGES_USED's others, and the fresh. With
    `since` None every edge is taken again.

    An edge changes only when its record is collected again (int_identifiers_collected stamps
    `collected_at`; records left without an edge are listed in EMPTIED) or the guard's verdict on
    its identifier changes: reading those is what spares comparing every edge every day."""
    held_back(con)
    if since is None:
        retaken = "true"
    else:
        con.execute(f"""
            create or replace temp table _identity_reguarded as
            select distinct identifier_type, identifier_value from (
                (select * from _identity_held_back except select * from {HELD_BACK_USED})
                union all
                (select * from {HELD_BACK_USED} except select * from _identity_held_back)
            )
        """).fetchall()
        emptied = (
            f"union select record_type, record_id from {EMPTIED} where collected_at > $since"
            if table_exists(con, EMPTIED)
            else ""
        )
        con.execute(
            f"""
            create or replace temp table _identity_recollected as
            select distinct record_type, record_id from {COLLECTED} where collected_at > $since
            {emptied}
        """,
            {"since": since},
        ).fetchall()
        # Correlated exists, not IN over row values: 0.65 s against 1.1 s per read of EDGES_USED on a
        # million customers, and the condition is read three times.
        retaken = (
            "(exists (select 1 from _identity_recollected as r where r.record_type = e.record_type and r.record_id = e.record_id)"
            " or exists (select 1 from _identity_reguarded as g"
            " where g.identifier_type = e.identifier_type and g.identifier_value = e.identifier_value))"
        )
    con.execute(
        f"create or replace temp table _identity_fresh as select * from ({GUARDED_EDGES}) as e where {retaken}"
    ).fetchall()
    # The same rows as `where not {retaken}`: the closure scans this view several times, and
    # anti joins read EDGES_USED a quarter faster than IN lists over row values did (on a million customers).
    kept = (
        "where false"
        if since is None
        else (
            "anti join _identity_recollected using (record_type, record_id)"
            " anti join _identity_reguarded using (identifier_type, identifier_value)"
        )
    )
    con.execute(f"""
        create or replace temp view _identity_edges as
        select record_type, record_id, identifier_type, identifier_value from {EDGES_USED} {kept}
        union all
        select * from _identity_fresh
    """).fetchall()
    con.execute(f"""
        create or replace temp table _identity_changed_edges as
        with replaced as (select record_type, record_id, identifier_type, identifier_value from {EDGES_USED} as e where {retaken})
        (select * from _identity_fresh except select * from replaced)
        union all
        (select * from replaced except select * from _identity_fresh)
    """).fetchall()
    fresh, changed = con.execute(
        "select (select count(*) from _identity_fresh), (select count(*) from _identity_changed_edges)"
    ).fetchall()[0]
    return Retaken(retaken, fresh, changed)


def mark_stale_records(con: duckdb.DuckDBPyConnection, incremental: bool) -> None:
    """Within the keys' transaction: add the records whose identity-map row this incremental run may
    have changed to STALE (while it exists), or drop STALE after a full run."""
    if not incremental:
        con.execute(f"drop table if exists {STALE}").fetchall()
    elif table_exists(con, STALE):
        held_back_changed = (
            f"""
            (select * from _identity_held_back except select * from {HELD_BACK_USED})
            union all
            (select * from {HELD_BACK_USED} except select * from _identity_held_back)
        """
            if table_exists(con, HELD_BACK_USED)
            else "select * from _identity_held_back"
        )
        con.execute(f"""
            insert into {STALE}
            select record_type, record_id from _identity_scope
            union
            select record_type, record_id from _identity_changed_edges
            union
            select record_type, record_id from ({held_back_changed})
        """).fetchall()
    con.execute(f"create or replace table {HELD_BACK_USED} as select * from _identity_held_back").fetchall()


def changed_scope(con: duckdb.DuckDBPyConnection) -> None:
    """The temp table _identity_scope: the records whose components a changed edge
    (_identity_changed_edges) touches, closed over the current edges (every record of those
    components, and of the anonymous nodes they reach); and _identity_scope_identifiers, their
    identifiers."""
    # Seeds: the identifiers of the changed edges and of every edge, old or new, of their records.
    con.execute(f"""
        create or replace temp table _identity_scope_identifiers as
        with records as (select distinct record_type, record_id from _identity_changed_edges),
        seeds as (
            select identifier_type, identifier_value from _identity_changed_edges
            union
            select e.identifier_type, e.identifier_value from _identity_edges as e semi join records using (record_type, record_id)
            union
            select e.identifier_type, e.identifier_value from {EDGES_USED} as e semi join records using (record_type, record_id)
        ),
        customers as (select distinct k.customer_key from {KEYS} as k semi join seeds using (identifier_type, identifier_value))
        select * from seeds
        union
        select k.identifier_type, k.identifier_value from {KEYS} as k semi join customers using (customer_key)
    """).fetchall()
    while True:  # close over the current edges: an anonymous identifier can reach more records
        grown = con.execute("""
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
    con.execute("""
        create or replace temp table _identity_scope as
        select distinct e.record_type, e.record_id from _identity_edges as e
        semi join _identity_scope_identifiers using (identifier_type, identifier_value)
    """).fetchall()


def previous_keys(con: duckdb.DuckDBPyConnection) -> pd.DataFrame | None:
    """The last run's key of each identifier in _identity_identifiers, in its numbering's order
    (NULL for an identifier new since), or None on a first build. Joined in DuckDB: merging the
    previous keys in pandas on the two identifier strings was slow at a million customers."""
    if not table_exists(con, KEYS):
        return None
    return con.execute(f"""
        select {", ".join(f"previous.{c}" for c in PREVIOUS)}
        from _identity_identifiers as i
        left join {KEYS} as previous using (identifier_type, identifier_value)
        order by i.ident_idx
    """).df()


def graph_edges(
    con: duckdb.DuckDBPyConnection, scoped: bool
) -> tuple[int, np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame | None]:
    """The graph (of the records in _identity_scope when `scoped`) as the number of records, two
    arrays of node numbers (record, identifier) per edge, numbered in DuckDB, the identifiers by
    number and their previous keys (previous_keys). The edges never become Python strings: at a
    million customers they are tens of millions of rows, which as a pandas frame held more memory
    than DuckDB's limit. Identifiers are numbered in value order, so ordering by number is ordering
    by value: pandas sorting millions of identifier strings is slow."""
    # Scoped, the graph is a few components: kept as a table, so that the three reads below scan the
    # edges once. Whole, it is every edge: a view, not a second copy of them.
    scope, kind = ("semi join _identity_scope using (record_type, record_id)", "table") if scoped else ("", "view")
    con.execute(
        f"create or replace temp {kind} _identity_graph as select e.* from _identity_edges as e {scope}"
    ).fetchall()
    con.execute("""
        create or replace temp table _identity_records as
        select record_type, record_id, (row_number() over () - 1)::integer as record_idx
        from (select distinct record_type, record_id from _identity_graph)
    """).fetchall()
    con.execute("""
        create or replace temp table _identity_identifiers as
        select identifier_type, identifier_value,
               (row_number() over (order by identifier_value, identifier_type) - 1)::integer as ident_idx
        from (select distinct identifier_type, identifier_value from _identity_graph)
    """).fetchall()
    pairs = con.execute("""
        select r.record_idx, i.ident_idx
        from _identity_graph as e
        inner join _identity_records as r using (record_type, record_id)
        inner join _identity_identifiers as i using (identifier_type, identifier_value)
    """).fetchnumpy()
    identifiers = con.execute(
        "select identifier_type, identifier_value from _identity_identifiers order by ident_idx"
    ).df()
    records = con.execute("select count(*) from _identity_records").fetchall()[0][0]
    previous = previous_keys(con)
    for drop in ("table _identity_records", "table _identity_identifiers", f"{kind} _identity_graph"):
        con.execute(f"drop {drop}").fetchall()
    return records, np.asarray(pairs["record_idx"]), np.asarray(pairs["ident_idx"]), identifiers, previous


@contextlib.contextmanager
def cache_released(con: duckdb.DuckDBPyConnection, memory_limit: str, lowered: str = "1GB") -> Iterator[None]:
    """Lower DuckDB's memory limit while pandas and SciPy hold the graph, then restore
    `memory_limit` (the setting's own value: DuckDB shows it rounded down).

    DuckDB keeps blocks cached up to its limit beside the frames (at a million customers, the
    previous keys of millions of identifiers). Lowering the limit evicts cached blocks (temporary
    ones spill). If the connection holds too much to evict, the limit stays as it was."""
    try:
        con.execute(f"set memory_limit = '{lowered}'").fetchall()
    except duckdb.OutOfMemoryException:
        yield
        return
    try:
        yield
    finally:
        con.execute(f"set memory_limit = '{memory_limit}'").fetchall()


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> Iterator[None]:
    con.register(name, frame)
    try:
        yield
    finally:
        con.unregister(name)


def assign_customer_keys(con: duckdb.DuckDBPyConnection, memory_limit: str, full_refresh: bool = False) -> Assigned:
    """Components of the guarded identity graph into KEYS, keys kept from its previous rows;
    recomputes only the components a changed edge touches unless `full_refresh` (or the edges of
    the last run are missing). `memory_limit`: the connection's own, restored after the graph."""
    incremental = not full_refresh and table_exists(con, KEYS) and table_exists(con, EDGES_USED)
    through = con.execute(f"select max(collected_at) from {COLLECTED}").fetchall()[0][0]
    if incremental:
        retaken = changed_edges(con, collected_through(con))
        changed_scope(con)
    else:
        guarded_edges(con)
    edges = graph_edges(con, scoped=incremental)
    with cache_released(con, memory_limit):  # from here on the work is in pandas and SciPy
        keys = assign_keys(*edges)[KEY_COLUMNS]
    with registered(con, "_identity_keys", keys):
        con.execute("begin transaction").fetchall()
        if incremental:  # the recomputed components replace theirs; their identifiers that left all customers go
            con.execute(f"""
                delete from {KEYS} as k using _identity_scope_identifiers as s
                where k.identifier_type = s.identifier_type and k.identifier_value = s.identifier_value
            """).fetchall()
        else:
            con.execute(f"create or replace table {KEYS} ({KEYS_SCHEMA})").fetchall()
        con.execute(f"insert into {KEYS} by name select * from _identity_keys").fetchall()
        if incremental:  # the edges taken again replace theirs
            con.execute(f"delete from {EDGES_USED} as e where {retaken.edges}").fetchall()
            con.execute(f"insert into {EDGES_USED} select * from _identity_fresh").fetchall()
        else:
            con.execute(f"create or replace table {EDGES_USED} as select * from _identity_edges").fetchall()
        mark_stale_records(con, incremental)
        path = "incremental" if incremental else "full"
        log_run(con, path, retaken if incremental else None, edges[0], len(keys), through)
        con.execute("commit").fetchall()
    for temp in (
        "_identity_held_back",
        "_identity_fresh",
        "_identity_recollected",
        "_identity_reguarded",
        "_identity_changed_edges",
        "_identity_scope_identifiers",
        "_identity_scope",
    ):
        con.execute(f"drop table if exists {temp}").fetchall()
    con.execute(f"drop {'view' if incremental else 'table'} if exists _identity_edges").fetchall()
    identifiers, customers = con.execute(f"select count(*), count(distinct customer_key) from {KEYS}").fetchall()[0]
    return Assigned(identifiers, customers, path, edges[0])


def log_run(
    con: duckdb.DuckDBPyConnection, path: str, retaken: Retaken | None, records: int, rows: int, through: object | None
) -> None:
    """Within the keys' transaction: the run's row in RUNS: the edges it took again and those that
    changed (NULL on a full run), and the newest collected edge it read (the next run takes again
    only the edges collected after it). The emptied records it read go."""
    con.execute(f"""
        create table if not exists {RUNS} (
            run_at timestamp, path varchar, edges_changed bigint, records_recomputed bigint, rows_written bigint)
    """).fetchall()
    for column in ("edges_retaken bigint", "collected_through timestamp with time zone"):
        con.execute(f"alter table {RUNS} add column if not exists {column}").fetchall()
    con.execute(
        f"insert into {RUNS} by name select current_timestamp::timestamp as run_at, ? as path, ? as edges_retaken, "
        "? as edges_changed, ? as records_recomputed, ? as rows_written, ? as collected_through",
        [path, retaken.fresh if retaken else None, retaken.changed if retaken else None, records, rows, through],
    ).fetchall()
    if table_exists(con, EMPTIED):
        con.execute(f"delete from {EMPTIED} where collected_at <= ?", [through]).fetchall()
