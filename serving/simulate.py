"""`crm simulate`: what a promotion would bring before it runs, as a model-based scenario.

The audience: customers the target rule picks (RFM segment, churn risk band, lifecycle stage,
k-means segment, region, CLV range; `and` between conditions) whose consent in force at the end of
the as-of day allows contact on the channel (the rule of serving/audience.py). Without the offer,
each customer orders within the horizon with their `ml.repurchase_scores` probability p; with it,
with min(1, p × (1 + lift)), `lift` the assumed relative response (`--response-lift`). A converted
customer spends their expected spend per order (`ml.customer_value`). Profit = incremental revenue
× margin − offer cost × audience. The interval: 2,000 bootstrap draws of the audience (customers
resampled) and of each customer's order with and without the offer (Bernoulli), so it holds both
who is in the audience and chance. Revenue at risk: Σ churn probability × predicted 12-month value
of the audience. Holdout: the customers a random control group needs to measure the assumed lift
with a two-sided 5 % test at 80 % power (two proportions).

With `--response-from CAMPAIGN[:ARM]` the response is measured instead: the arm's conversion
difference from its control group in a randomized campaign (marts.fct_campaign_contacts, windows
closed by the as-of date) is added to each customer's p, and every bootstrap draw also resamples
the campaign's treated and control customers, so the interval holds the measurement's own
uncertainty. The campaign's response window stands for the horizon. A campaign that was not
randomized is refused: its difference is not an effect. Every scenario is stored, with its inputs
and `response_source` ('assumption' or the campaign and arm), in `ml.promotion_scenarios` of the
build warehouse (published with the next run).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import polars as pl
from scipy.stats import norm

from serving.audience import CHANNEL_CONTACT
from serving.publish import has_table

BOOTSTRAP_DRAWS, SEED = 2_000, 7
ALPHA, POWER = 0.05, 0.80
# target rule key -> (table, column) of the published version; rows as of the ML as-of date
RULE_COLUMNS = {
    "segment": ("ml.rfm_segments", "segment"),
    "churn_band": ("ml.churn_scores", "risk_band"),
    "stage": ("ml.customer_lifecycle", "stage"),
    "kmeans": ("ml.customer_segments", "segment_label"),
    "region": ("in_force", "region"),
    "clv": ("ml.customer_value", "predicted_value"),
}


class ScenarioError(ValueError):
    """The scenario cannot be computed as asked: say why."""


@dataclass(frozen=True)
class Scenario:
    target: str
    offer_cost: float
    margin: float
    response_lift: float | None = None
    response_from: str | None = None
    horizon_days: int = 30
    channel: str = "email"
    region: str | None = None


@dataclass(frozen=True)
class ScenarioResult:
    scenario_id: str
    as_of_date: dt.date
    audience: int
    baseline_conversions: float
    incremental_conversions: float
    incremental_revenue: float
    incremental_revenue_lo: float
    incremental_revenue_hi: float
    profit: float
    profit_lo: float
    profit_hi: float
    cost: float
    roi: float | None
    revenue_at_risk: float
    holdout_needed: int
    response_source: str


def parse_target(rule: str) -> list[tuple[str, str]]:
    """'segment=At Risk and region=Hubei and clv=100..500' -> [(key, value), ...]."""
    conditions = []
    for part in re.split(r"\s+and\s+", rule.strip()):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in RULE_COLUMNS or not value:
            raise ScenarioError(
                f"target condition {part!r}: write key=value with key one of {', '.join(RULE_COLUMNS)} "
                "(clv=LOW..HIGH), joined by 'and'"
            )
        conditions.append((key, value))
    return conditions


def _where(con: duckdb.DuckDBPyConnection, conditions: list[tuple[str, str]], ml_as_of: dt.date) -> list[str]:
    """SQL filters on the audience frame's columns; unknown values are an error listing the known ones."""
    filters = []
    for key, value in conditions:
        table, column = RULE_COLUMNS[key]
        if key == "clv":
            low, sep, high = value.partition("..")
            try:
                bounds = float(low or "-inf"), float(high or "inf")
            except ValueError:
                raise ScenarioError(f"clv={value!r}: give a range LOW..HIGH of predicted value") from None
            if not sep or bounds[0] > bounds[1]:
                raise ScenarioError(f"clv={value!r}: give a range LOW..HIGH with LOW <= HIGH")
            filters.append(f"predicted_value >= {bounds[0]}" if np.isfinite(bounds[0]) else "true")
            filters.append(f"predicted_value <= {bounds[1]}" if np.isfinite(bounds[1]) else "true")
            continue
        source = (
            f"select distinct {column} from marts.dim_customer where is_current"
            if table == "in_force"
            else f"select distinct {column} from {table} where as_of_date = '{ml_as_of}'"
        )
        known = sorted(str(r[0]) for r in con.execute(source).fetchall() if r[0] is not None)
        if value not in known:
            raise ScenarioError(f"unknown {key} {value!r}; known: {', '.join(known)}")
        filters.append(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'")
    return filters


def audience_frame(con: duckdb.DuckDBPyConnection, scenario: Scenario) -> tuple[pl.DataFrame, dt.date]:
    """The scenario's consented audience with p (repurchase in the horizon), spend, churn and CLV."""
    if scenario.channel not in CHANNEL_CONTACT:
        raise ScenarioError(f"unknown channel {scenario.channel!r}; channels: {', '.join(CHANNEL_CONTACT)}")
    as_of = con.execute("select as_of_date from serving.publication").fetchall()[0][0]
    ml_as_of = None
    if has_table(con, "ml", "repurchase_scores"):
        ml_as_of = con.execute(
            "select max(as_of_date) from ml.repurchase_scores where as_of_date <= ?", [as_of]
        ).fetchall()[0][0]
    if ml_as_of is None:
        raise ScenarioError("no repurchase scores in the published version: run the ML tables first")
    horizons = [r[0] for r in con.execute("select distinct horizon_days from ml.repurchase_scores").fetchall()]
    if scenario.horizon_days not in horizons:
        raise ScenarioError(f"--horizon {scenario.horizon_days}: repurchase scores exist for {sorted(horizons)} days")
    conditions = parse_target(scenario.target) + ([("region", scenario.region)] if scenario.region else [])
    filters = _where(con, conditions, ml_as_of)
    contact = CHANNEL_CONTACT[scenario.channel]
    frame = con.sql(
        f"""
        with in_force as (
            select * from marts.dim_customer
            where valid_from < $as_of + interval 1 day and (valid_to is null or valid_to >= $as_of + interval 1 day)
        ),
        people as (
            select p.customer_key, p.purchase_probability as p, v.expected_spend_per_purchase::double as spend,
                v.predicted_value::double as predicted_value, coalesce(c.churn_probability, 0) as churn_probability,
                r.segment, c.risk_band as churn_band, l.stage, k.segment_label as kmeans, f.region
            from ml.repurchase_scores as p
            join ml.customer_value as v on v.customer_key = p.customer_key and v.as_of_date = p.as_of_date
            join in_force as f on f.customer_key = p.customer_key
            left join ml.rfm_segments as r on r.customer_key = p.customer_key and r.as_of_date = p.as_of_date
            left join ml.churn_scores as c on c.customer_key = p.customer_key and c.as_of_date = p.as_of_date
            left join ml.customer_lifecycle as l on l.customer_key = p.customer_key and l.as_of_date = p.as_of_date
            left join ml.customer_segments as k on k.customer_key = p.customer_key and k.as_of_date = p.as_of_date
            where p.as_of_date = $ml_as_of and p.horizon_days = $horizon
              and f.has_marketing_consent and f.{contact} is not null
        )
        select * from people where {" and ".join(filters)} order by customer_key
        """,
        params={"as_of": as_of, "ml_as_of": ml_as_of, "horizon": scenario.horizon_days},
    ).pl()
    if frame.is_empty():
        raise ScenarioError(f"the target {scenario.target!r} holds no customer with consent on {scenario.channel}")
    return frame, as_of


def holdout_needed(p_base: float, p_offer: float) -> int:
    """Customers per group a two-sided two-proportion test at ALPHA needs for POWER (normal approximation)."""
    if p_offer <= p_base:
        raise ScenarioError("the assumed response adds no conversions: nothing to measure")
    z = norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)
    variance = p_base * (1 - p_base) + p_offer * (1 - p_offer)
    return int(np.ceil(z**2 * variance / (p_offer - p_base) ** 2))


@dataclass(frozen=True)
class Response:
    """How the offer changes each customer's chance to order: an assumed relative lift, or the
    conversion difference measured on a randomized campaign's customers (kept to resample)."""

    source: str
    lift: float | None = None
    treated: np.ndarray | None = None  # converted (0/1) per customer of the measured arm
    control: np.ndarray | None = None

    def offered(self, p: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """P(order) with the offer; with `rng`, from one bootstrap draw of the measurement."""
        if self.lift is not None:
            return np.minimum(1.0, p * (1 + self.lift))
        assert self.treated is not None and self.control is not None
        treated, control = self.treated, self.control
        if rng is not None:
            treated = treated[rng.integers(0, len(treated), len(treated))]
            control = control[rng.integers(0, len(control), len(control))]
        return np.clip(p + (treated.mean() - control.mean()), 0.0, 1.0)


def measured_response(con: duckdb.DuckDBPyConnection, ref: str, as_of: dt.date) -> Response:
    """The response measured on `ref` (CAMPAIGN or CAMPAIGN:ARM), a randomized campaign of the published version."""
    campaign, _, arm = ref.partition(":")
    rows = con.sql(
        "select arm, is_control, is_randomized, cast(converted as int) as converted from marts.fct_campaign_contacts "
        "where campaign_id = ? and excluded_because is null and window_ends_at <= cast(? as date)",
        params=[campaign, as_of],
    ).pl()
    if rows.is_empty():
        known = [
            r[0]
            for r in con.execute("select distinct campaign_id from marts.fct_campaign_contacts order by 1").fetchall()
        ]
        raise ScenarioError(
            f"--response-from {ref}: no campaign {campaign!r} with a closed response window as of {as_of}; "
            f"campaigns: {', '.join(known) or 'none'}"
        )
    if not rows["is_randomized"].all():
        raise ScenarioError(
            f"--response-from {ref}: campaign {campaign} was not randomized, so the difference between its arms is "
            "not an effect; give --response-lift and the scenario is labelled an assumption"
        )
    arms = sorted(rows.filter(~pl.col("is_control"))["arm"].unique().to_list())
    if not arm and len(arms) == 1:
        arm = arms[0]
    if arm not in arms:
        raise ScenarioError(
            f"--response-from {ref}: name one arm of {campaign} as CAMPAIGN:ARM; arms: {', '.join(arms)}"
        )
    control = rows.filter(pl.col("is_control"))["converted"].to_numpy()
    if len(control) == 0:
        raise ScenarioError(f"--response-from {ref}: campaign {campaign} has no control group to measure against")
    treated = rows.filter(pl.col("arm") == arm)["converted"].to_numpy()
    return Response(
        f"randomized campaign {campaign}:{arm}", treated=treated.astype(float), control=control.astype(float)
    )


def _response(con: duckdb.DuckDBPyConnection, scenario: Scenario) -> Response:
    if (scenario.response_from is None) == (scenario.response_lift is None):
        raise ScenarioError("give one of --response-lift (an assumption) or --response-from (a randomized campaign)")
    if scenario.response_from is not None:
        as_of = con.execute("select as_of_date from serving.publication").fetchall()[0][0]
        return measured_response(con, scenario.response_from, as_of)
    if scenario.response_lift is None or scenario.response_lift <= -1:
        raise ScenarioError("--response-lift must be above -1 (a relative change of the conversion rate)")
    return Response("assumption", lift=scenario.response_lift)


def simulate(con: duckdb.DuckDBPyConnection, scenario: Scenario) -> ScenarioResult:
    """The scenario's expected effect, its interval and the holdout to measure it, from the published version."""
    response = _response(con, scenario)
    if scenario.offer_cost < 0:
        raise ScenarioError(f"--offer-cost {scenario.offer_cost}: a cost cannot be negative")
    if not 0 < scenario.margin <= 1:
        raise ScenarioError(f"--margin {scenario.margin}: the share of revenue kept, above 0 and at most 1")
    frame, as_of = audience_frame(con, scenario)
    p = frame["p"].to_numpy()
    offered = response.offered(p)
    spend = frame["spend"].to_numpy()
    n, cost = len(p), scenario.offer_cost * len(p)
    incremental = float((offered - p).sum())
    revenue = float(((offered - p) * spend).sum())
    rng = np.random.default_rng(SEED)
    draws = np.empty(BOOTSTRAP_DRAWS)
    for b in range(BOOTSTRAP_DRAWS):
        who = rng.integers(0, n, n)
        with_offer = offered[who] if response.lift is not None else response.offered(p[who], rng)
        draws[b] = float(((rng.random(n) < with_offer).astype(float) - (rng.random(n) < p[who])) @ spend[who])
    lo, hi = np.quantile(draws, [0.025, 0.975])
    profit = revenue * scenario.margin - cost
    return ScenarioResult(
        scenario_id=uuid.uuid4().hex[:12],
        as_of_date=as_of,
        audience=n,
        baseline_conversions=float(p.sum()),
        incremental_conversions=incremental,
        incremental_revenue=revenue,
        incremental_revenue_lo=float(lo),
        incremental_revenue_hi=float(hi),
        profit=profit,
        profit_lo=float(lo) * scenario.margin - cost,
        profit_hi=float(hi) * scenario.margin - cost,
        cost=cost,
        roi=profit / cost if cost > 0 else None,
        revenue_at_risk=float((frame["churn_probability"] * frame["predicted_value"]).sum()),
        holdout_needed=holdout_needed(float(p.mean()), float(offered.mean())),
        response_source=response.source,
    )


def store(con: duckdb.DuckDBPyConnection, scenario: Scenario, result: ScenarioResult) -> None:
    """Append the scenario, its inputs and its result to ml.promotion_scenarios (the build warehouse)."""
    row = {**asdict(result), "inputs": json.dumps(asdict(scenario)), "created_at": dt.datetime.now(dt.UTC)}
    frame = pl.DataFrame([row]).with_columns(pl.col("roi").cast(pl.Float64))  # None when the offer costs nothing
    con.execute("create schema if not exists ml")
    con.register("scenario_row", frame.to_arrow())
    con.execute("create table if not exists ml.promotion_scenarios as select * from scenario_row limit 0")
    con.execute("insert into ml.promotion_scenarios by name select * from scenario_row")
    con.unregister("scenario_row")
