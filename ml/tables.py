"""Each ML table: what it reads from the marts, how it is built, what it writes.

`build(con, name, ctx, config)` computes one table as of `ctx.as_of` from the marts, then writes
`ml.<name>` (rows for that as-of date), its metrics to `ml.model_metrics` and its artifact and card
under models/. Tables built together share one `MartInputs`: the marts are read, and the customer
features computed, once for all of them. The three fitted tables (churn, segments, value) score
with a model fitted in their last `refit_days` days when there is one (ml.registry.fitted_model).
`build_tables` builds several in two lanes side by side. The Dagster asset in
orchestration/ml_assets.py is a thin wrapper over it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import cast

import duckdb
import polars as pl

from ml import data
from ml.baskets import association_rules, encode, frequent_itemsets
from ml.campaigns import campaign_results
from ml.churn import ChurnModel, churn_scores
from ml.clv import customer_value
from ml.config import BasketConfig, MLConfig
from ml.features import FEATURES, customer_features
from ml.forecast import ForecastResult, forecast_sales
from ml.lifecycle import HEALTH_WEIGHTS, health_scores, lifecycle_stages
from ml.registry import Fitted, fitted_model, save_artifact, warehouse_of, write_metrics, write_table
from ml.repurchase import RepurchaseModel, repurchase_scores
from ml.rfm import SEGMENT_GRID, rfm_table
from ml.run_context import NotEnoughHistory, RunContext
from ml.segments import SEGMENT_FEATURES, SegmentModel, segment_customers
from ml.triggers import TRIGGERS, due
from ml.uplift import UpliftFit, counted, fit_uplift, uplift_scores


@dataclass
class TableOutput:
    frame: pl.DataFrame
    metrics: dict[str, float]
    artifact: object | None = None
    card: dict = field(default_factory=dict)
    evaluated_on: str = ""
    reused: Fitted | None = None  # the earlier fit it scored with, if it did not fit


def _model_age(reused: Fitted | None, ctx: RunContext) -> dict[str, float]:
    return {"model_age_days": float((ctx.as_of - reused.as_of).days) if reused else 0.0}


class MartInputs:
    """The customer-level marts as of one date, each read on first use (through the connection of
    the table that needs it) and then shared by the tables built with it: six tables read the same
    orders, four the same touches and customers, and four use the customer features as of the date
    (repeating them was a third of the ML stage at a million customers). The order lines
    of the association rules are not kept: only that table reads them, and 10 million lines at a
    million customers would sit beside every later table's frames."""

    def __init__(self, as_of: dt.date):
        self.as_of = as_of
        self._frames: dict[str, pl.DataFrame] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _frame(self, name: str, read: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        # One lock per frame: a table of the other lane asking for it meanwhile waits for this read
        # instead of reading it again; the features lock, then the marts', always in that order.
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._frames:
                self._frames[name] = read()
        return self._frames[name]

    def orders(self, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
        return self._frame("orders", lambda: data.orders(con, self.as_of))

    def interactions(self, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
        return self._frame("interactions", lambda: data.interactions(con, self.as_of))

    def customers(self, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
        return self._frame("customers", lambda: data.customers(con, self.as_of))

    def features(self, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
        return self._frame(
            "features",
            lambda: customer_features(self.orders(con), self.interactions(con), self.customers(con), self.as_of),
        )


def build_rfm_segments(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Recency, frequency, monetary scores (quintiles) and the 11-segment RFM map, per customer who bought."""
    frame = rfm_table(inputs.orders(con), ctx.as_of)
    shares = frame["segment"].value_counts(normalize=True)
    metrics = {"customers": float(frame.height), **{f"share/{s}": float(v) for s, v in shares.iter_rows()}}
    return TableOutput(
        frame,
        metrics,
        card={"segment_grid": SEGMENT_GRID, "scores": "1 + floor(5 (rank - 1) / n), ties share the lowest rank"},
    )


def build_churn_scores(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Churn probability, risk band and top reasons per active customer; metrics next to a recency-only baseline."""
    reused = fitted_model(con, "churn_scores", ctx, cfg.churn, ChurnModel)
    result = churn_scores(
        inputs.orders(con),
        inputs.interactions(con),
        inputs.customers(con),
        ctx.as_of,
        cfg.churn,
        inputs.features(con),
        reused.artifact if reused else None,
    )
    fit = result.fitted
    metrics = {
        **fit.metrics,
        **{f"baseline/{k}": v for k, v in fit.baseline_metrics.items()},
        **_model_age(reused, ctx),
    }
    card = {
        "features": FEATURES,
        "config": cfg.churn,
        "training_cutoffs": fit.training_cutoffs,
        "held_out_cutoff": fit.held_out_cutoff,
        "training_rows": fit.training_rows,
        "model": "StandardScaler + LogisticRegression, sigmoid-calibrated on the latest training cut-off",
        "metrics": fit.metrics,
        "baseline (recency only)": fit.baseline_metrics,
    }
    return TableOutput(result.scores, metrics, fit, card, evaluated_on=f"cut-off {fit.held_out_cutoff}", reused=reused)


def build_repurchase_scores(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """P(an order in the next 30 / 90 days) per active customer and horizon, with top reasons; BG/NBD's where it is better."""
    reused = fitted_model(con, "repurchase_scores", ctx, cfg.repurchase, RepurchaseModel)
    value = fitted_model(con, "customer_value", ctx, cfg.value, dict)  # its BG/NBD, not a second fit
    frame, fit = repurchase_scores(
        inputs.orders(con),
        inputs.interactions(con),
        inputs.customers(con),
        ctx.as_of,
        cfg.repurchase,
        inputs.features(con),
        reused.artifact if reused else None,
        value.artifact["bgnbd"] if value else None,
    )
    metrics: dict[str, float] = _model_age(reused, ctx)
    for h in fit.horizons:
        for name, values in (("model", h.metrics), ("bgnbd", h.bgnbd_metrics), ("recency", h.recency_metrics)):
            metrics |= {f"h{h.horizon_days}/{name}/{k}": v for k, v in values.items()}
        metrics[f"h{h.horizon_days}/published_is_model"] = float(h.beats_bgnbd)
    card = {
        "features": FEATURES,
        "config": cfg.repurchase,
        "model": "the churn model's recipe per horizon with HistGradientBoostingClassifier, sigmoid-calibrated; "
        "P(repurchase) = 1 - P(no order in the horizon)",
        "held_out_cutoffs": {h.horizon_days: h.churn.held_out_cutoff for h in fit.horizons},
        "published": {h.horizon_days: "model" if h.beats_bgnbd else "bgnbd" for h in fit.horizons},
    }
    cutoffs = ", ".join(f"{h.horizon_days} d: cut-off {h.churn.held_out_cutoff}" for h in fit.horizons)
    return TableOutput(frame, metrics, fit, card, evaluated_on=cutoffs, reused=reused)


def build_sales_forecast(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Weekly net revenue and orders forecasts with 80/95 % intervals: total, channels, regions (reconciled) and top products."""
    f = cfg.forecast
    events = data.calendar_days(Path(f.calendar) if f.calendar else None)
    products = data.weekly_product_sales(con, ctx.as_of, f.product_level)
    if f.product_level == "category" and products.filter(pl.col("product") != "unknown")["product"].n_unique() < 2:
        f = replace(f, product_level="sku")  # extracts without categories (e.g. Online Retail): forecast the top SKUs
        products = data.weekly_product_sales(con, ctx.as_of, "sku")
    earlier = fitted_model(con, "sales_forecast", ctx, f, ForecastResult)
    result = forecast_sales(
        data.weekly_sales(con, ctx.as_of), products, events, f, earlier.artifact if earlier else None
    )
    card = {
        "config": f,
        "models": "statsforecast AutoETS (no season), AutoTheta, MSTL (two yearly cycles); derived OrdersxAOV "
        "(net revenue) and Combined (mean of the seasonal models); baselines Naive and SeasonalNaive",
        "seasonal": result.seasonal,
        "backtest_windows": result.windows,
        "reconciliation": "top-down with forecast proportions: channels and regions scaled to the total",
        "event_effects": result.event_effects,
    }
    first = cast(dt.date, result.backtest["cutoff"].min())
    return TableOutput(result.forecasts, result.metrics, result, card, evaluated_on=f"rolling origins from {first}")


def build_triggered_audiences(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Browse- and cart-abandonment follow-ups due now: customers whose session had no order within the window."""
    t = cfg.triggers
    frame = due(data.abandoned_sessions(con, ctx.as_of, t.lookback_days), t.within_hours)
    counts = dict(frame.group_by("trigger").len().iter_rows())
    metrics = {f"customers/{name}": float(counts.get(name, 0)) for name in TRIGGERS}
    return TableOutput(frame, metrics, card={"config": t})


def build_campaign_results(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Each campaign arm against its control group: differences with 95 % intervals, profit, ROI (randomized only)."""
    contacts = data.campaign_contacts(con, ctx.as_of)
    if contacts.is_empty():
        raise NotEnoughHistory("no campaign contact has a closed response window as of this date")
    frame = campaign_results(contacts, cfg.campaigns.margin)
    measured = frame.filter(pl.col("status") == "measured")
    metrics = {
        "campaigns": float(frame["campaign_id"].n_unique()),
        "arms_measured": float(measured.height),
        "arms_not_randomized": float((frame["status"] == "not randomized").sum()),
        **{
            f"{r['campaign_id']}/{r['arm']}/revenue_difference": r["revenue_difference"]
            for r in measured.iter_rows(named=True)
        },
    }
    return TableOutput(frame, metrics, card={"config": cfg.campaigns, "interval": "Welch t, 95 %"})


def build_uplift_scores(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Per customer and randomized campaign arm: the expected change in conversion if contacted (T-learner)."""
    contacts = data.campaign_contacts(con, ctx.as_of)
    reused = fitted_model(con, "uplift_scores", ctx, cfg.campaigns, UpliftFit)
    if reused and not set(counted(contacts)["campaign_id"].unique()) <= reused.artifact.campaigns:
        reused = None  # a campaign's window closed since that fit: fit every arm again
    fit = (
        reused.artifact
        if reused
        else fit_uplift(contacts, inputs.orders(con), inputs.interactions(con), inputs.customers(con), cfg.campaigns)
    )
    metrics = {f"{m.campaign_id}/{m.arm}/{k}": v for m in fit.arms for k, v in m.metrics.items()}
    card = {
        "features": FEATURES,
        "config": cfg.campaigns,
        "model": "T-learner: StandardScaler + LogisticRegression per group on features as of the day before the campaign",
        "arms": {f"{m.campaign_id}/{m.arm}": m.metrics for m in fit.arms},
    }
    return TableOutput(
        uplift_scores(fit.arms, inputs.features(con)),
        metrics | _model_age(reused, ctx),
        fit,
        card,
        evaluated_on="held-out campaign customers",
        reused=reused,
    )


@dataclass
class MinedRules:
    """The rules of one mining and its figures: what a run within the refit window publishes again."""

    rules: pl.DataFrame
    metrics: dict[str, float]


def build_association_rules(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Association rules between products (or categories) bought together, with support, confidence, lift, leverage, conviction."""
    b = cfg.baskets
    # A day adds a day's baskets to the year's: the rules of a mining in the refit window stand,
    # and reading and numbering every order line was most of the table's time.
    reused = fitted_model(con, "association_rules", ctx, b, MinedRules)
    mined = reused.artifact if reused else _mine_rules(con, ctx, b)
    return TableOutput(
        mined.rules, {**mined.metrics, **_model_age(reused, ctx)}, mined, card={"config": b}, reused=reused
    )


def _mine_rules(con: duckdb.DuckDBPyConnection, ctx: RunContext, b: BasketConfig) -> MinedRules:
    lines = data.order_lines(con, ctx.as_of)
    basket = {"order": "order_key", "customer": "customer_key"}[b.basket]
    item = {"sku": "sku", "category": "category"}[b.item]
    baskets, items, names, n = encode(lines.select(basket=basket, item=item))
    started = time.perf_counter()
    itemsets = frequent_itemsets(baskets, items, names, n, b.min_support, b.max_len)
    rules = association_rules(itemsets, b.min_confidence)
    if b.min_lift is not None:
        rules = rules.filter(pl.col("lift") >= b.min_lift)
    metrics = {
        "baskets": float(n),
        "items": float(len(names)),
        "itemsets": float(len(itemsets.sets)),
        "rules": float(rules.height),
        "mining_seconds": time.perf_counter() - started,
    }
    return MinedRules(rules.with_columns(basket=pl.lit(b.basket), item=pl.lit(b.item)), metrics)


def build_customer_segments(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Behaviour segments (k-means, k by silhouette) with a readable label and profile per segment."""
    features = inputs.features(con)
    reused = fitted_model(con, "customer_segments", ctx, cfg.segments, SegmentModel)
    seg = segment_customers(features, cfg.segments, reused.artifact if reused else None)
    fit = seg.fitted
    frame = seg.assignments.join(
        seg.profiles.select(
            "segment_id",
            segment_customers="customers",
            segment_revenue_share="revenue_share",
            segment_mean_recency_days="recency_days",
            segment_mean_frequency="frequency",
            segment_mean_monetary="monetary",
        ),
        on="segment_id",
    ).join(features.select("customer_key", "recency_days", "frequency", "monetary"), on="customer_key")
    metrics = {
        "k": float(fit.k),
        "silhouette": fit.silhouette,
        "inertia": float(fit.model.inertia_),
        **{f"silhouette/k={k}": v for k, v in fit.silhouettes.items()},
        **_model_age(reused, ctx),
    }
    card = {
        "features": SEGMENT_FEATURES,
        "config": cfg.segments,
        "k_criterion": "highest silhouette",
        "profiles": seg.profiles.to_dicts(),
    }
    return TableOutput(frame.sort("customer_key"), metrics, fit, card, reused=reused)


def build_customer_lifecycle(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Lifecycle stage per known customer: prospect, new, active, loyal, at risk, churned."""
    frame = lifecycle_stages(inputs.features(con), inputs.orders(con), ctx.as_of, cfg.lifecycle)
    shares = frame["stage"].value_counts(normalize=True)
    return TableOutput(
        frame,
        {"customers": float(frame.height), **{f"share/{s}": float(v) for s, v in shares.iter_rows()}},
        card={"config": cfg.lifecycle},
    )


def build_customer_health(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """A 0-100 health score per known customer from recency, trend, engagement, complaints and CSAT."""
    frame = health_scores(inputs.features(con))
    return TableOutput(
        frame,
        {"customers": float(frame.height), "mean_health": float(cast(float, frame["health_score"].mean()) or 0)},
        card={"weights": HEALTH_WEIGHTS},
    )


def build_customer_value(
    con: duckdb.DuckDBPyConnection, inputs: MartInputs, ctx: RunContext, cfg: MLConfig
) -> TableOutput:
    """Expected purchases, P(alive) and discounted value over the horizon (BG/NBD + Gamma-Gamma)."""
    reused = fitted_model(con, "customer_value", ctx, cfg.value, dict)
    frame, bgnbd, gg = customer_value(
        inputs.orders(con),
        ctx.as_of,
        cfg.value,
        (reused.artifact["bgnbd"], reused.artifact["gamma_gamma"]) if reused else None,
    )
    params = {
        **{f"bgnbd/{k}": v for k, v in asdict(bgnbd).items()},
        **{f"gamma_gamma/{k}": v for k, v in asdict(gg).items()},
    }
    metrics = {
        "customers": float(frame.height),
        "predicted_value_total": float(frame["predicted_value"].sum()),
        "mean_p_alive": float(cast(float, frame["p_alive"].mean())),
        **params,
        **_model_age(reused, ctx),
    }
    return TableOutput(
        frame, metrics, {"bgnbd": bgnbd, "gamma_gamma": gg}, {"config": cfg.value, "parameters": params}, reused=reused
    )


TABLES: dict[str, Callable[[duckdb.DuckDBPyConnection, MartInputs, RunContext, MLConfig], TableOutput]] = {
    # The rules first: their order lines are freed before the customer frames are read.
    "association_rules": build_association_rules,
    "rfm_segments": build_rfm_segments,
    "churn_scores": build_churn_scores,
    "customer_segments": build_customer_segments,
    "customer_lifecycle": build_customer_lifecycle,
    "customer_health": build_customer_health,
    "customer_value": build_customer_value,
    "repurchase_scores": build_repurchase_scores,
    "sales_forecast": build_sales_forecast,
    "triggered_audiences": build_triggered_audiences,
    "campaign_results": build_campaign_results,
    "uplift_scores": build_uplift_scores,
}
CUSTOMER_MARTS = ["fct_orders", "fct_interactions", "dim_customer"]
MART_INPUTS: dict[str, list[str]] = {
    "rfm_segments": ["fct_orders"],
    "churn_scores": CUSTOMER_MARTS,
    "association_rules": ["fct_order_lines", "dim_product"],
    "customer_segments": CUSTOMER_MARTS,
    "customer_lifecycle": CUSTOMER_MARTS,
    "customer_health": CUSTOMER_MARTS,
    "customer_value": ["fct_orders"],
    "repurchase_scores": CUSTOMER_MARTS,
    "sales_forecast": ["fct_orders", "fct_order_lines", "dim_customer", "dim_product"],
    "triggered_audiences": ["fct_web_sessions", "fct_orders"],
    "campaign_results": ["fct_campaign_contacts"],
    "uplift_scores": ["fct_campaign_contacts", *CUSTOMER_MARTS],
}


def build(
    con: duckdb.DuckDBPyConnection, name: str, ctx: RunContext, cfg: MLConfig, inputs: MartInputs | None = None
) -> TableOutput:
    """Compute ml.<name> as of ctx.as_of and write it, its metrics, artifact and card. `inputs`,
    when given, must be as of ctx.as_of on this warehouse; pass one to several builds to share it."""
    inputs = inputs or MartInputs(ctx.as_of)
    if inputs.as_of != ctx.as_of:
        raise ValueError(f"inputs as of {inputs.as_of} given to a build as of {ctx.as_of}")
    out = TABLES[name](con, inputs, ctx, cfg)
    with _WRITING:
        write_table(con, name, out.frame, ctx, cfg.history.keep_days)
        write_metrics(con, name, out.metrics, ctx, out.evaluated_on)
        save_artifact(
            name,
            ctx,
            out.artifact,
            {**out.card, "metrics": out.metrics, "rows": out.frame.height},
            out.reused,
            warehouse_of(con),
        )
    return out


# One table's writes at a time: they are short, and two transactions creating the ml schema or a
# table side by side would conflict in DuckDB's catalog.
_WRITING = threading.Lock()

# Churn and repurchase scores fit trees on every active customer's features, the two largest fits:
# side by side they took 6.1 GB at a million customers, against 4.4 GB one after the other. They
# build in one lane, with customer value before repurchase (which reuses the BG/NBD it fitted);
# the other tables build beside them, in a second lane. The rules build first, alone: their order
# lines are freed before the customer frames are read.
CUSTOMER_MODEL_LANE = frozenset({"churn_scores", "customer_value", "repurchase_scores"})
ALONE_FIRST = "association_rules"


# DuckDB's cache of open databases races when two threads open the same file while no connection
# holds it, or one opens it while another closes the last: "Unique file handle conflict".
_OPENING = threading.Lock()


@contextlib.contextmanager
def _opened_alone(
    connect: Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]],
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection from `connect`, opened and closed while no other thread opens or closes one."""
    opened = contextlib.ExitStack()
    with _OPENING:
        con = opened.enter_context(connect())
        opened.callback(con.close)  # as contextlib.closing did: `connect` need not close it
    try:
        yield con
    finally:
        with _OPENING:
            opened.close()


@dataclass
class Built:
    """One table of build_tables: its output, or the error that stopped it."""

    name: str
    output: TableOutput | None
    error: Exception | None
    seconds: float  # from its start to its write, with the shared reads it made or waited for


def build_tables(
    connect: Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]],
    names: list[str],
    ctx: RunContext,
    cfg: MLConfig,
) -> Iterator[Built]:
    """Build the tables `names` (in any order) as of ctx.as_of with one shared MartInputs, each on a
    connection of its own from `connect` (closed after it: when no other table holds the warehouse
    open, DuckDB's cache of what it read goes too); yield each as it is written. The rules first, then the
    customer-model lane and the other tables side by side (on two cores a table alone kept about
    1.6 busy). An error stops only its own table."""
    inputs = MartInputs(ctx.as_of)
    chosen = [n for n in TABLES if n in names]

    def one(name: str) -> Built:
        started = time.perf_counter()
        try:
            with _opened_alone(connect) as con:
                return Built(name, build(con, name, ctx, cfg, inputs), None, time.perf_counter() - started)
        except Exception as e:  # reported with the table; the others still build
            return Built(name, None, e, time.perf_counter() - started)

    if ALONE_FIRST in chosen:
        yield one(ALONE_FIRST)
    lanes = [
        [n for n in chosen if n in CUSTOMER_MODEL_LANE],
        [n for n in chosen if n not in CUSTOMER_MODEL_LANE and n != ALONE_FIRST],
    ]
    lanes = [lane for lane in lanes if lane]
    done: queue.Queue[Built] = queue.Queue()

    def run_lane(lane: list[str]) -> None:
        for name in lane:
            done.put(one(name))

    with ThreadPoolExecutor(max_workers=max(len(lanes), 1)) as pool:
        for lane in lanes:
            pool.submit(run_lane, lane)
        for _ in range(sum(len(lane) for lane in lanes)):
            yield done.get()
