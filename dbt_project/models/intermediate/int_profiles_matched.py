"""Fuzzy matching of registry profiles that share no strong identifier (Splink on DuckDB).

Someone who registers twice with a new phone, a new card and no email is linked only by name,
birth date, city and gender. Splink scores every pair of current profiles that share a birth date
(or a name and city) with a Fellegi-Sunter model: the u-probabilities (how often two different
people agree by chance) are measured on this data by random sampling; the m-probabilities (how
often one person's two registrations agree) are set below from how registries garble people
(docs/identity.md), because a registry has too few known duplicates to learn them from. Pairs at
or above var('fuzzy_match_threshold') are accepted as links; those between 0.5 and the threshold
are kept for clerical review but link nobody, so precision comes first.

Incremental: a run searches again only the pairs of the profiles with a version loaded since the
last run, against every current profile (Splink's predict_between); the other pairs it kept are
scored again with the run's model, alone, so that their probabilities equal a full refresh's.
Blocking on birth date compares every profile with about 40 others at a million customers, and a
day changes a few thousand profiles. All pairs are searched again on a full refresh, and when a
version loaded before the last run is gone (a re-delivered day, an erasure). u is measured on
every current profile each run it scores.
"""

import duckdb
import pandas as pd
from splink import DuckDBAPI

from identity.matching import COLUMNS, PAIR_COLUMNS, predict

SIZE_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}  # as current_setting() prints them


def splink_connection(session) -> duckdb.DuckDBPyConnection:
    """Splink's own in-memory DuckDB, with half the warehouse connection's memory limit and a spill
    folder beside the warehouse's (DuckDB creates one level of folder, not its parents). Left to
    its defaults it may take 80 % of the machine on top of the warehouse's own limit."""
    limit, temp = session.execute("select current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
    number, unit = limit.split()
    return duckdb.connect(config={"memory_limit": f"{int(float(number) * SIZE_UNITS[unit] / 2)}B",
                                  "temp_directory": f"{temp}-splink"})


def changed_refs(dbt, session) -> list[str] | None:
    """The customer refs with a profile version loaded since the last run, or None when every pair
    must be scored: the first build, a full refresh, no pairs kept, or a version loaded by the last
    run has gone since (a re-delivered day replaces its rows; an erasure deletes them)."""
    if not dbt.is_incremental or not set(COLUMNS) <= set(session.sql(f"select * from {dbt.this}").columns):
        return None  # a table built before these columns existed is scored again whole
    is_nothing_gone, changed = session.execute(f"""
        with built as (
            select max(profiles_loaded_at) as scored_through, max(profile_versions) as versions from {dbt.this}
        )
        select
            (select count(*) from _profile_versions, built where loaded_at <= scored_through) = (select versions from built),
            (select coalesce(list(distinct customer_ref), []) from _profile_versions, built where loaded_at > scored_through)
    """).fetchall()[0]
    return changed if is_nothing_gone else None


def kept_pairs(dbt, session, changed: list[str]) -> pd.DataFrame:
    """The last run's pairs of two profiles that have not changed since and are still paired (a
    profile whose name or birth date went blank is not)."""
    return session.execute(f"""
        select {', '.join(PAIR_COLUMNS)} from {dbt.this}
        where customer_ref_l in (select customer_ref from _current_profiles)
          and customer_ref_r in (select customer_ref from _current_profiles)
          and not list_contains($changed, customer_ref_l) and not list_contains($changed, customer_ref_r)
    """, {"changed": changed}).df()


def model(dbt, session):
    # replace_all (macros/incremental.sql): the model returns every pair, kept and scored again.
    dbt.config(materialized="incremental", incremental_strategy="replace_all", on_schema_change="sync_all_columns")
    threshold = float(dbt.config.get("fuzzy_match_threshold") or 0.99)
    # Read the staging table once. The current version of each
    # member is chosen in DuckDB: pulling every version with every column into pandas to sort it
    # there cost several times the time and memory at a million customers.
    session.execute(f"""
        create or replace temp table _profile_versions as
        select customer_ref, full_name, birth_date, city, gender, updated_at, profile_version_id,
               timezone('UTC', source_loaded_at) as loaded_at
        from ({dbt.ref("stg_customers__profiles").sql_query()})
    """).fetchall()
    session.execute("""
        create or replace temp table _current_profiles as
        select customer_ref, full_name, birth_date, city, gender
        from _profile_versions
        where full_name is not null and birth_date is not null
        qualify row_number() over (partition by customer_ref order by updated_at desc, profile_version_id desc) = 1
    """).fetchall()
    loaded_at, n_versions = session.execute("select max(loaded_at), count(*) from _profile_versions").fetchall()[0]
    profiles = session.execute("select * from _current_profiles order by customer_ref").df()
    changed = changed_refs(dbt, session)
    if len(profiles) < 2:
        pairs = pd.DataFrame({c: pd.Series(dtype=t) for c, t in PAIR_COLUMNS.items()})  # typed, even when empty
    elif changed is None:
        with splink_connection(session) as con:
            pairs = predict(profiles, DuckDBAPI(con))
    else:
        kept = kept_pairs(dbt, session, changed)
        rescored = profiles[profiles["customer_ref"].isin(changed)]
        if len(rescored) or len(kept):
            with splink_connection(session) as con:
                pairs = predict(profiles, DuckDBAPI(con), rescored, kept)
        else:
            pairs = kept
    for table in ("_profile_versions", "_current_profiles"):
        session.execute(f"drop table {table}").fetchall()
    pairs = pairs.astype(PAIR_COLUMNS).assign(
        is_accepted=lambda p: p["match_probability"] >= threshold,
        profiles_loaded_at=pd.Timestamp(loaded_at) if loaded_at else pd.NaT,
        profile_versions=n_versions,
    )
    return pairs[list(COLUMNS)].astype(COLUMNS).sort_values(["customer_ref_l", "customer_ref_r"]).reset_index(drop=True)
