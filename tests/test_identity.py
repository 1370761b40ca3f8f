"""Identity resolution scored against the generator's ground truth, and key stability as data arrives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl

from ingestion.generator import GeneratorConfig
from orchestration.run import run_pipeline


def truth_of_records(cfg: GeneratorConfig, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """(record_key, person_id) for every record type the identity map covers."""
    t = cfg.truth
    persons = pl.read_parquet(t / "persons.parquet")
    members = pl.concat([
        persons.select(record_id="member_id", person_id="person_id"),
        persons.filter(pl.col("duplicate_member_id") != "").select(record_id="duplicate_member_id", person_id="person_id"),
    ]).with_columns(record_key="profile:" + pl.col("record_id"))
    orders = pl.read_csv(t / "store_orders.csv").select(record_key="order:pos_receipt_lines:" + pl.col("order_id"), person_id="person_id")
    cookies = pl.read_csv(t / "web_cookies.csv").filter(pl.col("person_id") >= 0).unique()
    cookies = cookies.select(record_key="web_cookie:" + pl.col("cookie"), person_id="person_id")
    calls = pl.read_csv(t / "calls.csv").select(record_key="call:call_center_calls:" + pl.col("call_id"), person_id="person_id")
    accounts = con.sql(
        "SELECT DISTINCT interaction_id, concat('social_account:', platform, ':', handle) AS record_key FROM staging.stg_social__interactions"
    ).pl().join(pl.read_csv(t / "social.csv"), on="interaction_id").group_by("record_key").agg(pl.col("person_id").min())
    return pl.concat([members.select("record_key", "person_id"), orders, cookies, calls, accounts.select("record_key", "person_id")])


def pair_scores(mapped: pl.DataFrame) -> tuple[float, float, float]:
    """Pairwise precision and recall of same-customer decisions, and the share of persons split."""
    pairs = lambda col: (pl.col(col) * (pl.col(col) - 1) / 2).sum()  # noqa: E731
    same = mapped.group_by("customer_key", "person_id").len().select(pairs("len")).item()
    predicted = mapped.group_by("customer_key").len().select(pairs("len")).item()
    actual = mapped.group_by("person_id").len().select(pairs("len")).item()
    split = mapped.group_by("person_id").agg(pl.col("customer_key").n_unique() > 1).select(pl.col("customer_key").mean()).item()
    return same / predicted, same / actual, split


def test_identity_precision_recall_and_stable_keys(sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path) -> None:
    warehouse = tmp_path / "crm.duckdb"
    midway = sample.start + dt.timedelta(days=20)
    run_pipeline(sample_copy[1], warehouse, as_of=midway)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        before = dict(con.execute("SELECT concat(identifier_type, ':', identifier_value), customer_key FROM intermediate.int_customer_keys_assigned").fetchall())

    run_pipeline(sample_copy[1], warehouse)  # the rest of the window arrives
    with duckdb.connect(str(warehouse), read_only=True) as con:
        after = dict(con.execute("SELECT concat(identifier_type, ':', identifier_value), customer_key FROM intermediate.int_customer_keys_assigned").fetchall())
        merges = dict(con.execute("SELECT merged_customer_key, surviving_customer_key FROM intermediate.int_customer_merges").fetchall())
        mapped = con.sql("SELECT record_key, customer_key, matched_by FROM marts.customer_identity_map").pl()
        truth = truth_of_records(sample, con)

    # A key only changes when its customer merged with another known one, and that is recorded.
    kept = before.keys() & after.keys()
    changed = {i: (before[i], after[i]) for i in kept if before[i] != after[i]}
    assert all(merges.get(old) == new for old, new in changed.values()), list(changed.items())[:5]
    assert len(before) > 1000 and len(changed) < 0.01 * len(before)
    assert len(before.keys() - after.keys()) < 0.01 * len(before)  # unlinked shared devices only

    scored = mapped.join(truth, on="record_key", how="inner")
    assert scored.height > 0.95 * mapped.height  # nearly every mapped record has a known truth
    precision, recall, split = pair_scores(scored)
    print(f"identity on {scored.height} records: precision {precision:.4f}, recall {recall:.4f}, persons split {split:.4%}")
    assert precision >= 0.99 and recall >= 0.95 and split < 0.01
