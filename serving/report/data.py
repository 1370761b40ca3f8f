"""Every figure of the insight report, aggregated in DuckDB SQL on one published version.

A region report reads the `scoped` views (serving/scopes.py): that region's customers and their
facts only, by the same rule as the region exports. Orders without a known customer count in the
whole-warehouse report only. Tables with no customers in them (product rules, load logs) are
shown whole in either."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import polars as pl

from serving.publish import has_table
from serving.scopes import scoped_view_name, set_region

KPI_PERIOD_DAYS = 30  # KPIs cover the last 30 days to the as-of date, against the 30 days before
WINDOW_MONTHS = 12  # charts by month cover the last 12 months
COHORT_MONTHS = 12
TOP_PRODUCTS = 10
TOP_RULES = 10
AT_RISK_ROWS = 20
LIFECYCLE_STAGES = ["prospect", "new", "active", "loyal", "at_risk", "churned"]
CHURN_METRICS = ["roc_auc", "pr_auc", "brier", "lift_top_decile"]


@dataclass(frozen=True)
class Scope:
    """Which rows a report may read: the whole version, or one region's customers."""

    region: str | None = None

    def table(self, schema: str, table: str) -> str:
        return scoped_view_name(schema, table) if self.region else f"{schema}.{table}"


@dataclass(frozen=True)
class Dates:
    """The report's as-of date (facts up to it), the ML run it shows (the newest on or before it)
    and the ML run before that one (for segment moves and the ML KPIs' change)."""

    as_of: dt.date
    ml_as_of: dt.date | None
    previous_ml_as_of: dt.date | None


@dataclass
class ReportData:
    dates: Dates
    version: int
    version_as_of: dt.date
    region: str | None
    first_day: dt.date | None
    last_day: dt.date | None
    kpis: dict[str, dict[str, float | None]]
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def as_of(self) -> dt.date:
        return self.dates.as_of


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return con.sql(sql, params=params or []).pl()


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple:
    return con.execute(sql, params or []).fetchall()[0]


def gather(con: duckdb.DuckDBPyConnection, region: str | None = None, as_of: dt.date | None = None) -> ReportData:
    """All the report's figures from the version `con` reads (a published, read-only version), as of
    `as_of` (default: the version's own as-of date; never after it)."""
    version, version_as_of = _one(con, "select version, as_of_date from serving.publication")
    if version_as_of is None:  # a version published by a run without an as-of date: its last order day
        version_as_of = _one(con, "select max(ordered_local_date) from marts.fct_orders")[0]
    if version_as_of is None:
        raise ValueError(f"the published version {version} holds no orders to report on")
    as_of = as_of or version_as_of
    if as_of > version_as_of:
        raise ValueError(f"the published version {version} holds data up to {version_as_of}; asked for {as_of}")
    if region:
        set_region(con, region)
    scope = Scope(region)
    dates = _dates(con, as_of)
    orders = scope.table("marts", "fct_orders")
    first_day, last_day = _one(
        con,
        f"select min(ordered_local_date), max(ordered_local_date) from {orders} where ordered_local_date <= ?",
        [as_of],
    )
    data = ReportData(dates, version, version_as_of, region, first_day, last_day, kpis=kpis(con, scope, dates))
    for query in SECTIONS.values():
        data.frames.update(query(con, scope, dates))
    return data


def _dates(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> Dates:
    if not has_table(con, "ml", "rfm_segments"):
        return Dates(as_of, None, None)
    ml_as_of = _one(con, "select max(as_of_date) from ml.rfm_segments where as_of_date <= ?", [as_of])[0]
    previous = _one(con, "select max(as_of_date) from ml.rfm_segments where as_of_date < ?", [ml_as_of])[0]
    return Dates(as_of, ml_as_of, previous)


def _order_kpis(con: duckdb.DuckDBPyConnection, orders: str, first: dt.date, last: dt.date) -> dict[str, float | None]:
    revenue, count, buyers, repeat = _one(
        con,
        f"""
        with period as (
            select customer_key, net_amount, is_refund from {orders}
            where ordered_local_date between ? and ?
        ),
        lifetime as (
            select customer_key, count(*) filter (where not is_refund) as orders_to_date from {orders}
            where ordered_local_date <= ? and customer_key is not null group by customer_key
        )
        select
            coalesce(sum(net_amount), 0)::double,
            count(*) filter (where not is_refund),
            count(distinct customer_key) filter (where not is_refund),
            (select count(*) from lifetime where orders_to_date >= 2
                and customer_key in (select customer_key from period where not is_refund))
        from period
        """,
        [first, last, last],
    )
    return {
        "active_customers": buyers,
        "revenue": revenue,
        "orders": count,
        "average_order_value": revenue / count if count else None,
        "repeat_purchase_rate": repeat / buyers if buyers else None,
    }


def _ml_kpis(con: duckdb.DuckDBPyConnection, scope: Scope, as_of: dt.date | None) -> dict[str, float | None]:
    at_risk = value = None
    if as_of and has_table(con, "ml", "churn_scores"):
        at_risk = _one(
            con,
            f"select count(*) from {scope.table('ml', 'churn_scores')} where as_of_date = ? and risk_band = 'high'",
            [as_of],
        )[0]
    if as_of and has_table(con, "ml", "customer_value"):
        value = _one(
            con,
            f"select sum(predicted_value)::double from {scope.table('ml', 'customer_value')} where as_of_date = ?",
            [as_of],
        )[0]
    return {"customers_at_risk": at_risk, "predicted_12m_value": value}


def kpis(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, dict[str, float | None]]:
    """Each KPI's value now and in the previous period (None where there is no previous period)."""
    as_of = dates.as_of
    orders, customers = scope.table("marts", "fct_orders"), scope.table("marts", "customer_360")
    period = dt.timedelta(days=KPI_PERIOD_DAYS)
    now = _order_kpis(con, orders, as_of - period + dt.timedelta(days=1), as_of)
    before = _order_kpis(con, orders, as_of - 2 * period + dt.timedelta(days=1), as_of - period)
    count = f"select count(*) from {customers} where cast(first_seen_at as date) <= ?"
    now["customers"] = _one(con, count, [as_of])[0]
    before["customers"] = _one(con, count, [as_of - period])[0]
    now |= _ml_kpis(con, scope, dates.ml_as_of)
    before |= _ml_kpis(con, scope, dates.previous_ml_as_of)
    return {name: {"value": now[name], "previous": before.get(name)} for name in KPI_ORDER}


KPI_ORDER = [
    "customers",
    "active_customers",
    "revenue",
    "orders",
    "average_order_value",
    "repeat_purchase_rate",
    "customers_at_risk",
    "predicted_12m_value",
]


def _window_start(as_of: dt.date) -> dt.date:
    """The first day of the month WINDOW_MONTHS - 1 months before the as-of month."""
    months = as_of.year * 12 + as_of.month - 1 - (WINDOW_MONTHS - 1)
    return dt.date(months // 12, months % 12 + 1, 1)


def sales(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    as_of = dates.as_of
    orders, lines = scope.table("marts", "fct_orders"), scope.table("marts", "fct_order_lines")
    customers, products = scope.table("marts", "dim_customer"), scope.table("marts", "dim_product")
    window = [_window_start(as_of), as_of]
    by_month = _frame(
        con,
        f"""
        select date_trunc('month', o.ordered_local_date)::date as month, o.channel,
            coalesce(c.region, 'unknown') as region,
            sum(o.net_amount)::double as revenue, count(*) filter (where not o.is_refund) as orders
        from {orders} as o
        left join {customers} as c on c.customer_key = o.customer_key and c.is_current
        where o.ordered_local_date between ? and ?
        group by all order by all
        """,
        window,
    )
    top = f"""
        select {{key}} as name, sum(l.net_amount)::double as revenue, sum(l.quantity) as units
        from {lines} as l join {products} as p on p.sku = l.sku
        where l.ordered_local_date between ? and ? and not coalesce(p.is_non_product, false)
        group by all order by revenue desc, name limit {TOP_PRODUCTS}
    """
    daily = _frame(
        con,
        f"""
        select ordered_local_date as day, sum(net_amount)::double as revenue from {orders}
        where ordered_local_date between ? and ? group by all order by all
        """,
        [as_of - dt.timedelta(days=2 * KPI_PERIOD_DAYS - 1), as_of],
    )
    return {
        "daily_revenue": daily,
        "sales_by_month": by_month,
        "top_products": _frame(con, top.format(key="coalesce(p.product_name, p.sku)"), window),
        "top_categories": _frame(con, top.format(key="coalesce(p.category, 'unknown')"), window),
    }


def rfm(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    as_of = dates.ml_as_of
    if as_of is None:
        return {}
    previous = dates.previous_ml_as_of
    if not has_table(con, "ml", "rfm_segments"):
        return {}
    table = scope.table("ml", "rfm_segments")
    segments = _frame(
        con,
        f"""
        select segment, count(*) as customers, sum(monetary)::double as revenue,
            sum(monetary)::double / sum(sum(monetary)) over () as revenue_share
        from {table} where as_of_date = ? group by segment order by customers desc, segment
        """,
        [as_of],
    )
    moves = _frame(
        con,
        f"""
        select b.segment as previous_segment, a.segment as segment, count(*) as customers
        from {table} as a join {table} as b on a.customer_key = b.customer_key
        where a.as_of_date = ? and b.as_of_date = ? group by all order by all
        """,
        [as_of, previous],
    )
    return {"rfm_segments": segments, "rfm_transitions": moves}


def cohorts(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    """Share of each first-purchase month's customers who ordered again k months later."""
    as_of = dates.as_of
    orders = scope.table("marts", "fct_orders")
    frame = _frame(
        con,
        f"""
        with months as (
            select distinct customer_key, date_trunc('month', ordered_local_date)::date as month
            from {orders}
            where customer_key is not null and not is_refund and ordered_local_date <= ?
        ),
        firsts as (select customer_key, min(month) as cohort from months group by customer_key),
        cells as (
            select f.cohort, datediff('month', f.cohort, m.month) as months_after, count(*) as customers
            from months as m join firsts as f using (customer_key) group by all
        )
        select c.cohort, c.months_after, c.customers, s.customers as cohort_customers,
            c.customers / s.customers as retention
        from cells as c join cells as s on s.cohort = c.cohort and s.months_after = 0
        where c.cohort >= ?
        order by c.cohort, c.months_after
        """,
        [as_of, _window_start(as_of)],
    )
    return {"cohorts": frame}


def churn(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    as_of = dates.ml_as_of
    if as_of is None:
        return {}
    if not (has_table(con, "ml", "churn_scores") and has_table(con, "ml", "rfm_segments")):
        return {}
    scores, segments = scope.table("ml", "churn_scores"), scope.table("ml", "rfm_segments")
    customers, value = scope.table("marts", "dim_customer"), scope.table("ml", "customer_value")
    by = f"""
        select {{key}} as "group", s.risk_band, count(*) as customers
        from {scores} as s
        left join {segments} as r on r.customer_key = s.customer_key and r.as_of_date = s.as_of_date
        left join {customers} as c on c.customer_key = s.customer_key and c.is_current
        where s.as_of_date = ? group by all order by all
    """
    metrics = _frame(
        con,
        """
        select metric, max(value) filter (where not starts_with(name, 'baseline/')) as model,
            max(value) filter (where starts_with(name, 'baseline/')) as baseline, max(evaluated_on) as evaluated_on
        from (select metric as name, replace(metric, 'baseline/', '') as metric, value, evaluated_on
              from ml.model_metrics where model = 'churn_scores' and as_of_date = ?)
        where metric in (select unnest(?::varchar[]))
        group by metric order by metric
        """,
        [as_of, CHURN_METRICS],
    )
    at_risk = _frame(
        con,
        f"""
        select s.customer_key, c.full_name, c.region, r.segment, s.churn_probability,
            v.predicted_value::double as predicted_value, r.last_purchase_date
        from {scores} as s
        join {value} as v on v.customer_key = s.customer_key and v.as_of_date = s.as_of_date
        left join {segments} as r on r.customer_key = s.customer_key and r.as_of_date = s.as_of_date
        left join {customers} as c on c.customer_key = s.customer_key and c.is_current
        where s.as_of_date = ? and s.risk_band = 'high'
        order by v.predicted_value desc, s.customer_key limit {AT_RISK_ROWS}
        """,
        [as_of],
    )
    return {
        "risk_by_segment": _frame(con, by.format(key="coalesce(r.segment, 'unknown')"), [as_of]),
        "risk_by_region": _frame(con, by.format(key="coalesce(c.region, 'unknown')"), [as_of]),
        "churn_metrics": metrics,
        "at_risk": at_risk,
    }


def value(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    as_of = dates.ml_as_of
    if as_of is None:
        return {}
    out = {}
    if has_table(con, "ml", "customer_value") and has_table(con, "ml", "rfm_segments"):
        out["value_by_segment"] = _frame(
            con,
            f"""
            select r.segment, count(*) as customers, avg(v.predicted_value)::double as mean_predicted_value,
                avg(v.p_alive) as mean_p_alive
            from {scope.table("ml", "customer_value")} as v
            join {scope.table("ml", "rfm_segments")} as r on r.customer_key = v.customer_key and r.as_of_date = v.as_of_date
            where v.as_of_date = ? group by all order by mean_predicted_value desc
            """,
            [as_of],
        )
    if has_table(con, "ml", "customer_lifecycle"):
        counted = _frame(
            con,
            f"""
            select stage, count(*) as customers from {scope.table("ml", "customer_lifecycle")}
            where as_of_date = ? group by stage
            """,
            [as_of],
        )
        order = pl.DataFrame({"stage": LIFECYCLE_STAGES + sorted(set(counted["stage"]) - set(LIFECYCLE_STAGES))})
        out["lifecycle"] = order.join(counted, on="stage", how="left").with_columns(pl.col("customers").fill_null(0))
    return out


def segments(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    as_of = dates.ml_as_of
    if as_of is None:
        return {}
    if not has_table(con, "ml", "customer_segments"):
        return {}
    profiles = _frame(
        con,
        f"""
        select segment_label, count(*) as customers, avg(recency_days) as mean_recency_days,
            avg(frequency) as mean_frequency, avg(monetary)::double as mean_monetary,
            sum(monetary)::double / sum(sum(monetary)) over () as revenue_share
        from {scope.table("ml", "customer_segments")} where as_of_date = ?
        group by segment_label order by customers desc, segment_label
        """,
        [as_of],
    )
    return {"segment_profiles": profiles}


def rules(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    as_of = dates.ml_as_of
    if as_of is None:
        return {}
    if not has_table(con, "ml", "association_rules"):
        return {}
    frame = _frame(
        con,
        f"""
        select array_to_string(antecedents, ' + ') as antecedents, array_to_string(consequents, ' + ') as consequents,
            support, confidence, lift, basket, item
        from ml.association_rules where as_of_date = ?
        order by lift desc, support desc, antecedents, consequents limit {TOP_RULES}
        """,
        [as_of],
    )
    return {"rules": frame}


def outlook(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    """Weekly net revenue of the last year and the forecast after it (the region's series in a region
    report); repurchase bands per horizon and the 30-day model against its baselines."""
    as_of, out = dates.ml_as_of, {}
    if as_of is None:
        return {}
    if has_table(con, "ml", "sales_forecast"):
        series = ("region", scope.region) if scope.region else ("total", "total")
        out["forecast"] = _frame(
            con,
            """
            select week_start, forecast, lo_80, hi_80, lo_95, hi_95, model from ml.sales_forecast
            where as_of_date = ? and measure = 'net_revenue' and series_type = ? and series_key = ?
            order by week_start
            """,
            [as_of, *series],
        )
        out["weekly_revenue"] = _frame(
            con,
            f"""
            select date_trunc('week', ordered_local_date)::date as week_start, sum(net_amount)::double as revenue
            from {scope.table("marts", "fct_orders")}
            where ordered_local_date >= ? and date_trunc('week', ordered_local_date)::date + 6 <= ?
            group by all order by all
            """,
            [as_of - dt.timedelta(weeks=52), as_of],
        )
    if has_table(con, "ml", "repurchase_scores"):
        out["repurchase_bands"] = _frame(
            con,
            f"""
            select horizon_days, band, count(*) as customers, avg(purchase_probability) as mean_probability
            from {scope.table("ml", "repurchase_scores")} where as_of_date = ? group by all order by all
            """,
            [as_of],
        )
        out["repurchase_metrics"] = _frame(
            con,
            """
            select split_part(metric, '/', 3) as metric,
                max(value) filter (where split_part(metric, '/', 2) = 'model') as model,
                max(value) filter (where split_part(metric, '/', 2) = 'bgnbd') as bgnbd,
                max(value) filter (where split_part(metric, '/', 2) = 'recency') as recency
            from ml.model_metrics
            where model = 'repurchase_scores' and as_of_date = ? and starts_with(metric, 'h30/')
                and split_part(metric, '/', 3) in ('roc_auc', 'brier', 'calibration_error')
            group by 1 order by 1
            """,
            [as_of],
        )
    return out


def campaigns(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    """Each campaign arm against its control group (all regions: an effect is measured on the whole
    randomized group); a campaign that was not randomized shows its status and no effect."""
    as_of = dates.ml_as_of
    if as_of is None or not has_table(con, "ml", "campaign_results"):
        return {}
    frame = _frame(
        con,
        """
        select campaign_id, arm, status, customers, control_customers, conversion_rate, control_conversion_rate,
            revenue_difference, revenue_difference_lo, revenue_difference_hi, revenue_p_value,
            incremental_profit, roi, naive_difference_not_causal
        from ml.campaign_results where as_of_date = ? order by campaign_id, arm
        """,
        [as_of],
    )
    return {"campaign_results": frame}


WEB_STEPS = ["sessions", "product_views", "add_to_carts", "checkouts", "purchases"]


def web(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    """Sessions by the deepest step they reached (a purchase counts as having passed every step
    before it, whether or not the site logged them), by campaign source, over the last 12 months."""
    as_of = dates.as_of
    frame = _frame(
        con,
        f"""
        with sessions as (
            select coalesce(utm_source, '(direct)') as source,
                case when orders > 0 then 4 when checkouts > 0 then 3 when add_to_carts > 0 then 2
                     when product_views > 0 then 1 else 0 end as deepest
            from {scope.table("marts", "fct_web_sessions")}
            where session_local_date between ? and ?
        )
        select source, count(*) as sessions,
            count(*) filter (where deepest >= 1) as product_views,
            count(*) filter (where deepest >= 2) as add_to_carts,
            count(*) filter (where deepest >= 3) as checkouts,
            count(*) filter (where deepest >= 4) as purchases
        from sessions group by all order by sessions desc, source
        """,
        [_window_start(as_of), as_of],
    )
    return {"web_funnel": frame}


def service(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    """Calls, complaints, CSAT and sentiment by channel and month (web sessions are counted in `web`)."""
    as_of = dates.as_of
    frame = _frame(
        con,
        f"""
        select date_trunc('month', occurred_local_date)::date as month, channel,
            count(*) as interactions, count(*) filter (where is_complaint) as complaints,
            avg(csat)::double as mean_csat, avg(sentiment_score)::double as mean_sentiment
        from {scope.table("marts", "fct_interactions")}
        where occurred_local_date between ? and ? and channel <> 'web'
        group by all order by all
        """,
        [_window_start(as_of), as_of],
    )
    return {"service_by_month": frame}


def quality(con: duckdb.DuckDBPyConnection, scope: Scope, dates: Dates) -> dict[str, pl.DataFrame]:
    """Loads and quarantine of the whole warehouse (not customers' rows: never region-scoped)."""
    out = {}
    if has_table(con, "raw", "_load_log"):
        out["loads"] = _frame(
            con,
            """
            select source, count(*) as loads, sum(rows_read)::bigint as rows_read,
                sum(rows_loaded)::bigint as rows_loaded, sum(rows_quarantined)::bigint as rows_quarantined,
                sum(duplicates_skipped)::bigint as duplicates_skipped,
                sum(rows_quarantined) / nullif(sum(rows_read), 0) as quarantine_rate
            from raw._load_log group by source order by source
            """,
        )
    if has_table(con, "raw", "quarantine"):
        out["quarantine"] = _frame(
            con,
            """
            select source, coalesce(field, split_part(reason, ':', 1)) as reason, count(*) as rows
            from raw.quarantine group by all order by rows desc, source, reason
            """,
        )
    if has_table(con, "marts", "customer_identity_map"):
        guarded = (
            "(select count(*) from intermediate.int_identifier_quality where guard_reason is not null)"
            if has_table(con, "intermediate", "int_identifier_quality")
            else "null"
        )
        out["identity"] = _frame(
            con,
            f"""
            select coalesce(sum(n), 0)::bigint as records_linked, count(customer_key) as customers,
                max(n) as largest_customer_records, {guarded} as identifiers_guarded
            from (select customer_key, count(*) as n from marts.customer_identity_map group by customer_key)
            """,  # one aggregation of the map's millions of records, not a count distinct and a group by
        )
    return out


SECTIONS = {
    "sales": sales,
    "rfm": rfm,
    "cohorts": cohorts,
    "churn": churn,
    "value": value,
    "segments": segments,
    "rules": rules,
    "outlook": outlook,
    "campaigns": campaigns,
    "web": web,
    "service": service,
    "quality": quality,
}
