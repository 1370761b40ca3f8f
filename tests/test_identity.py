"""Identity resolution scored against the generator's ground truth, and key stability as data arrives."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from ingestion.generator import GeneratorConfig, generate, sources_file_for
from orchestration.identity_report import identity_report
from tests.conftest import Grown

SCORED = ("records_scored", "pairwise_precision", "pairwise_recall", "persons_split_share")
KEYS = (
    "SELECT concat(identifier_type, ':', identifier_value), customer_key FROM intermediate.int_customer_keys_assigned"
)


def test_identity_precision_recall_and_stable_keys(grown: Grown) -> None:
    with duckdb.connect(str(grown.midway), read_only=True) as con:
        before = dict(con.execute(KEYS).fetchall())
    with duckdb.connect(str(grown.warehouse), read_only=True) as con:
        after = dict(con.execute(KEYS).fetchall())
        merges = dict(
            con.execute(
                "SELECT merged_customer_key, surviving_customer_key FROM intermediate.int_customer_merges"
            ).fetchall()
        )
        fuzzy_only = con.execute(
            "SELECT count(*) FROM marts.customer_identity_map WHERE matched_by = 'fuzzy_profile_match'"
        ).fetchall()[0][0]

    # A key only changes when its customer merged with another known one, and that is recorded.
    kept = before.keys() & after.keys()
    changed = {i: (before[i], after[i]) for i in kept if before[i] != after[i]}
    assert all(merges.get(old) == new for old, new in changed.values()), list(changed.items())[:5]
    assert len(before) > 1000 and len(changed) < 0.01 * len(before)
    assert len(before.keys() - after.keys()) < 0.01 * len(before)  # unlinked shared devices only

    # Typed even before any merge (the midway is the first build: it has none).
    for warehouse in (grown.midway, grown.warehouse):
        with duckdb.connect(str(warehouse), read_only=True) as con:
            types = con.execute(
                "SELECT table_name, data_type FROM information_schema.columns WHERE column_name IN "
                "('previous_customer_key', 'merged_customer_key')"
            ).fetchall()
        assert sorted(types) == [("int_customer_keys_assigned", "VARCHAR"), ("int_customer_merges", "VARCHAR")], (
            warehouse
        )

    # The planted re-registrations with a new phone and card and no email are found by Splink alone.
    assert fuzzy_only >= 5

    # The figures against the generator's truth are in the identity map's asset metadata.
    figures = {k.removeprefix("identity/"): v for k, v in grown.identity_metadata.items() if k.startswith("identity/")}
    print(f"identity: {figures}")
    assert figures["records_scored"] > 0.95 * figures["records_mapped"]  # nearly every mapped record has a known truth
    # Over 45 days a shop's phone is on a handful of walk-in receipts, as often as a customer's own phone on
    # theirs: no frequency bound can tell them apart (docs/identity.md), and those receipts link
    # (and split their people off). The 10,000-customer year (test_identity_on_a_year_of_ten_thousand_customers)
    # meets the bar of 0.99.
    assert figures["pairwise_precision"] >= 0.95 and figures["pairwise_recall"] >= 0.95
    assert figures["persons_split_share"] < 0.02
    truth = grown.sources.parent / "truth" / "identity.csv"
    with duckdb.connect(str(grown.warehouse), read_only=True) as con:
        assert_planted_shared_contacts_guarded(con, truth.parent, kinds=("placeholder", "household"))
        # The runs kept the truth as parsed, stamped with its file; read-only, the figures parse it again, alike.
        (stamp,) = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'identity_truth'").fetchall()[0]
        assert stamp == f"{truth.resolve()} {truth.stat().st_size} {truth.stat().st_mtime_ns}"
        again = identity_report(con, truth)
    assert {k: again[k] for k in SCORED} == {k: figures[k] for k in SCORED}
    assert figures["identifiers_guarded"] >= 15 and figures["largest_customer_records"] < 100
    # The second run recomputed only the components its new edges touched, with the same quality.
    assert (
        figures["graph_path"] == "incremental" and 0 < figures["graph_records_recomputed"] < figures["records_mapped"]
    )


def assert_planted_shared_contacts_guarded(con: duckdb.DuckDBPyConnection, truth: Path, kinds: tuple[str, ...]) -> None:
    """Every contact value the generator planted as shared by several people (truth/shared_contacts.csv)
    is in int_identifier_quality."""
    planted = con.execute(f"""
        SELECT kind, CASE WHEN value LIKE '%@%' THEN value
                          WHEN value LIKE '%-%' THEN '+86' || ltrim(replace(value, '-', ''), '0')
                          ELSE '+86' || value END AS value
        FROM read_csv('{truth / "shared_contacts.csv"}', all_varchar = true)
    """).fetchall()
    guarded = {v for (v,) in con.execute("SELECT identifier_value FROM intermediate.int_identifier_quality").fetchall()}
    wanted = [(kind, value) for kind, value in planted if kind.startswith(kinds)]
    assert wanted and all(value in guarded for _, value in wanted), [w for w in wanted if w[1] not in guarded]


@pytest.mark.slow
def test_identity_on_a_year_of_ten_thousand_customers(tmp_path: Path) -> None:
    """The issue's bar on the default sample (10,000 persons over a year, every kind of shared
    contact planted): precision >= 0.99, recall >= 0.97, at most 0.5 % of keys holding two persons."""
    from orchestration.run import run_pipeline
    from orchestration.settings import Settings

    cfg = GeneratorConfig(out=tmp_path, customers=10_000, days=365, seed=42)
    generate(cfg)
    sources = sources_file_for(cfg.extracts, tmp_path / "sources.yml", cfg.start)
    run_pipeline(Settings.load(sources, tmp_path / "crm.duckdb"))
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        figures = identity_report(con, cfg.truth / "identity.csv")
        mixed = con.execute(f"""
            WITH truth AS (SELECT record_type, source_record_id, min(person_id) AS person_id
                           FROM read_csv('{cfg.truth / "identity.csv"}', all_varchar = true) GROUP BY ALL
                           HAVING count(DISTINCT person_id) = 1)
            SELECT avg(CASE WHEN persons > 1 THEN 1.0 ELSE 0.0 END) FROM (
                SELECT m.customer_key, count(DISTINCT t.person_id) AS persons
                FROM marts.customer_identity_map AS m JOIN truth AS t ON m.record_type = t.record_type
                 AND t.source_record_id = CASE WHEN m.record_type IN ('order', 'call')
                                               THEN regexp_replace(m.record_id, '^[^:]*:', '') ELSE m.record_id END
                GROUP BY m.customer_key)
        """).fetchall()[0][0]
        assert_planted_shared_contacts_guarded(con, cfg.truth, kinds=("placeholder", "household", "shop"))
    print(f"identity at 10,000 persons: {figures}, keys holding two persons: {mixed:.4%}")
    assert figures["pairwise_precision"] >= 0.99 and figures["pairwise_recall"] >= 0.97
    assert mixed <= 0.005


@pytest.mark.slow
def test_giant_customer_alarm_fails_the_build_and_names_the_identifier(
    sample_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    """A placeholder allow-listed by mistake glues its people into one customer: the alarm (a dbt
    test of customer_identity_map) fails the build with the customer and the value, and nothing
    is published. On a daily run too, where the alarm weighs only the customers the run changed."""
    import yaml

    from orchestration.run import RunFailed, run_pipeline
    from orchestration.settings import Settings

    extracts, sources = sample_copy
    with duckdb.connect() as con:
        value = con.execute(f"""
            SELECT '+86' || value FROM read_csv('{extracts.parent / "truth" / "shared_contacts.csv"}', all_varchar = true)
            WHERE kind = 'placeholder_phone' ORDER BY persons::INTEGER DESC LIMIT 1""").fetchall()[0][0]
    warehouse = tmp_path / "crm.duckdb"
    run_pipeline(Settings.load(sources, warehouse))  # guarded: built and published
    published = sorted((tmp_path / "published").rglob("*.duckdb"))
    assert published
    (tmp_path / "fresh").mkdir()
    doc = yaml.safe_load(sources.read_text())
    doc["identity"] = {"guard_allow": [value]}
    sources.write_text(yaml.safe_dump(doc))
    # The next daily run, then a first build with the mistake.
    for build, before in ((warehouse, published), (tmp_path / "fresh" / "crm.duckdb", [])):
        with pytest.raises(
            RunFailed, match=rf"assert_no_giant_customer(.|\n)*phone {re.escape(value)} \(\d+ records\)"
        ) as failed:
            run_pipeline(Settings.load(sources, build))
        print(failed.value)
        assert sorted((build.parent / "published").rglob("*.duckdb")) == before
