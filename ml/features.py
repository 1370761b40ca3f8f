"""Behaviour features of each customer at a cut-off day, from data up to that day only.

Shared by the churn model, the segments and the health score, so they read customers alike.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

FEATURES = [
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "orders_30",
    "orders_90",
    "orders_prior_90",
    "order_trend_90",
    "revenue_90",
    "web_sessions_90",
    "cart_abandonment_rate_90",
    "calls_90",
    "complaints_90",
    "avg_csat",
    "social_sentiment_90",
    "tenure_days",
    "web_order_share",
    "channel_count",
    "has_marketing_consent",
]


def _days_before(cutoff: dt.date, days: int) -> dt.date:
    return cutoff - dt.timedelta(days=days)


def _channel_bits(orders: pl.DataFrame, interactions: pl.DataFrame) -> pl.Expr:
    """Each channel as one bit, so a customer's channels are an OR of bits and their count a
    popcount: lists of unique channels per customer
    cost more per cut-off than the rest of the features."""
    channels = pl.concat([orders.get_column("channel").unique(), interactions.get_column("channel").unique()])
    channels = channels.drop_nulls().unique().sort()
    if len(channels) > 63:
        raise ValueError(f"{len(channels)} channels: a channel bit set holds at most 63")
    return pl.col("channel").replace_strict(
        channels.to_list(), [1 << k for k in range(len(channels))], default=0, return_dtype=pl.Int64
    )


def customer_features(
    orders: pl.DataFrame, interactions: pl.DataFrame, customers: pl.DataFrame, cutoff: dt.date
) -> pl.DataFrame:
    """One row per customer first seen by `cutoff`; only orders and touches dated <= cutoff count.

    `orders` has one row per order (`data.orders`), so orders are counted as rows: counting
    distinct order keys per customer took twice as long.
    """
    o = orders.filter(pl.col("order_date") <= cutoff)
    i = interactions.filter(pl.col("interaction_date") <= cutoff)
    channel_bit = _channel_bits(o, i)
    d30, d90, d180 = (_days_before(cutoff, n) for n in (30, 90, 180))
    bought = pl.col("net_amount") > 0
    # Grouped in the rows' order: data.orders sorts by customer (a quarter faster than hashed groups).
    order_features = o.group_by("customer_key", maintain_order=True).agg(
        last_purchase_date=pl.col("order_date").filter(bought).max(),
        frequency=bought.sum(),
        monetary=pl.col("net_amount").sum(),
        orders_30=(bought & (pl.col("order_date") > d30)).sum(),
        orders_90=(bought & (pl.col("order_date") > d90)).sum(),
        orders_prior_90=(bought & (pl.col("order_date") > d180) & (pl.col("order_date") <= d90)).sum(),
        revenue_90=pl.col("net_amount").filter(pl.col("order_date") > d90).sum(),
        web_orders=(bought & (pl.col("channel") == "web")).sum(),
        order_channels=channel_bit.bitwise_or(),
    )
    recent = i.filter(pl.col("interaction_date") > d90)
    touch_features = (
        i.group_by("customer_key")
        .agg(
            avg_csat=pl.col("csat").cast(pl.Float64).mean(),
            touch_channels=channel_bit.bitwise_or(),
        )
        .join(
            recent.group_by("customer_key").agg(
                web_sessions_90=(pl.col("channel") == "web").sum(),
                cart_abandoned_90=pl.col("is_cart_abandoned").fill_null(False).sum(),
                calls_90=(pl.col("channel") == "call_center").sum(),
                complaints_90=pl.col("is_complaint").fill_null(False).sum(),
                social_sentiment_90=pl.col("sentiment_score").cast(pl.Float64).mean(),
            ),
            on="customer_key",
            how="full",
            coalesce=True,
        )
    )
    frame = (
        customers.filter(pl.col("first_seen_date") <= cutoff)
        .select("customer_key", "first_seen_date", "has_marketing_consent")
        .join(order_features, on="customer_key", how="left")
        .join(touch_features, on="customer_key", how="left")
    )
    counts = [
        "frequency",
        "orders_30",
        "orders_90",
        "orders_prior_90",
        "web_orders",
        "web_sessions_90",
        "cart_abandoned_90",
        "calls_90",
        "complaints_90",
    ]
    return (
        frame.with_columns(
            pl.col(counts).fill_null(0).cast(pl.Float64),
            pl.col("monetary", "revenue_90").fill_null(0.0),
        )
        .with_columns(
            recency_days=(pl.lit(cutoff) - pl.col("last_purchase_date")).dt.total_days().cast(pl.Float64),
            avg_order_value=pl.when(pl.col("frequency") > 0).then(pl.col("monetary") / pl.col("frequency")),
            order_trend_90=pl.col("orders_90") - pl.col("orders_prior_90"),
            cart_abandonment_rate_90=pl.when(pl.col("web_sessions_90") > 0)
            .then(pl.col("cart_abandoned_90") / pl.col("web_sessions_90"))
            .otherwise(0.0),
            tenure_days=(pl.lit(cutoff) - pl.col("first_seen_date")).dt.total_days().cast(pl.Float64),
            web_order_share=pl.when(pl.col("frequency") > 0)
            .then(pl.col("web_orders") / pl.col("frequency"))
            .otherwise(0.0),
            channel_count=(pl.col("order_channels").fill_null(0) | pl.col("touch_channels").fill_null(0))
            .bitwise_count_ones()
            .cast(pl.Float64),
            has_marketing_consent=pl.col("has_marketing_consent").cast(pl.Float64),
        )
        .select("customer_key", "last_purchase_date", *FEATURES)
        .sort("customer_key")
    )
