"""The identity guard's decisions on small hand-made graphs, built by the real dbt models
(int_identifier_quality, int_customer_splits, int_customer_merges) and the real identity step
(identity/duckdb.py) on a DuckDB file holding only their inputs.
Every contact value is drawn at test time: the guard must decide from evidence, not from a list."""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from identity.duckdb import assign_customer_keys
from tests.test_dbt import dbt

# Not the tests that read other models too.
GUARD = ["--select", "int_identifier_quality", "--indirect-selection", "cautious"]
KEYED = ["--select", "int_customer_splits", "int_customer_merges", "--indirect-selection", "cautious"]


@dataclass
class Graph:
    """Records (profiles with their registry name and birth date, receipts) and their identifiers."""

    rng: random.Random
    edges: list[tuple[str, str, str, str]] = field(default_factory=list)
    profiles: list[tuple[str, str, str, str]] = field(default_factory=list)  # ref, card, name, birth date
    serial: int = 0

    def mobile(self) -> str:
        return "+861" + self.rng.choice("35789") + "".join(self.rng.choices(string.digits, k=9))

    def email(self) -> str:
        return "".join(self.rng.choices(string.ascii_lowercase, k=8)) + "@" + self.rng.choice(["qq.com", "163.com"])

    def name(self) -> str:
        return "".join(self.rng.choices(string.ascii_uppercase, k=1) + self.rng.choices(string.ascii_lowercase, k=6))

    def birth_date(self) -> str:
        return f"{self.rng.randint(1950, 2004)}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}"

    def profile(self, name: str | None = None, birth_date: str | None = None, **contacts: str) -> str:
        self.serial += 1
        ref, card = f"M{self.serial:07d}", f"8{self.serial:011d}"
        self.profiles.append((ref, card, name or self.name(), birth_date or self.birth_date()))
        self.edges += [("profile", ref, "customer_ref", ref), ("profile", ref, "loyalty_card", card)]
        self.edges += [("profile", ref, kind, value) for kind, value in contacts.items()]
        return ref

    def receipt(self, phone: str) -> str:
        self.serial += 1
        order = f"pos:R{self.serial:07d}"
        self.edges.append(("order", order, "phone", phone))
        return order


def build(warehouse: Path, graph: Graph, tmp_path: Path, dbt_vars: dict | None = None) -> None:
    with duckdb.connect(str(warehouse)) as con:
        for schema in ("intermediate", "staging"):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(
            "CREATE OR REPLACE TABLE intermediate.int_identifiers_collected "
            "(record_type VARCHAR, record_id VARCHAR, identifier_type VARCHAR, identifier_value VARCHAR, "
            "collected_at TIMESTAMPTZ DEFAULT current_timestamp)"
        )
        con.executemany(
            "INSERT INTO intermediate.int_identifiers_collected (record_type, record_id, identifier_type, identifier_value) "
            "VALUES (?, ?, ?, ?)",
            graph.edges,
        )
        con.execute(
            "CREATE OR REPLACE TABLE staging.stg_customers__profiles "
            "(customer_ref VARCHAR, loyalty_card VARCHAR, full_name VARCHAR, birth_date DATE)"
        )
        con.executemany("INSERT INTO staging.stg_customers__profiles VALUES (?, ?, ?, ?)", graph.profiles)
    dbt_vars_given = ["--vars", json.dumps(dbt_vars)] if dbt_vars else []
    dbt("build", *GUARD, *dbt_vars_given, warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse)) as con:
        assign_customer_keys(con, "1GB")
    dbt("build", *KEYED, *dbt_vars_given, warehouse=warehouse, target=tmp_path / "target")


def test_guard_decisions_on_hand_made_graphs(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    g = Graph(random.Random(seed))
    placeholder, landline, own_phone, dup_email = g.mobile(), g.mobile(), g.mobile(), g.email()
    shop_phone, lucky = g.mobile(), g.mobile()[:5] + g.rng.choice(string.digits) * 9
    allowed, denied = g.mobile(), g.email()
    strangers = [g.profile(phone=placeholder) for _ in range(50)]  # a dummy mobile typed for 50 people
    couple = [g.profile(phone=landline) for _ in range(2)]  # a family landline...
    couple_receipts = [g.receipt(landline) for _ in range(3)]  # ...and receipts carrying only it
    person = g.profile(phone=own_phone)
    person_receipts = [g.receipt(own_phone) for _ in range(30)]  # one person's phone on 30 of their receipts
    born = g.birth_date()
    twice = [
        g.profile(name="Wang Wei", birth_date=born, email=dup_email),  # one person registered twice
        g.profile(name="Wang Wie", birth_date=born, email=dup_email),
    ]
    for _ in range(300):  # ordinary phones: 1-3 receipts each, the distribution a value is weighed against
        phone = g.mobile()
        g.profile(phone=phone)
        for _ in range(g.rng.randint(0, 2)):
            g.receipt(phone)
    shop_receipts = [g.receipt(shop_phone) for _ in range(200)]  # the shop's phone for walk-in customers
    lucky_pair = [g.profile(birth_date=born, phone=lucky) for _ in range(2)]  # pattern, names differ, same birthday
    shop_staff = [g.profile(phone=allowed) for _ in range(3)]  # allow-listed: a shop that shares one number
    g.profile(email=denied)
    warehouse = tmp_path / "guard.duckdb"
    build(warehouse, g, tmp_path, {"identity_guard_allow": [allowed], "identity_guard_deny": [denied]})

    with duckdb.connect(str(warehouse), read_only=True) as con:
        guarded = dict(
            con.execute("SELECT identifier_value, guard_reason FROM intermediate.int_identifier_quality").fetchall()
        )
        keys = dict(
            con.execute(
                "SELECT identifier_value, customer_key FROM intermediate.int_customer_keys_assigned "
                "WHERE identifier_type IN ('customer_ref', 'phone', 'email')"
            ).fetchall()
        )
    print(f"seed {seed}: {guarded}")
    assert guarded == {
        placeholder: "shared_by_people",
        landline: "shared_by_people",
        shop_phone: "frequency_outlier",
        lucky: "placeholder_pattern",
        denied: "deny_list",
    }, seed
    assert len({keys[r] for r in strangers}) == 50 and placeholder not in keys  # never one giant customer
    assert len({keys[r] for r in couple}) == 2 and landline not in keys
    assert len({keys[r] for r in lucky_pair}) == 2
    assert keys[own_phone] == keys[person]  # the person's own phone still links their receipts
    assert keys[twice[0]] == keys[twice[1]] == keys[dup_email]  # a typo in the name is the same person
    assert len({keys[r] for r in shop_staff}) == 1
    with duckdb.connect(str(warehouse), read_only=True) as con:
        keyed_orders = con.execute(
            "SELECT count(*) FROM intermediate.int_customer_keys_assigned k JOIN "
            "intermediate.int_identifiers_collected i USING (identifier_type, identifier_value) "
            "WHERE i.record_id IN (SELECT unnest(?))",
            [couple_receipts + shop_receipts],
        ).fetchall()[0][0]
    assert keyed_orders == 0  # receipts whose only identifier is guarded stay unlinked
    assert len(person_receipts) == 30

    # A later run guards the email that held the two registrations together: the customer splits,
    # one piece keeps the key, the other gets a new one, and the split is recorded.
    build(warehouse, g, tmp_path, {"identity_guard_allow": [allowed], "identity_guard_deny": [denied, dup_email]})
    with duckdb.connect(str(warehouse), read_only=True) as con:
        after = dict(
            con.execute(
                "SELECT identifier_value, customer_key FROM intermediate.int_customer_keys_assigned "
                "WHERE identifier_type = 'customer_ref'"
            ).fetchall()
        )
        splits = con.execute(
            "SELECT split_customer_key, new_customer_key FROM intermediate.int_customer_splits"
        ).fetchall()
        merges = con.execute("SELECT count(*) FROM intermediate.int_customer_merges").fetchall()[0][0]
    old = keys[twice[0]]
    assert sorted([after[twice[0]], after[twice[1]]]).count(old) == 1, (after[twice[0]], after[twice[1]], old)
    new = after[twice[1]] if after[twice[0]] == old else after[twice[0]]
    assert splits == [(old, new)] and merges == 0
    assert all(after[r] == keys[r] for r in strangers + couple + [person])  # everyone else keeps their key


@pytest.mark.parametrize("value", ["", "x"])
def test_string_list_var_is_valid_sql_when_empty(value: str) -> None:
    # The guard's allow and deny lists render as `in (NULL)` when empty: no value matches.
    with duckdb.connect() as con:
        assert con.execute("SELECT ? IN (NULL)", [value]).fetchall()[0][0] is None
