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

import logging

import duckdb
import pandas as pd

PAIR_COLUMNS = {"customer_ref_l": "string", "customer_ref_r": "string", "match_probability": "float64",
                "match_weight": "float64", "full_name_l": "string", "full_name_r": "string",
                "birth_date": "datetime64[us]", "city_l": "string", "city_r": "string"}
# What the next run needs to know which profiles changed since: the newest profile load scored (UTC)
# and how many profile versions there were up to it.
COLUMNS = {**PAIR_COLUMNS, "is_accepted": "bool", "profiles_loaded_at": "datetime64[us]", "profile_versions": "int64"}
REVIEW_THRESHOLD = 0.5
SIZE_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}  # as current_setting() prints them
# One character off: a substitution counted in characters (DuckDB's edit distances count UTF-8
# bytes, so 何明/何铭 would be 3 apart) or a transposition of romanized letters.
ONE_CHARACTER_OFF = (
    "(length(full_name_l) = length(full_name_r) and length(full_name_l) >= 2 and list_count(list_filter("
    "range(1, length(full_name_l) + 1), lambda i: substring(full_name_l, i, 1) <> substring(full_name_r, i, 1))) = 1)"
    " or damerau_levenshtein(full_name_l, full_name_r) <= 1"
)


def settings(n_profiles: int):
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    name_levels = [
        cll.NullLevel("full_name"),
        cll.ExactMatchLevel("full_name").configure(m_probability=0.75),
        cll.CustomLevel(ONE_CHARACTER_OFF, "One character off").configure(m_probability=0.20),
        cll.JaroWinklerLevel("full_name", 0.9).configure(m_probability=0.03),
        cll.ElseLevel().configure(m_probability=0.02),
    ]
    return SettingsCreator(
        link_type="dedupe_only",
        # Until estimated below: one duplicate among all pairs.
        probability_two_random_records_match=2 / (n_profiles * (n_profiles - 1)),
        unique_id_column_name="customer_ref",
        blocking_rules_to_generate_predictions=[block_on("birth_date"), block_on("full_name", "city")],
        comparisons=[
            cl.CustomComparison(output_column_name="full_name", comparison_levels=name_levels),
            cl.ExactMatch("birth_date").configure(m_probabilities=[0.98, 0.02]),
            cl.ExactMatch("city").configure(m_probabilities=[0.90, 0.10]),  # people move
            cl.ExactMatch("gender").configure(m_probabilities=[0.98, 0.02]),
        ],
    )


def splink_connection(session) -> duckdb.DuckDBPyConnection:
    """Splink's own in-memory DuckDB, with half the warehouse connection's memory limit and a spill
    folder beside the warehouse's (DuckDB creates one level of folder, not its parents). Left to
    its defaults it may take 80 % of the machine on top of the warehouse's own limit."""
    limit, temp = session.execute("select current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
    number, unit = limit.split()
    return duckdb.connect(config={"memory_limit": f"{int(float(number) * SIZE_UNITS[unit] / 2)}B",
                                  "temp_directory": f"{temp}-splink"})


def predict(profiles: pd.DataFrame, con: duckdb.DuckDBPyConnection, changed: pd.DataFrame | None = None,
            kept: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pairs of `profiles` at REVIEW_THRESHOLD or above. With `changed` and `kept` (an incremental
    run), only the pairs holding a changed profile, plus the kept pairs scored again: u and the
    prior are measured anew on every current profile each run, and a kept pair's probability must
    be what a full refresh would give it (a pair near the threshold would otherwise link in one
    and not the other). Scoring the kept pairs alone compares only profiles that were paired."""
    from splink import DuckDBAPI, Linker, block_on

    api = DuckDBAPI(con)
    every = api.register(profiles)
    linker = Linker(every, settings(len(profiles)), log_level=logging.WARNING)
    exact_duplicates = profiles.duplicated(["full_name", "birth_date", "city"]).sum()
    if exact_duplicates:  # else Splink cannot estimate the prior and the default above stays
        linker.training.estimate_probability_two_random_records_match(
            [block_on("full_name", "birth_date", "city")], recall=0.5)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=42)
    if changed is None:
        pairs = linker.inference.predict(threshold_match_probability=REVIEW_THRESHOLD).as_pandas_dataframe()
        return pairs.rename(columns={"birth_date_l": "birth_date"})[list(PAIR_COLUMNS)]
    parts = []
    if len(changed):
        parts.append(oriented(linker.inference.predict_between(
            api.register(changed), every, threshold_match_probability=REVIEW_THRESHOLD).as_pandas_dataframe()))
    if kept is not None and len(kept):
        left = profiles[profiles["customer_ref"].isin(kept["customer_ref_l"])]
        right = profiles[profiles["customer_ref"].isin(kept["customer_ref_r"])]
        again = oriented(linker.inference.predict_between(
            api.register(left), api.register(right), threshold_match_probability=REVIEW_THRESHOLD).as_pandas_dataframe())
        parts.append(again.merge(kept[["customer_ref_l", "customer_ref_r"]], on=["customer_ref_l", "customer_ref_r"]))
    pairs = pd.concat(parts) if parts else pd.DataFrame(columns=[*PAIR_COLUMNS, "birth_date_l"])
    return pairs.rename(columns={"birth_date_l": "birth_date"})[list(PAIR_COLUMNS)]


def oriented(pairs: pd.DataFrame) -> pd.DataFrame:
    """predict_between pairs each changed profile with every profile, itself included, and two
    changed profiles both ways round: drop the self-pairs and keep each pair once, the way round
    dedupe's predict gives it (customer_ref_l < customer_ref_r). The comparisons are symmetric."""
    pairs = pairs[pairs["customer_ref_l"] != pairs["customer_ref_r"]].copy()
    swap = pairs["customer_ref_l"] > pairs["customer_ref_r"]
    for left in ("customer_ref_l", "full_name_l", "birth_date_l", "city_l"):
        right = left[:-2] + "_r"
        pairs.loc[swap, [left, right]] = pairs.loc[swap, [right, left]].to_numpy()
    return pairs.drop_duplicates(["customer_ref_l", "customer_ref_r"])


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
            pairs = predict(profiles, con)
    else:
        kept = kept_pairs(dbt, session, changed)
        rescored = profiles[profiles["customer_ref"].isin(changed)]
        if len(rescored) or len(kept):
            with splink_connection(session) as con:
                pairs = predict(profiles, con, rescored, kept)
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
