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

FIGURES = """
select
    (select count(*) from marts.customer_identity_map) as records_mapped,
    (select count(distinct customer_key) from marts.customer_identity_map) as customers,
    (select count(*) from marts.customer_identity_map where matched_by like '%fuzzy_profile_match%') as records_fuzzy_linked,
    (select count(*) from intermediate.int_profiles_matched where is_accepted) as fuzzy_pairs_accepted,
    (select count(*) from intermediate.int_profiles_matched where not is_accepted) as fuzzy_pairs_for_review,
    (select count(*) from intermediate.int_customer_merges) as customer_keys_merged,
    (select count(*) from intermediate.int_customer_splits) as customer_keys_split,
    (select count(*) from intermediate.int_identifier_quality) as identifiers_guarded,
    (select coalesce(max(n), 0) from (select count(*) as n from marts.customer_identity_map group by customer_key))
        as largest_customer_records,
    (select path from intermediate.int_customer_keys_assigned__runs order by run_at desc limit 1) as graph_path,
    (select records_recomputed from intermediate.int_customer_keys_assigned__runs order by run_at desc limit 1)
        as graph_records_recomputed
"""

# Orders and calls are keyed '<source>:<id>' in the map; the truth knows them by their own id.
SCORES = """
with truth as (
    select record_type, source_record_id, min(person_id) as person_id
    from read_csv(?, all_varchar = true)
    group by record_type, source_record_id
    having count(distinct person_id) = 1  -- a shared device belongs to nobody
),
scored as (
    select m.customer_key, t.person_id
    from marts.customer_identity_map as m
    inner join truth as t
        on m.record_type = t.record_type
       and t.source_record_id = case when m.record_type in ('order', 'call')
                                     then regexp_replace(m.record_id, '^[^:]*:', '') else m.record_id end
),
pairs as (
    select
        (select sum(n * (n - 1) / 2) from (select count(*) as n from scored group by customer_key, person_id)) as same,
        (select sum(n * (n - 1) / 2) from (select count(*) as n from scored group by customer_key)) as predicted,
        (select sum(n * (n - 1) / 2) from (select count(*) as n from scored group by person_id)) as actual,
        (select avg(case when k > 1 then 1.0 else 0.0 end)
         from (select count(distinct customer_key) as k from scored group by person_id)) as split,
        (select count(*) from scored) as records_scored
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
        scores = _row(con, SCORES, [str(truth)])
        report |= {k: v if k == "records_scored" or v is None else round(float(v), 6) for k, v in scores.items()}
    return report
