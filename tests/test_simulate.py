"""`crm simulate` on a four-customer warehouse whose answer is worked out by hand, and its refusals."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb
import pytest

from serving.simulate import Scenario, ScenarioError, holdout_needed, simulate, store

AS_OF = dt.date(2025, 6, 30)


@pytest.fixture
def tiny(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "published.duckdb"))
    con.execute("create schema serving; create schema ml; create schema marts")
    con.execute(
        f"create table serving.publication as select 1 as version, 'run' as run_id, date '{AS_OF}' as as_of_date"
    )
    people = [  # key, segment, p, spend, churn, clv, consent, email, region
        ("a", "At Risk", 0.20, 100.0, 0.5, 400.0, True, "a@x", "North"),
        ("b", "At Risk", 0.50, 50.0, 0.2, 100.0, True, "b@x", "South"),
        ("c", "At Risk", 0.30, 80.0, 0.9, 300.0, False, "c@x", "North"),  # no consent
        ("d", "Champions", 0.90, 60.0, 0.1, 900.0, True, "d@x", "North"),
    ]
    con.execute(
        "create table ml.repurchase_scores (customer_key varchar, horizon_days int, purchase_probability double, as_of_date date)"
    )
    con.execute(
        "create table ml.customer_value (customer_key varchar, expected_spend_per_purchase double, predicted_value double, as_of_date date)"
    )
    con.execute("create table ml.rfm_segments (customer_key varchar, segment varchar, as_of_date date)")
    con.execute(
        "create table ml.churn_scores (customer_key varchar, churn_probability double, risk_band varchar, as_of_date date)"
    )
    con.execute("create table ml.customer_lifecycle (customer_key varchar, stage varchar, as_of_date date)")
    con.execute("create table ml.customer_segments (customer_key varchar, segment_label varchar, as_of_date date)")
    con.execute(
        "create table marts.dim_customer (customer_key varchar, valid_from timestamp, valid_to timestamp, is_current boolean, "
        "has_marketing_consent boolean, email varchar, phone_e164 varchar, region varchar)"
    )
    for key, segment, p, spend, churn, clv, consent, email, region in people:
        con.execute("insert into ml.repurchase_scores values (?, 30, ?, ?)", [key, p, AS_OF])
        con.execute("insert into ml.customer_value values (?, ?, ?, ?)", [key, spend, clv, AS_OF])
        con.execute("insert into ml.rfm_segments values (?, ?, ?)", [key, segment, AS_OF])
        con.execute("insert into ml.churn_scores values (?, ?, 'high', ?)", [key, churn, AS_OF])
        con.execute("insert into ml.customer_lifecycle values (?, 'active', ?)", [key, AS_OF])
        con.execute("insert into ml.customer_segments values (?, 'k0', ?)", [key, AS_OF])
        con.execute(
            "insert into marts.dim_customer values (?, timestamp '2025-01-01', null, true, ?, ?, null, ?)",
            [key, consent, email, region],
        )
    # Campaign contacts: a randomized test (offer converts 2 of 4, holdout 1 of 4; one customer in
    # two arms, one window still open) and a targeted send.
    con.execute(
        "create table marts.fct_campaign_contacts (campaign_id varchar, arm varchar, is_control boolean, "
        "is_randomized boolean, window_ends_at timestamptz, excluded_because varchar, converted boolean)"
    )
    closed, open_ = "2025-05-20 00:00:00+00", "2025-07-10 00:00:00+00"
    contacts = [("T", "offer", False, True, closed, None, c) for c in (True, True, False, False)]
    contacts += [("T", "holdout", True, True, closed, None, c) for c in (True, False, False, False)]
    contacts += [
        ("T", None, False, True, closed, "in several arms", True),
        ("T", "offer", False, True, open_, None, True),
        ("V", "vip", False, False, closed, None, True),
        ("V", "not_selected", True, False, closed, None, False),
    ]
    con.executemany("insert into marts.fct_campaign_contacts values (?, ?, ?, ?, ?, ?, ?)", contacts)
    return con


def test_a_scenario_reproduces_the_hand_calculation(tiny: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    scenario = Scenario(target="segment=At Risk", offer_cost=2.0, margin=0.5, response_lift=0.5)
    r = simulate(tiny, scenario)
    # a and b consent (c does not; d is another segment): p 0.2 -> 0.3 and 0.5 -> 0.75
    assert r.audience == 2 and r.response_source == "assumption" and r.as_of_date == AS_OF
    assert math.isclose(r.baseline_conversions, 0.7)
    assert math.isclose(r.incremental_conversions, 0.1 + 0.25)
    assert math.isclose(r.incremental_revenue, 0.1 * 100 + 0.25 * 50)  # 22.5
    assert math.isclose(r.cost, 4.0) and math.isclose(r.profit, 22.5 * 0.5 - 4.0)
    assert r.roi is not None and math.isclose(r.roi, (22.5 * 0.5 - 4.0) / 4.0)
    assert math.isclose(r.revenue_at_risk, 0.5 * 400 + 0.2 * 100)
    assert r.holdout_needed == holdout_needed(0.35, 0.525)
    assert r.incremental_revenue_lo <= r.incremental_revenue <= r.incremental_revenue_hi
    assert math.isclose(
        simulate(tiny, Scenario("segment=At Risk and region=South", 2.0, 0.5, 0.5)).incremental_revenue, 12.5
    )
    assert simulate(tiny, Scenario("clv=300..500", 2.0, 0.5, 0.5)).audience == 1  # a (c has no consent)
    build = duckdb.connect(str(tmp_path / "build.duckdb"))
    free = Scenario("segment=At Risk", 0.0, 0.5, 0.5)
    store(build, free, simulate(tiny, free))  # no cost: no ROI, and the table takes later ones with an ROI
    store(build, scenario, r)
    stored = build.execute(
        "select count(*), any_value(response_source), any_value(inputs) from ml.promotion_scenarios"
    ).fetchall()[0]
    assert stored[0] == 2 and stored[1] == "assumption" and '"response_lift": 0.5' in stored[2]


def test_a_measured_response_adds_the_campaigns_conversion_difference(tiny: duckdb.DuckDBPyConnection) -> None:
    # Campaign T as of AS_OF: offer 2/4 converted, holdout 1/4 (the excluded and the open-window
    # rows left out): +0.25 on each p. a: 0.2 -> 0.45, b: 0.5 -> 0.75.
    r = simulate(tiny, Scenario("segment=At Risk", 2.0, 0.5, None, response_from="T"))
    assert r.response_source == "randomized campaign T:offer"
    assert math.isclose(r.incremental_conversions, 0.5)
    assert math.isclose(r.incremental_revenue, 0.25 * 100 + 0.25 * 50)
    assert math.isclose(r.profit, 37.5 * 0.5 - 4.0)
    assert r.holdout_needed == holdout_needed(0.35, 0.6)
    # The interval also resamples the 8 measured customers: wider than chance alone gives.
    assumed = simulate(tiny, Scenario("segment=At Risk", 2.0, 0.5, 0.25 / 0.35))
    assert (
        r.incremental_revenue_hi - r.incremental_revenue_lo
        > assumed.incremental_revenue_hi - assumed.incremental_revenue_lo
    )


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (Scenario("segment=Nobody", 1.0, 0.5, 0.2), "unknown segment 'Nobody'; known: At Risk, Champions"),
        (Scenario("region=West", 1.0, 0.5, 0.2), "unknown region 'West'"),
        (Scenario("clv=950..", 1.0, 0.5, 0.2), "holds no customer"),
        (Scenario("segment=At Risk", -1.0, 0.5, 0.2), "cannot be negative"),
        (Scenario("segment=At Risk", 1.0, 1.5, 0.2), "--margin"),
        (Scenario("segment=At Risk", 1.0, 0.5, None, response_from="spring"), "no campaign 'spring'"),
        (Scenario("segment=At Risk", 1.0, 0.5, None, response_from="V"), "was not randomized"),
        (Scenario("segment=At Risk", 1.0, 0.5, None, response_from="T:gift"), "arms: offer"),
        (Scenario("segment=At Risk", 1.0, 0.5, 0.2, response_from="T"), "give one of"),
        (Scenario("segment=At Risk", 1.0, 0.5, None), "give one of"),
        (Scenario("segment=At Risk", 1.0, 0.5, 0.2, horizon_days=60), "exist for [30] days"),
        (Scenario("vip=yes", 1.0, 0.5, 0.2), "key one of"),
        (Scenario("segment=At Risk", 1.0, 0.5, 0.0), "adds no conversions"),
    ],
)
def test_a_scenario_that_cannot_be_computed_says_why(
    tiny: duckdb.DuckDBPyConnection, scenario: Scenario, message: str
) -> None:
    with pytest.raises(ScenarioError) as raised:
        simulate(tiny, scenario)
    assert message in str(raised.value)
