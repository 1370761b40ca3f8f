"""Lifecycle stage and health score of every customer known at the as-of date.

Stages, first rule that holds (days counted back from the as-of date; settings in LifecycleConfig):
prospect: known, never bought · new: first purchase within new_days · loyal: last purchase within
active_days and at least loyal_orders orders · active: last purchase within active_days · at risk:
last purchase within churned_days · churned: longer ago.

Health, 0-100 = round(100 × (0.30 recency + 0.20 trend + 0.20 engagement + 0.15 complaints + 0.15 CSAT)):
recency exp(-recency_days / 90), 0 without a purchase · trend (clip(orders_90 - orders_prior_90, -2, 2) + 2) / 4
· engagement min(1, (orders_90 + web_sessions_90) / 6) · complaints 1 / (1 + complaints_90) · CSAT
(avg_csat - 1) / 4, 0.5 when never surveyed.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml.config import LifecycleConfig

HEALTH_WEIGHTS = {"recency": 0.30, "trend": 0.20, "engagement": 0.20, "complaints": 0.15, "csat": 0.15}


def lifecycle_stages(
    features: pl.DataFrame, orders: pl.DataFrame, as_of: dt.date, cfg: LifecycleConfig
) -> pl.DataFrame:
    first = (
        orders.filter((pl.col("order_date") <= as_of) & (pl.col("net_amount") > 0))
        .group_by("customer_key")
        .agg(first_purchase_date=pl.col("order_date").min())
    )
    frame = features.select("customer_key", "last_purchase_date", "recency_days", "frequency").join(
        first, on="customer_key", how="left"
    )
    since_first = (pl.lit(as_of) - pl.col("first_purchase_date")).dt.total_days()
    stage = (
        pl.when(pl.col("last_purchase_date").is_null())
        .then(pl.lit("prospect"))
        .when(since_first <= cfg.new_days)
        .then(pl.lit("new"))
        .when((pl.col("recency_days") <= cfg.active_days) & (pl.col("frequency") >= cfg.loyal_orders))
        .then(pl.lit("loyal"))
        .when(pl.col("recency_days") <= cfg.active_days)
        .then(pl.lit("active"))
        .when(pl.col("recency_days") <= cfg.churned_days)
        .then(pl.lit("at_risk"))
        .otherwise(pl.lit("churned"))
    )
    return frame.with_columns(stage=stage).select(
        "customer_key", "stage", "first_purchase_date", "last_purchase_date", "recency_days", "frequency"
    )


def health_scores(features: pl.DataFrame) -> pl.DataFrame:
    components = features.select(
        "customer_key",
        recency_component=pl.when(pl.col("recency_days").is_null())
        .then(0.0)
        .otherwise((-pl.col("recency_days") / 90).exp()),
        trend_component=(pl.col("order_trend_90").clip(-2, 2) + 2) / 4,
        engagement_component=((pl.col("orders_90") + pl.col("web_sessions_90")) / 6).clip(upper_bound=1.0),
        complaints_component=1 / (1 + pl.col("complaints_90")),
        csat_component=pl.when(pl.col("avg_csat").is_null()).then(0.5).otherwise((pl.col("avg_csat") - 1) / 4),
    )
    score = sum((w * pl.col(f"{name}_component") for name, w in HEALTH_WEIGHTS.items()), pl.lit(0.0))
    return components.with_columns(health_score=(100 * score).round(0).cast(pl.Int32)).select(
        "customer_key", "health_score", *[f"{n}_component" for n in HEALTH_WEIGHTS]
    )
