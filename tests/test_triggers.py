"""Triggered follow-ups on sessions whose timing is known: due only once the window has passed,
never for a customer who ordered since, one row per customer and trigger."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ml.triggers import due

NOW = dt.datetime(2025, 6, 1, 12, 0)


def _sessions(rows: list[tuple[str, str, float, float | None]]) -> pl.DataFrame:
    """(trigger, customer, hours before now the session ended, hours before now of the next order)."""
    return pl.DataFrame(
        {
            "trigger": [r[0] for r in rows],
            "customer_key": [r[1] for r in rows],
            "session_ended_at": [NOW - dt.timedelta(hours=r[2]) for r in rows],
            "product_views": [3] * len(rows),
            "add_to_carts": [1 if r[0] == "cart_abandonment" else 0 for r in rows],
            "next_order_at": [None if r[3] is None else NOW - dt.timedelta(hours=r[3]) for r in rows],
            "now": [NOW] * len(rows),
        },
        schema_overrides={"next_order_at": pl.Datetime("us")},
    )


def test_a_follow_up_is_due_after_the_window_and_only_without_an_order_since() -> None:
    sessions = _sessions(
        [
            ("cart_abandonment", "waited", 30, None),  # 30 h ago, nothing since: due at 24 h
            ("cart_abandonment", "too_soon", 10, None),  # window not over yet
            ("cart_abandonment", "bought", 30, 20),  # ordered after the session: never due
            ("browse_abandonment", "browser", 50, None),
            ("browse_abandonment", "browser", 26, None),  # two due sessions: the latest one
        ]
    )
    got = due(sessions, 24)
    assert got.select("trigger", "customer_key").rows() == [
        ("browse_abandonment", "browser"),
        ("cart_abandonment", "waited"),
    ]
    browser = got.filter(pl.col("customer_key") == "browser").row(0, named=True)
    assert browser["session_ended_at"] == NOW - dt.timedelta(hours=26)
    assert browser["hours_waiting"] == pytest.approx(2.0)
    assert due(sessions, 8)["customer_key"].to_list() == ["browser", "too_soon", "waited"]
    assert due(sessions, 72).is_empty()


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        due(_sessions([]), 0)
