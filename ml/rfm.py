"""RFM scores and the 11-segment RFM map.

Scores are quintiles of the customers who bought by the as-of date: score = 1 + ⌊5·(rank − 1)/n⌋,
with rank the SQL `rank()` in the order from worst to best (ties share their lowest rank, so
equal values always get equal scores; 5 = best: most recent, most orders, most revenue).
The segment comes from R and FM = round-half-up((F + M) / 2), on the grid in `SEGMENT_GRID`.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

# SEGMENT_GRID[r][fm - 1]: rows are the recency score, columns the FM score 1..5.
SEGMENT_GRID = {
    5: ["New Customers", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"],
    4: ["Promising", "Potential Loyalist", "Loyal Customers", "Champions", "Champions"],
    3: ["About To Sleep", "Need Attention", "Need Attention", "Loyal Customers", "Loyal Customers"],
    2: ["Hibernating", "About To Sleep", "At Risk", "At Risk", "Can't Lose Them"],
    1: ["Lost", "Hibernating", "At Risk", "Can't Lose Them", "Can't Lose Them"],
}
SEGMENTS = pl.DataFrame(
    [(r, fm + 1, name) for r, names in SEGMENT_GRID.items() for fm, name in enumerate(names)],
    schema={"r_score": pl.Int32, "fm_score": pl.Int32, "segment": pl.String},
    orient="row",
)


def quintile_score(values: pl.Expr, descending: bool = False) -> pl.Expr:
    """1..5 by quintile of the rank, worst first; ties share the lowest rank."""
    rank = values.rank(method="min", descending=descending)
    return (1 + ((rank - 1) * 5) // pl.len()).cast(pl.Int32)


def rfm_table(orders: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """One row per customer with a purchase (an order with positive net amount) by `as_of`."""
    per_customer = (
        orders.filter(pl.col("order_date") <= as_of)
        .group_by("customer_key")
        .agg(
            last_purchase_date=pl.col("order_date").filter(pl.col("net_amount") > 0).max(),
            frequency=pl.col("order_key").filter(pl.col("net_amount") > 0).n_unique().cast(pl.Int64),
            monetary=pl.col("net_amount").sum().round(4),
        )
        .filter(pl.col("frequency") > 0)
    )
    scored = (
        per_customer.with_columns(
            recency_days=(pl.lit(as_of) - pl.col("last_purchase_date")).dt.total_days().cast(pl.Int64),
        )
        .with_columns(
            r_score=quintile_score(pl.col("recency_days"), descending=True),
            f_score=quintile_score(pl.col("frequency")),
            m_score=quintile_score(pl.col("monetary")),
        )
        .with_columns(
            fm_score=((pl.col("f_score") + pl.col("m_score") + 1) // 2).cast(pl.Int32),
            rfm_score=(pl.col("r_score") * 100 + pl.col("f_score") * 10 + pl.col("m_score")).cast(pl.Int32),
        )
    )
    return (
        scored.join(SEGMENTS, on=["r_score", "fm_score"], how="left")
        .select(
            "customer_key",
            "last_purchase_date",
            "recency_days",
            "frequency",
            "monetary",
            "r_score",
            "f_score",
            "m_score",
            "fm_score",
            "rfm_score",
            "segment",
        )
        .sort("customer_key")
    )
