"""Triggered follow-ups: the customers to send a time-limited offer to, now.

Browse abandonment: a known customer's web session viewed products and added nothing to the cart;
cart abandonment: it added to the cart. Either ordered nothing in the session. A follow-up is due
once `within_hours` have passed since the session by `now` (the latest event the warehouse holds)
and the customer has ordered nothing anywhere (store or web) since the session; sessions stay
candidates for `lookback_days`. One row per customer and trigger: their latest due session. Contact consent is
checked where the audience is exported (serving/audience.py), per channel.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

TRIGGERS = ("browse_abandonment", "cart_abandonment")


def due(sessions: pl.DataFrame, within_hours: int) -> pl.DataFrame:
    """The customers each trigger fires for with a window of `within_hours`: their latest due session.
    `sessions`: ml.data.abandoned_sessions (next_order_at: the customer's first order after it, if any)."""
    if within_hours <= 0:
        raise ValueError(f"within_hours must be positive, not {within_hours}")
    window = pl.col("session_ended_at") + dt.timedelta(hours=within_hours)
    return (
        sessions.filter((window <= pl.col("now")) & pl.col("next_order_at").is_null())
        .sort("session_ended_at")
        .group_by("trigger", "customer_key", maintain_order=True)
        .last()
        .with_columns(
            within_hours=pl.lit(within_hours, pl.Int32),
            due_since=window,
            hours_waiting=((pl.col("now") - window).dt.total_minutes() / 60).round(1),
        )
        .select(
            "trigger",
            "customer_key",
            "session_ended_at",
            "product_views",
            "add_to_carts",
            "within_hours",
            "due_since",
            "hours_waiting",
            "now",
        )
        .sort("trigger", "customer_key")
    )
