"""Point-in-time reads of the marts: only what had happened by the end of the as-of day.

Dates are local dates (the partitions the loader and the facts use), so `as_of` means the same
day everywhere. Every ML feature, label and score reads the warehouse through these functions.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> pl.DataFrame:
    return con.sql(sql, params=params).pl()


def orders(con: duckdb.DuckDBPyConnection, as_of: dt.date, since: dt.date | None = None) -> pl.DataFrame:
    """Orders of known customers placed on or before `as_of` (and on or after `since`)."""
    return _frame(
        con,
        """
        select customer_key, order_key, channel, ordered_local_date as order_date, cast(net_amount as double) as net_amount
        from marts.fct_orders
        where customer_key is not null and ordered_local_date <= ? and ordered_local_date >= coalesce(?, date '1900-01-01')
        order by customer_key, order_date, order_key
    """,
        [as_of, since],
    )


def order_lines(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """Purchased product lines (positive quantity, real products) on or before `as_of`."""
    return _frame(
        con,
        """
        select l.order_key, l.customer_key, l.sku, p.category
        from marts.fct_order_lines as l
        inner join marts.dim_product as p on l.sku = p.sku
        where l.ordered_local_date <= ? and l.quantity > 0 and not p.is_non_product
    """,
        [as_of],
    )


def interactions(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """Touches of known customers on or before `as_of`, as they were known then.

    A touch counts for its customer only if its record (cookie, social account, call) had named
    the customer by `as_of`: the sessions of a cookie that logs in later are anonymous as of now.
    Web sessions count from the day after they start, when no later event can still join them.
    """
    return _frame(
        con,
        """
        with known as (
            select distinct identity_record_key
            from marts.fct_interactions
            where carries_identifier and occurred_local_date <= ?
        )
        select i.customer_key, i.channel, i.occurred_local_date as interaction_date, i.is_complaint, i.csat,
               i.sentiment_score, i.outcome = 'cart_abandoned' as is_cart_abandoned
        from marts.fct_interactions as i
        inner join known on i.identity_record_key = known.identity_record_key
        where i.customer_key is not null
          and (i.occurred_local_date < ? or (i.occurred_local_date = ? and i.channel <> 'web'))
    """,
        [as_of, as_of, as_of],
    )


def customers(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """Every customer known by `as_of` (a registry export, an order, or a touch naming them, dated
    then or before), with the dim_customer version in force at the end of that day."""
    end_of_day = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())
    return _frame(
        con,
        """
        with known as (
            select customer_key from marts.fct_orders where customer_key is not null and ordered_local_date <= ?
            union
            select customer_key from marts.fct_interactions
            where customer_key is not null and carries_identifier and occurred_local_date <= ?
            union
            select customer_key from marts.dim_customer where registered_local_date <= ?
        )
        select c.customer_key, cast(c.first_seen_at as date) as first_seen_date, c.signup_date,
               coalesce(c.has_marketing_consent, false) as has_marketing_consent, c.region, c.tier
        from marts.dim_customer as c
        inner join known on c.customer_key = known.customer_key
        where c.valid_from < ? and (c.valid_to is null or c.valid_to >= ?)
        order by c.customer_key
    """,
        [as_of, as_of, as_of, end_of_day, end_of_day],
    )


def weekly_sales(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """Net revenue and orders per complete week (Monday to Sunday, ending on or before `as_of`),
    channel and the customer's region as known at the end of `as_of` ('unknown' without one): the
    cells every forecast sums."""
    return _frame(
        con,
        """
        select date_trunc('week', o.ordered_local_date)::date as week_start, o.channel,
            coalesce(c.region, 'unknown') as region,
            sum(o.net_amount)::double as net_revenue, count(*) filter (where not o.is_refund) as orders
        from marts.fct_orders as o
        left join marts.dim_customer as c
            on c.customer_key = o.customer_key
            and c.valid_from < ? + interval 1 day and coalesce(c.valid_to, 'infinity') >= ? + interval 1 day
        where date_trunc('week', o.ordered_local_date)::date + 6 <= ?
        group by all order by all
    """,
        [as_of, as_of, as_of],
    )


def weekly_product_sales(con: duckdb.DuckDBPyConnection, as_of: dt.date, level: str) -> pl.DataFrame:
    """Net revenue and orders per complete week and product (`level` sku) or category."""
    key = {"sku": "l.sku", "category": "coalesce(p.category, 'unknown')"}[level]
    return _frame(
        con,
        f"""
        select date_trunc('week', l.ordered_local_date)::date as week_start, {key} as product,
            sum(l.net_amount)::double as net_revenue, count(distinct l.order_key) as orders
        from marts.fct_order_lines as l
        inner join marts.dim_product as p on l.sku = p.sku
        where not coalesce(p.is_non_product, false) and date_trunc('week', l.ordered_local_date)::date + 6 <= ?
        group by all order by all
    """,
        [as_of],
    )


def calendar_days(path: Path | None) -> set[dt.date]:
    """The event days of a calendar CSV (a `date` column, YYYY-MM-DD; other columns ignored)."""
    if path is None:
        return set()
    if not path.exists():
        raise FileNotFoundError(f"calendar file {path} (the sources file's `calendar:`) does not exist")
    frame = pl.read_csv(path, columns=["date"], schema_overrides={"date": pl.String})
    try:
        return set(frame["date"].str.strip_chars().str.to_date("%Y-%m-%d").to_list())
    except pl.exceptions.InvalidOperationError as e:
        raise ValueError(f"{path}: column date must hold dates as YYYY-MM-DD ({e})") from None


def abandoned_sessions(con: duckdb.DuckDBPyConnection, as_of: dt.date, lookback_days: int) -> pl.DataFrame:
    """Web sessions of the `lookback_days` before `as_of` that viewed products (browse) or added to
    the cart (cart) and ordered nothing, of customers their cookie had named by `as_of` (as in
    `interactions`; a session counts from the day after it starts, when no later event can still
    join it), with the customer's next order after the session (any channel, on or before
    `as_of`) and `now`: the latest order or session start the warehouse holds as of `as_of` (UTC)."""
    return _frame(
        con,
        """
        with now as (
            select greatest(
                (select max(ordered_at) from marts.fct_orders where ordered_local_date <= $1),
                (select max(session_started_at) from marts.fct_web_sessions where session_local_date <= $1)
            ) as now
        ),
        known as (
            select distinct identity_record_key from marts.fct_interactions
            where carries_identifier and occurred_local_date <= $1
        ),
        sessions as (
            select s.customer_key, s.session_ended_at, s.product_views, s.add_to_carts,
                case when s.add_to_carts > 0 then 'cart_abandonment' else 'browse_abandonment' end as trigger
            from marts.fct_web_sessions as s
            inner join known on s.identity_record_key = known.identity_record_key
            where s.customer_key is not null and s.session_local_date >= $1 - $2 and s.session_local_date < $1
              and s.orders = 0 and (s.product_views > 0 or s.add_to_carts > 0)
        )
        select s.trigger, s.customer_key, s.session_ended_at, s.product_views, s.add_to_carts,
            (select min(o.ordered_at) from marts.fct_orders as o
             where o.customer_key = s.customer_key and o.ordered_at > s.session_ended_at
               and o.ordered_local_date <= $1 and not o.is_refund) as next_order_at,
            (select now from now) as now
        from sessions as s
        order by s.trigger, s.customer_key, s.session_ended_at
    """,
        [as_of, lookback_days],
    )


def campaign_contacts(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """Campaign contacts whose response window had closed by the as-of date: their orders are all
    known. (Midnight UTC of the as-of date falls within or before that local day in every zone.)"""
    return _frame(
        con,
        """
        select campaign_id, campaign_name, customer_key, arm, is_control, is_randomized, assigned_at,
            window_ends_at, cast(offer_cost as double) as offer_cost, is_in_several_arms, excluded_because,
            converted, orders, cast(net_revenue as double) as net_revenue
        from marts.fct_campaign_contacts
        where window_ends_at <= cast(? as date)
        order by campaign_id, arm, customer_key
    """,
        [as_of],
    )
