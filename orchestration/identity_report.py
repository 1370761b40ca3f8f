"""Figures of the identity resolution, for the asset metadata of marts/customer_identity_map.

Always: records mapped, customers, records linked by the fuzzy step, merges and splits, pairs
waiting for review, contact values guarded as shared, the largest customer (records, names), and
the path the identity graph took (full, or incremental over the records it recomputed).
With a labelled truth (sources file `identity_truth`: record_type, source_record_id, person_id):
pairwise precision and recall of same-customer decisions over the mapped records that the truth
knows, and the share of true persons split over several customer keys.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

# One pass over the map (it holds a row per order, call and cookie): grouped by customer once.
FIGURES = """
with customers as (
    select
        customer_key,
        count(*) as records,
        count(*) filter (where matched_by like '%fuzzy_profile_match%') as fuzzy_linked
    from marts.customer_identity_map
    group by customer_key
),
mapped as (
    select
        cast(coalesce(sum(records), 0) as bigint) as records_mapped,
        count(customer_key) as customers,
        cast(coalesce(sum(fuzzy_linked), 0) as bigint) as records_fuzzy_linked,
        coalesce(max(records), 0) as largest_customer_records
    from customers
)
select
    records_mapped,
    customers,
    records_fuzzy_linked,
    (select count(*) from intermediate.int_profiles_matched where is_accepted) as fuzzy_pairs_accepted,
    (select count(*) from intermediate.int_profiles_matched where not is_accepted) as fuzzy_pairs_for_review,
    (select count(*) from intermediate.int_customer_merges) as customer_keys_merged,
    (select count(*) from intermediate.int_customer_splits) as customer_keys_split,
    (select count(*) from intermediate.int_identifier_quality) as identifiers_guarded,
    largest_customer_records,
    (select path from intermediate.int_customer_keys_assigned__runs order by run_at desc limit 1) as graph_path,
    (select records_recomputed from intermediate.int_customer_keys_assigned__runs order by run_at desc limit 1)
        as graph_records_recomputed
from mapped
"""

# Orders and calls are keyed '<source>:<id>' in the map; the truth knows them by their own id.
# The scored records are grouped once by (customer, person); the other counts come from those cells.
TRUTH_TABLE = "intermediate.identity_truth"
TRUTH = """
select record_type, source_record_id, min(person_id) as person_id
from read_csv(?, all_varchar = true)
group by record_type, source_record_id
having count(distinct person_id) = 1  -- a shared device belongs to nobody
"""
SCORES = """
with cells as (
    select m.customer_key, t.person_id, count(*) as n
    from marts.customer_identity_map as m
    inner join {truth} as t
        on m.record_type = t.record_type
       and t.source_record_id = case when m.record_type in ('order', 'call')
                                     then substr(m.record_id, strpos(m.record_id, ':') + 1) else m.record_id end
    group by m.customer_key, t.person_id
),
by_customer as (select sum(n) as n from cells group by customer_key),
by_person as (select sum(n) as n, count(customer_key) as keys from cells group by person_id),
pairs as (
    select
        (select sum(n * (n - 1) / 2) from cells) as same,
        (select sum(n * (n - 1) / 2) from by_customer) as predicted,
        (select sum(n * (n - 1) / 2) from by_person) as actual,
        (select avg(case when keys > 1 then 1.0 else 0.0 end) from by_person) as split,
        (select cast(coalesce(sum(n), 0) as bigint) from cells) as records_scored
)
select
    records_scored,
    case when predicted > 0 then same / predicted end as pairwise_precision,
    case when actual > 0 then same / actual end as pairwise_recall,
    split as persons_split_share
from pairs
"""


def _row(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> dict[str, float | int | None]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchall()[0]))


def identity_report(con: duckdb.DuckDBPyConnection, truth: Path | None) -> dict[str, float | int | str | None]:
    report: dict = _row(con, FIGURES)
    if truth is not None and not truth.exists():
        report["identity_truth"] = f"not scored: {truth} does not exist"
    elif truth is not None:
        scores = _row(con, SCORES.format(truth=_parsed_truth(con, truth)))
        report |= {k: v if k == "records_scored" or v is None else round(float(v), 6) for k, v in scores.items()}
    return report


def _parsed_truth(con: duckdb.DuckDBPyConnection, truth: Path) -> str:
    """The truth as a relation: on a writable warehouse a table parsed once per version of the file
    (its path, size and time in the table's comment; at a million customers parsing was most of the
    figures' daily time), else a temporary table of this connection."""
    stat = truth.stat()
    stamp = f"{truth.resolve()} {stat.st_size} {stat.st_mtime_ns}"
    if con.execute("select current_setting('access_mode')").fetchall()[0][0] == "read_only":
        con.execute(f"create or replace temp table identity_truth as {TRUTH}", [str(truth)]).fetchall()
        return "identity_truth"
    schema, table = TRUTH_TABLE.split(".")
    kept = con.execute(
        "select comment from duckdb_tables() where schema_name = ? and table_name = ?", [schema, table]
    ).fetchall()
    if kept != [(stamp,)]:
        con.execute(f"create or replace table {TRUTH_TABLE} as {TRUTH}", [str(truth)]).fetchall()
        con.execute(f"comment on table {TRUTH_TABLE} is '{stamp.replace(chr(39), chr(39) * 2)}'").fetchall()
    return TRUTH_TABLE
