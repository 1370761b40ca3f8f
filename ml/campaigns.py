"""Campaign results: each arm against its campaign's control arms, only where arms were randomized.

For every arm of a randomized campaign: conversion rate and revenue per customer in the response
window, their difference from the control group with a 95 % Welch interval and two-sided p-value,
incremental revenue (difference × customers in the arm), incremental profit (× margin − the arm's
cost) and ROI. A campaign that was not randomized gets rows that say so and report no effect; its
naive difference between arms is kept in a column named as not causal. Rows excluded from effects
(customers in several arms, contacts naming no known customer) are counted on every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

MIN_GROUP = 30  # customers per group below which no interval is reported
CONFIDENCE = 0.95

NOT_RANDOMIZED = (
    "arms were not assigned at random (source option randomized: false): a difference between arms "
    "mixes whom the campaign chose with what it did, so no effect is reported"
)


@dataclass(frozen=True)
class Difference:
    estimate: float
    low: float
    high: float
    p_value: float


def welch(treated: np.ndarray, control: np.ndarray) -> Difference:
    """Difference of means with a Welch t interval at CONFIDENCE and its two-sided p-value."""
    n1, n0 = len(treated), len(control)
    v1, v0 = treated.var(ddof=1) / n1, control.var(ddof=1) / n0
    estimate = float(treated.mean() - control.mean())
    se = float(np.sqrt(v1 + v0))
    if se == 0:
        return Difference(estimate, estimate, estimate, 1.0 if estimate == 0 else 0.0)
    df = (v1 + v0) ** 2 / (v1**2 / (n1 - 1) + v0**2 / (n0 - 1))
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return Difference(estimate, estimate - t * se, estimate + t * se, p)


def _arm_row(campaign: pl.DataFrame, arm: str, margin: float) -> dict:
    counted = campaign.filter(pl.col("excluded_because").is_null())
    treated = counted.filter(pl.col("arm") == arm)
    control = counted.filter(pl.col("is_control"))
    row: dict = {
        "campaign_id": campaign["campaign_id"][0],
        "campaign_name": campaign["campaign_name"].drop_nulls().first(),
        "arm": arm,
        "control_arms": ", ".join(sorted(control["arm"].unique().to_list())),
        "is_randomized": bool(campaign["is_randomized"].all()),
        "customers": treated.height,
        "control_customers": control.height,
        "excluded_several_arms": int(campaign["is_in_several_arms"].sum()),
        "excluded_unmatched": int(campaign["customer_key"].is_null().sum()),
        "conversion_rate": treated["converted"].mean() if treated.height else None,
        "control_conversion_rate": control["converted"].mean() if control.height else None,
        "revenue_per_customer": treated["net_revenue"].mean() if treated.height else None,
        "control_revenue_per_customer": control["net_revenue"].mean() if control.height else None,
        "cost": float(treated["offer_cost"].sum()),
    }
    if not row["is_randomized"]:
        naive = None
        if treated.height and control.height:
            naive = float(treated["net_revenue"].to_numpy().mean() - control["net_revenue"].to_numpy().mean())
        return row | {"status": "not randomized", "explanation": NOT_RANDOMIZED, "naive_difference_not_causal": naive}
    if control.is_empty():
        return row | {"status": "no control arm", "explanation": "no customer is in a control arm of the source"}
    if min(treated.height, control.height) < MIN_GROUP:
        return row | {"status": "too few customers", "explanation": f"fewer than {MIN_GROUP} customers in a group"}
    conversion = welch(
        treated["converted"].cast(pl.Float64).to_numpy(), control["converted"].cast(pl.Float64).to_numpy()
    )
    revenue = welch(treated["net_revenue"].to_numpy(), control["net_revenue"].to_numpy())
    n, cost = treated.height, row["cost"]
    profit = revenue.estimate * n * margin - cost
    return row | {
        "status": "measured",
        "explanation": "randomized: the difference from the control group is the arm's effect",
        "conversion_difference": conversion.estimate,
        "conversion_difference_lo": conversion.low,
        "conversion_difference_hi": conversion.high,
        "conversion_p_value": conversion.p_value,
        "revenue_difference": revenue.estimate,
        "revenue_difference_lo": revenue.low,
        "revenue_difference_hi": revenue.high,
        "revenue_p_value": revenue.p_value,
        "incremental_revenue": revenue.estimate * n,
        "incremental_revenue_lo": revenue.low * n,
        "incremental_revenue_hi": revenue.high * n,
        "incremental_profit": profit,
        "incremental_profit_lo": revenue.low * n * margin - cost,
        "incremental_profit_hi": revenue.high * n * margin - cost,
        "roi": profit / cost if cost > 0 else None,
    }


SCHEMA = {
    "campaign_id": pl.String,
    "campaign_name": pl.String,
    "arm": pl.String,
    "control_arms": pl.String,
    "is_randomized": pl.Boolean,
    "status": pl.String,
    "explanation": pl.String,
    "customers": pl.Int64,
    "control_customers": pl.Int64,
    "excluded_several_arms": pl.Int64,
    "excluded_unmatched": pl.Int64,
    "conversion_rate": pl.Float64,
    "control_conversion_rate": pl.Float64,
    "revenue_per_customer": pl.Float64,
    "control_revenue_per_customer": pl.Float64,
    **{
        name: pl.Float64
        for name in (
            "conversion_difference",
            "conversion_difference_lo",
            "conversion_difference_hi",
            "conversion_p_value",
            "revenue_difference",
            "revenue_difference_lo",
            "revenue_difference_hi",
            "revenue_p_value",
            "incremental_revenue",
            "incremental_revenue_lo",
            "incremental_revenue_hi",
            "cost",
            "incremental_profit",
            "incremental_profit_lo",
            "incremental_profit_hi",
            "roi",
            "naive_difference_not_causal",
        )
    },
    "margin": pl.Float64,
}


def campaign_results(contacts: pl.DataFrame, margin: float) -> pl.DataFrame:
    """One row per campaign and non-control arm, from fct_campaign_contacts rows with closed windows."""
    rows = []
    for campaign in contacts.partition_by("campaign_id", maintain_order=True):
        arms = campaign.filter(~pl.col("is_control") & pl.col("arm").is_not_null())["arm"].unique().sort()
        rows += [_arm_row(campaign, arm, margin) | {"margin": margin} for arm in arms]
    return pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)
