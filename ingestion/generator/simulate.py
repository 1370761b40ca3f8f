"""One simulated day: who buys, browses, calls and posts, vectorized over all persons.

Planted structure: gamma-distributed purchase rates, weekly/yearly seasonality and promotions,
churners whose buying and browsing fade over the 60 days before they stop while their calls,
complaints and bad CSAT rise, and product associations added to baskets with known probability.
Frames returned here are clean (true values); writing adds the mess.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from ingestion.contracts import SOCIAL_TYPES
from ingestion.generator.config import GeneratorConfig, coded
from ingestion.generator.population import Catalog, Persons

WARNING_DAYS = 60
# The event kinds sessions are built from (below) must be codes of the web contract.
coded(["page_view", "login", "search", "product_view", "add_to_cart", "checkout", "purchase"], "event_type", "web")
PROMOTIONS = [(3, 8), (5, 20), (6, 18), (8, 8), (11, 11), (12, 12)]  # (month, day): 3-day sales
UTM = [
    ("baidu", "cpc", "brand"),
    ("wechat", "social", "spring_sale"),
    ("newsletter", "email", "weekly"),
    ("douyin", "video", "live_show"),
    (None, None, None),
    (None, None, None),
    (None, None, None),
]
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 MicroMessenger/8.0.47",
    "Mozilla/5.0 (Linux; Android 14; V2309A) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
]
REASONS_OK = ["order_status", "delivery", "product_question", "membership", "invoice"]
REASONS_BAD = ["complaint", "refund", "damaged_item", "late_delivery", "cancel_membership"]
POSITIVE = [
    "love the new tea set!",
    "great service at the store today",
    "fast delivery, thanks",
    "好喜欢这个",
    "推荐给朋友了",
]
NEGATIVE = ["still waiting for my refund", "worst customer service", "item arrived broken", "太失望了", "不会再买了"]
NEUTRAL = ["any discounts this weekend?", "is the store open on sunday?", "new collection looks nice", "请问有货吗"]


@dataclass
class Day:
    index: int
    date: dt.date
    lines: pl.DataFrame  # order lines: order_id, person, channel, store, sku_idx, quantity, unit_price, discount, ts
    sessions: pl.DataFrame  # web events
    calls: pl.DataFrame
    social: pl.DataFrame
    baskets: int  # orders placed today
    rule_counts: np.ndarray  # per planted rule: [orders with A, with B, with both]


def promotion_days(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day of a planted promotion from `first` to `last`: the sales calendar a retailer plans ahead."""
    days = [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]
    return [d for d in days if season(d)[1]]


def season(date: dt.date) -> tuple[float, bool]:
    """Demand multiplier of a date and whether a promotion runs."""
    weekly = 1.3 if date.weekday() >= 5 else 1.0
    yearly = 1.0 + 0.25 * np.cos(2 * np.pi * (date.timetuple().tm_yday - 350) / 365.0)
    promo = any(
        dt.date(date.year, m, d) <= date < dt.date(date.year, m, d) + dt.timedelta(days=3) for m, d in PROMOTIONS
    )
    return weekly * yearly * (1.8 if promo else 1.0), promo


def _fade(persons: Persons, d: int) -> np.ndarray:
    """1 for normal activity, falling to 0.25 over the warning window, 0 after churn."""
    to_churn = persons.churn_day - d
    fade = np.clip(0.25 + 0.75 * (to_churn / WARNING_DAYS), 0.25, 1.0)
    return np.where(to_churn <= 0, 0.0, fade)


def _timestamps(rng: np.random.Generator, date: dt.date, n: int, peak: float, spread: float) -> np.ndarray:
    seconds = np.clip(rng.normal(peak, spread, n), 7 * 3600, 23.5 * 3600).astype(np.int64)
    return (np.datetime64(date, "s") + seconds.astype("timedelta64[s]")).astype("datetime64[ms]")


def draw_baskets(
    rng: np.random.Generator, catalog: Catalog, n_orders: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order index, product index) of every line, plus per-rule [A, B, both] order counts."""
    sizes = 1 + rng.poisson(1.4, n_orders)
    order = np.repeat(np.arange(n_orders), sizes)
    product = rng.choice(len(catalog.sku), size=len(order), p=catalog.popularity)
    extra_o, extra_p = [order], [product]
    for a, b, p in catalog.rules:
        holders = np.unique(order[product == a])
        add = holders[rng.random(len(holders)) < p]
        extra_o.append(add)
        extra_p.append(np.full(len(add), b))
    pairs = np.unique(np.stack([np.concatenate(extra_o), np.concatenate(extra_p)]), axis=1)
    order, product = pairs[0], pairs[1]
    counts = np.zeros((len(catalog.rules), 3), dtype=np.int64)
    for i, (a, b, _) in enumerate(catalog.rules):
        has_a = np.zeros(n_orders, bool)
        has_b = np.zeros(n_orders, bool)
        has_a[order[product == a]] = True
        has_b[order[product == b]] = True
        counts[i] = [has_a.sum(), has_b.sum(), (has_a & has_b).sum()]
    return order, product, counts


def simulate_day(cfg: GeneratorConfig, persons: Persons, catalog: Catalog, rng: np.random.Generator, d: int) -> Day:
    date = cfg.start + dt.timedelta(days=d)
    factor, promo = season(date)
    signed_up = persons.signup_day <= d
    fade = _fade(persons, d)

    # Orders.
    n_orders_pp = rng.poisson(persons.purchase_rate * factor * fade * signed_up)
    buyer = np.repeat(np.arange(persons.n), n_orders_pp)
    web = rng.random(len(buyer)) < persons.web_share[buyer]
    line_order, product, rule_counts = draw_baskets(rng, catalog, len(buyer))
    n_lines = len(line_order)
    store_of_order = np.where(
        rng.random(len(buyer)) < 0.85, persons.home_store[buyer], rng.integers(0, cfg.stores, len(buyer))
    )
    order_ts = _timestamps(rng, date, len(buyer), 15.5 * 3600, 3.5 * 3600)
    price = catalog.price[product]
    quantity = 1 + rng.poisson(0.3, n_lines)
    discount = np.round(price * quantity * (0.2 if promo else 0.0) * (rng.random(n_lines) < 0.7), 2)
    lines = pl.DataFrame(
        {
            "order_seq": line_order,
            "person": buyer[line_order],
            "is_web": web[line_order],
            "store": store_of_order[line_order],
            "product": product,
            "quantity": quantity,
            "unit_price": price,
            "discount": discount,
            "ts": order_ts[line_order],
            "coupon": np.zeros(n_lines, bool),  # a campaign response (campaigns.py) redeems a coupon
        }
    )

    # Web sessions: browsing (fades before churn), plus one session per web order, plus anonymous traffic.
    visits_pp = rng.poisson(persons.visit_rate * factor * np.maximum(fade, 0.1) * signed_up)
    visitor = np.repeat(np.arange(persons.n), visits_pp)
    web_orders = np.flatnonzero(web)
    n_anon = int(rng.poisson(0.3 * (len(visitor) + len(web_orders))))
    sess_person = np.concatenate([visitor, buyer[web_orders], np.full(n_anon, -1)])
    sess_order = np.concatenate([np.full(len(visitor), -1), web_orders, np.full(n_anon, -1)])
    sessions = _web_sessions(rng, catalog, date, sess_person, sess_order, order_ts, lines)

    # Calls: more, and angrier, in the warning window.
    warning = (fade < 1.0) & (fade > 0.0)
    calls_pp = rng.poisson(persons.call_rate * np.where(warning, 6.0, 1.0) * signed_up)
    caller = np.repeat(np.arange(persons.n), calls_pp)
    angry = warning[caller] | (rng.random(len(caller)) < 0.15)
    start_ts = _timestamps(rng, date, len(caller), 14 * 3600, 3 * 3600)
    duration = (60 + rng.gamma(2.0, 150.0, len(caller))).astype(np.int64)
    csat = np.where(angry, rng.choice([1, 2, 2, 3], len(caller)), rng.choice([3, 4, 5, 5], len(caller)))
    calls = pl.DataFrame(
        {
            "person": caller,
            "started": start_ts,
            "ended": start_ts + duration.astype("timedelta64[s]").astype("timedelta64[ms]"),
            "angry": angry,
            "reason": np.where(
                angry,
                np.asarray(REASONS_BAD, object)[rng.integers(0, 5, len(caller))],
                np.asarray(REASONS_OK, object)[rng.integers(0, 5, len(caller))],
            ),
            "csat": csat,
            "answered_survey": rng.random(len(caller)) < 0.6,
        }
    )

    # Social interactions.
    social_pp = rng.poisson(persons.social_rate * np.where(warning, 2.0, 1.0) * signed_up)
    poster = np.repeat(np.arange(persons.n), social_pp)
    mood = np.where(warning[poster], rng.choice([0, 0, 1], len(poster)), rng.choice([0, 1, 2, 2], len(poster)))
    texts = np.where(
        mood == 0,
        np.asarray(NEGATIVE, object)[rng.integers(0, 5, len(poster))],
        np.where(
            mood == 1,
            np.asarray(NEUTRAL, object)[rng.integers(0, 4, len(poster))],
            np.asarray(POSITIVE, object)[rng.integers(0, 5, len(poster))],
        ),
    )
    social = pl.DataFrame(
        {
            "person": poster,
            "ts": _timestamps(rng, date, len(poster), 20 * 3600, 3 * 3600),
            "type": np.asarray(SOCIAL_TYPES, object)[rng.choice(6, len(poster), p=[0.15, 0.3, 0.25, 0.1, 0.1, 0.1])],
            "text": texts,
            "sentiment": mood - 1,
        }
    )
    return Day(d, date, lines, sessions, calls, social, len(buyer), rule_counts)


def _web_sessions(
    rng: np.random.Generator,
    catalog: Catalog,
    date: dt.date,
    person: np.ndarray,
    order: np.ndarray,
    order_ts: np.ndarray,
    lines: pl.DataFrame,
) -> pl.DataFrame:
    """Events of each session: login, views, search, cart, checkout and purchase lines for orders."""
    n = len(person)
    if n == 0:
        return pl.DataFrame()
    is_order = order >= 0
    browse_views = 1 + rng.poisson(2.5, n)
    abandons = (~is_order) & (rng.random(n) < 0.25)
    logs_in = (person >= 0) & (is_order | (rng.random(n) < 0.5))
    searches = rng.random(n) < 0.3
    utm = rng.integers(0, len(UTM), n)
    order_start = order_ts[np.maximum(order, 0)] if len(order_ts) else np.full(n, np.datetime64(date, "ms"))
    start = np.where(
        is_order, order_start - np.timedelta64(600_000, "ms"), _timestamps(rng, date, n, 20 * 3600, 4 * 3600)
    )
    # Event skeleton per session: [page_view, login?, search?, product_view x k, add_to_cart?, checkout?]
    kinds: list[np.ndarray] = []
    sess: list[np.ndarray] = []
    step: list[np.ndarray] = []

    def add(mask: np.ndarray, kind: str, position: np.ndarray | int) -> None:
        idx = np.flatnonzero(mask)
        kinds.append(np.full(len(idx), kind, dtype=object))
        sess.append(idx)
        step.append(np.broadcast_to(position, n)[idx] if not isinstance(position, int) else np.full(len(idx), position))

    add(np.ones(n, bool), "page_view", 0)
    add(logs_in, "login", 1)
    add(searches, "search", 2)
    views = np.repeat(np.arange(n), browse_views)
    kinds.append(np.full(len(views), "product_view", dtype=object))
    sess.append(views)
    step.append(3 + np.concatenate([np.arange(k) for k in browse_views]) if n else np.array([], int))
    add(abandons, "add_to_cart", 20)
    add(is_order, "checkout", 21)
    ev = pl.DataFrame(
        {"session": np.concatenate(sess), "event_type": np.concatenate(kinds), "step": np.concatenate(step)}
    )
    viewed = rng.choice(len(catalog.sku), len(ev), p=catalog.popularity)
    ev = ev.with_columns(product=pl.Series(viewed), cart_price=pl.Series(catalog.price[viewed]))
    # Purchase events: one per line of the web order.
    sess_of_order = {o: s for s, o in enumerate(order) if o >= 0}
    web_lines = lines.filter(pl.col("is_web") & pl.col("order_seq").is_in(list(sess_of_order)))
    purchases = web_lines.select(
        session=pl.col("order_seq").replace_strict(sess_of_order, return_dtype=pl.Int64),
        event_type=pl.lit("purchase"),
        step=pl.lit(30, pl.Int64) + pl.int_range(pl.len()).over("order_seq"),
        product=pl.col("product"),
        quantity=pl.col("quantity"),
        unit_price=pl.col("unit_price"),
        order_seq=pl.col("order_seq"),
    )
    is_cart = pl.col("event_type") == "add_to_cart"
    ev = ev.with_columns(
        quantity=pl.when(is_cart).then(pl.lit(1, pl.Int64)),
        unit_price=pl.when(is_cart).then(pl.col("cart_price")),
        order_seq=pl.lit(None, pl.Int64),
    ).drop("cart_price")
    ev = pl.concat([ev, purchases], how="vertical_relaxed").sort("session", "step")
    ev = ev.with_columns(seq=pl.int_range(pl.len()).over("session"))
    meta = pl.DataFrame(
        {
            "session": np.arange(n),
            "person": person,
            "logged_in": logs_in,
            "start": start,
            "utm": utm,
            "new_cookie": rng.random(n) < 0.2,
            "ua": rng.integers(0, len(USER_AGENTS), n),
        }
    )
    ev = ev.join(meta, on="session", maintain_order="left").with_columns(
        ts=pl.col("start") + pl.duration(seconds=pl.col("seq") * 45 + pl.col("session") % 40)
    )
    return ev
