"""Identity resolution scored against the generator's ground truth, and key stability as data arrives."""

from __future__ import annotations

import duckdb

from tests.conftest import Grown

KEYS = "SELECT concat(identifier_type, ':', identifier_value), customer_key FROM intermediate.int_customer_keys_assigned"


def test_identity_precision_recall_and_stable_keys(grown: Grown) -> None:
    with duckdb.connect(str(grown.midway), read_only=True) as con:
        before = dict(con.execute(KEYS).fetchall())
    with duckdb.connect(str(grown.warehouse), read_only=True) as con:
        after = dict(con.execute(KEYS).fetchall())
        merges = dict(con.execute("SELECT merged_customer_key, surviving_customer_key FROM intermediate.int_customer_merges").fetchall())
        fuzzy_only = con.execute("SELECT count(*) FROM marts.customer_identity_map WHERE matched_by = 'fuzzy_profile_match'").fetchall()[0][0]

    # A key only changes when its customer merged with another known one, and that is recorded.
    kept = before.keys() & after.keys()
    changed = {i: (before[i], after[i]) for i in kept if before[i] != after[i]}
    assert all(merges.get(old) == new for old, new in changed.values()), list(changed.items())[:5]
    assert len(before) > 1000 and len(changed) < 0.01 * len(before)
    assert len(before.keys() - after.keys()) < 0.01 * len(before)  # unlinked shared devices only

    # Typed even before any merge (the midway is the first build: it has none).
    for warehouse in (grown.midway, grown.warehouse):
        with duckdb.connect(str(warehouse), read_only=True) as con:
            types = con.execute("SELECT table_name, data_type FROM information_schema.columns WHERE column_name IN "
                                "('previous_customer_key', 'merged_customer_key')").fetchall()
        assert sorted(types) == [("int_customer_keys_assigned", "VARCHAR"), ("int_customer_merges", "VARCHAR")], warehouse

    # The planted re-registrations with a new phone and card and no email are found by Splink alone.
    assert fuzzy_only >= 5

    # The figures against the generator's truth are in the identity map's asset metadata.
    figures = {k.removeprefix("identity/"): v for k, v in grown.identity_metadata.items() if k.startswith("identity/")}
    print(f"identity: {figures}")
    assert figures["records_scored"] > 0.95 * figures["records_mapped"]  # nearly every mapped record has a known truth
    assert figures["pairwise_precision"] >= 0.99 and figures["pairwise_recall"] >= 0.95
    assert figures["persons_split_share"] < 0.01
