"""The marts answer analysts' questions with plain SQL, and agree with the generator's truth."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from orchestration.settings import REPO_ROOT
from tests.conftest import Grown

pytestmark = pytest.mark.slow  # every test here runs the pipeline or reads its warehouse

QUERIES = REPO_ROOT / "warehouse" / "queries"


@pytest.fixture
def con(grown: Grown):
    with duckdb.connect(str(grown.warehouse), read_only=True) as connection:
        yield connection


def query(con: duckdb.DuckDBPyConnection, name: str) -> pl.DataFrame:
    return con.sql((QUERIES / f"{name}.sql").read_text().rstrip().rstrip(";")).pl()


def scalar(con: duckdb.DuckDBPyConnection, sql: str):
    return con.execute(sql).fetchall()[0][0]


def test_analyst_queries_answer_the_questions(con: duckdb.DuckDBPyConnection) -> None:
    revenue = scalar(con, "SELECT sum(quantity * unit_price - coalesce(discount, 0)) FROM raw.store")
    revenue += scalar(
        con, "SELECT sum(quantity * unit_price) FROM staging.stg_web__events WHERE event_type = 'purchase'"
    )

    by_month = query(con, "revenue_by_channel_and_month")
    assert set(by_month["channel"]) == {"store", "web"} and by_month["year_month"].n_unique() == 2
    assert float(by_month["net_revenue"].sum()) == pytest.approx(float(revenue), abs=0.01)

    several = query(con, "customers_in_several_channels")
    assert several["customers"].sum() > 100 and all("+" in c for c in several["channels_used"])

    history = query(con, "customer_region_history")
    movers = history.group_by("customer_key").agg(pl.col("region").n_unique().alias("regions"), pl.len())
    assert movers.height > 0 and (movers["regions"] >= 2).all()
    assert history.filter(pl.col("is_current")).height == movers.height

    # The point-in-time join hits exactly one version per line: no revenue doubled or lost.
    at_sale = query(con, "sales_by_region_at_time_of_sale")
    assert float(at_sale["net_revenue"].sum()) == pytest.approx(float(revenue), abs=0.01)


def test_sessions_attach_anonymous_visits_once_the_cookie_logs_in(con: duckdb.DuckDBPyConnection, grown: Grown) -> None:
    sessions = con.sql("SELECT cookie_id, session_started_at, has_login, customer_key FROM marts.fct_web_sessions").pl()
    first_login = (
        sessions.filter(pl.col("has_login"))
        .group_by("cookie_id")
        .agg(pl.col("session_started_at").min().alias("login_at"))
    )
    before_login = sessions.join(first_login, on="cookie_id").filter(pl.col("session_started_at") < pl.col("login_at"))
    assert before_login.height > 10
    assert before_login["customer_key"].null_count() < 0.05 * before_login.height  # shared devices stay anonymous
    # Sessions are 30-minute-inactivity sessions: no two of a cookie within 30 minutes of each other.
    gap = scalar(
        con,
        """
        SELECT min(date_diff('second', previous_end, session_started_at)) FROM (
            SELECT session_started_at, lag(session_ended_at) OVER (PARTITION BY cookie_id ORDER BY session_started_at) AS previous_end
            FROM marts.fct_web_sessions) WHERE previous_end IS NOT NULL""",
    )
    assert gap > 30 * 60


def test_interactions_carry_csat_complaints_and_sentiment(con: duckdb.DuckDBPyConnection, grown: Grown) -> None:
    by_channel = dict(
        con.execute("""
        SELECT channel, count(*) FILTER (WHERE csat IS NOT NULL) FROM marts.fct_interactions GROUP BY channel""").fetchall()
    )
    assert by_channel["call_center"] > 0 and by_channel["web"] == by_channel["social"] == 0
    assert scalar(con, "SELECT count(*) FROM marts.fct_interactions WHERE is_complaint") > 0
    scored = con.sql(
        "SELECT interaction_id, sentiment FROM intermediate.int_social_interactions_scored WHERE sentiment IS NOT NULL"
    ).pl()
    truth = pl.read_csv(grown.sources.parent / "truth" / "social.csv").select("interaction_id", "sentiment")
    both = scored.join(truth.rename({"sentiment": "true_sentiment"}), on="interaction_id")
    expected = both["true_sentiment"].replace_strict({-1: "negative", 0: "neutral", 1: "positive"})
    assert both.height > 50 and (both["sentiment"] == expected).mean() > 0.95


def test_customer_360_one_row_per_customer(con: duckdb.DuckDBPyConnection) -> None:
    customers = scalar(con, "SELECT count(DISTINCT customer_key) FROM marts.customer_identity_map")
    assert scalar(con, "SELECT count(*) FROM marts.customer_360") == customers
    assert scalar(con, "SELECT count(*) FROM marts.dim_customer WHERE is_current") == customers
    buyers = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE first_purchase_at <= last_purchase_at AND orders > 0)
        FROM marts.customer_360 WHERE last_purchase_at IS NOT NULL""").fetchall()[0]
    assert buyers[0] == buyers[1] > 100
