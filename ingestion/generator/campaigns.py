"""Planted campaigns: a randomized test and a targeted send, with the true effect on every contact.

- `C-TEST` (randomized): consented registry members signed up by its day, assigned at random to
  `discount_10` (10 % off), `free_gift` or `holdout` (not contacted). A contacted member places one
  extra order within the response window with a probability set by their type (UPLIFT), so the true
  uplift differs by customer. The e-mail tool exports a CSV keyed by member id, with Windows line
  endings, a few rows without a group, a few deleted accounts and, where two member lists were
  merged, a re-registered person listed under both ids in different groups.
- `C-VIP` (targeted, not randomized): the top fifth by purchase rate get `vip_preview`; as many of
  the others are logged as `not_selected`. The true uplift is small and flat; comparing the two
  groups shows a large difference that is who was chosen, not what the campaign did. The CRM tool
  exports an Excel sheet keyed by the mobile number the person gave (dummy numbers included).

Response orders are store receipts paid with the member card (a coupon is redeemed against it) in
the coupon till's own file, so the warehouse can see every one; they are never returned. Truth: truth/campaign_contacts.csv (per
contact: person, arm, type, uplift probability, responded, realized incremental revenue) and
truth/campaign_effects.csv (per campaign and arm: the true revenue-per-customer effect).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from ingestion.generator.config import GeneratorConfig
from ingestion.generator.messy import phone_variants
from ingestion.generator.population import Catalog, Persons
from ingestion.generator.simulate import Day, draw_baskets

WINDOW_DAYS = 14
TYPES = ("occasional", "regular", "frequent")  # tertiles of purchase rate among a campaign's members
# P(one extra order in the window) by arm and type: the discount moves occasional buyers, the gift
# the frequent ones, the VIP preview hardly anyone.
UPLIFT: dict[str, dict[str, float]] = {
    "discount_10": {"occasional": 0.30, "regular": 0.15, "frequent": 0.04},
    "free_gift": {"occasional": 0.06, "regular": 0.10, "frequent": 0.16},
    "vip_preview": {"occasional": 0.03, "regular": 0.03, "frequent": 0.03},
}
DISCOUNT = {"discount_10": 0.10}  # share of the response order's value given off
COST = {"discount_10": 0.08, "free_gift": 2.50, "holdout": 0.0, "vip_preview": 4.00, "not_selected": 0.0}
OFFERS = {
    "discount_10": "10% off your next order",
    "free_gift": "free tea sample with any order",
    "vip_preview": "private preview evening",
}


@dataclass
class Campaign:
    campaign_id: str
    name: str
    day: int  # assignment day index
    randomized: bool
    contacts: pl.DataFrame  # person, arm, customer_type, uplift_probability, responds, response_day
    revenue: dict[int, float] = field(default_factory=dict)  # person -> realized incremental revenue


def _types(rate: np.ndarray) -> np.ndarray:
    cuts = np.quantile(rate, [1 / 3, 2 / 3])
    return np.asarray(TYPES, object)[np.searchsorted(cuts, rate, side="right")]


def _contacts(rng: np.random.Generator, persons: Persons, who: np.ndarray, arms: np.ndarray, day: int) -> pl.DataFrame:
    kinds = _types(persons.purchase_rate[who])
    uplift = np.array([UPLIFT.get(a, {}).get(k, 0.0) for a, k in zip(arms, kinds)])
    uplift[persons.churn_day[who] <= day + WINDOW_DAYS] = 0.0  # nothing brings back who has stopped buying
    return pl.DataFrame(
        {
            "person": who,
            "arm": arms,
            "customer_type": kinds,
            "uplift_probability": uplift,
            "responds": rng.random(len(who)) < uplift,
            "response_day": day + rng.integers(1, WINDOW_DAYS, len(who)),  # strictly inside the window
        }
    )


def plan_campaigns(cfg: GeneratorConfig, persons: Persons, rng: np.random.Generator) -> list[Campaign]:
    """Who each campaign reaches, in which arm, and who will respond (drawn now, from its own stream)."""
    out: list[Campaign] = []
    test_day, vip_day = int(cfg.days * 0.4), int(cfg.days * 0.6)
    if cfg.days - vip_day <= WINDOW_DAYS:
        return out  # too short a sample for a whole response window
    members = np.flatnonzero(persons.consent & (persons.signup_day <= test_day))
    arms = np.asarray(["discount_10", "free_gift", "holdout"], object)[rng.integers(0, 3, len(members))]
    out.append(
        Campaign("C-TEST", "Spring reactivation test", test_day, True, _contacts(rng, persons, members, arms, test_day))
    )
    members = np.flatnonzero(persons.consent & (persons.signup_day <= vip_day))
    top = persons.purchase_rate[members] >= np.quantile(persons.purchase_rate[members], 0.8)
    rest = rng.permutation(members[~top])[: int(top.sum())]
    who = np.concatenate([members[top], rest])
    arms = np.asarray(["vip_preview"] * int(top.sum()) + ["not_selected"] * len(rest), object)
    out.append(Campaign("C-VIP", "VIP preview invitation", vip_day, False, _contacts(rng, persons, who, arms, vip_day)))
    return out


def with_responses(
    day: Day, campaigns: list[Campaign], catalog: Catalog, persons: Persons, rng: np.random.Generator
) -> Day:
    """The day with the extra orders its responders place: ordinary baskets, paid with the member card."""
    frames, next_seq, counts = [], day.baskets, day.rule_counts.copy()
    for c in campaigns:
        due = c.contacts.filter(pl.col("responds") & (pl.col("response_day") == day.index))
        if due.is_empty():
            continue
        who = due["person"].to_numpy()
        order, product, rule_counts = draw_baskets(rng, catalog, len(who))
        counts += rule_counts
        quantity = 1 + rng.poisson(0.3, len(order))
        price = catalog.price[product]
        off = np.array([DISCOUNT.get(a, 0.0) for a in due["arm"].to_numpy()])[order]
        discount = np.round(price * quantity * off, 2)
        seconds = rng.integers(10 * 3600, 20 * 3600, len(who))
        ts = (np.datetime64(day.date, "s") + seconds.astype("timedelta64[s]")).astype("datetime64[ms]")
        net = np.bincount(order, weights=price * quantity - discount, minlength=len(who))
        for p, v in zip(who, net):
            c.revenue[int(p)] = c.revenue.get(int(p), 0.0) + float(v)
        frames.append(
            pl.DataFrame(
                {
                    "order_seq": next_seq + order,
                    "person": who[order],
                    "is_web": np.zeros(len(order), bool),
                    "store": persons.home_store[who][order],
                    "product": product,
                    "quantity": quantity,
                    "unit_price": price,
                    "discount": discount,
                    "ts": ts[order],
                    "coupon": np.ones(len(order), bool),
                }
            )
        )
        next_seq += len(who)
    if not frames:
        return day
    lines = pl.concat([day.lines, *frames], how="vertical_relaxed")
    return replace(day, lines=lines, baskets=next_seq, rule_counts=counts)


def _test_export(
    c: Campaign, persons: Persons, rng: np.random.Generator, date: dt.date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the e-mail tool's CSV rows, the person behind each contact row)."""
    contacts = c.contacts
    member = persons.member_id[contacts["person"].to_numpy()].astype(object)
    rows = contacts.select("person", "arm").with_columns(member=pl.Series(member.tolist(), dtype=pl.String))
    # Two member lists merged: a re-registered person appears under the second id in another group.
    dup = persons.dup_member_id[contacts["person"].to_numpy()]
    twice = np.flatnonzero((dup != "") & (rng.random(len(dup)) < 0.5))
    others = {"discount_10": "free_gift", "free_gift": "holdout", "holdout": "discount_10"}
    rows = pl.concat(
        [
            rows,
            pl.DataFrame(
                {
                    "person": contacts["person"].to_numpy()[twice],
                    "arm": [others[a] for a in contacts["arm"].to_numpy()[twice]],
                    "member": dup[twice].astype(str).tolist(),
                }
            ),
        ]
    )
    deleted = max(1, len(rows) // 200)  # accounts closed since the list was pulled: nobody has these ids
    gone = pl.DataFrame(
        {
            "person": [-1] * deleted,
            "arm": rng.choice(list(others), deleted).tolist(),
            "member": [f"M9{rng.integers(10**6, 10**7)}" for _ in range(deleted)],
        }
    )
    rows = pl.concat([rows, gone])
    no_group = rng.random(len(rows)) < 0.003
    stamp = f"{date} 09:{rng.integers(0, 60):02d}:00"
    export = rows.select(
        campaign=pl.lit(c.campaign_id),
        member_id="member",
        group=pl.when(pl.Series(no_group)).then(pl.lit("")).otherwise(pl.col("arm")),
        assigned=pl.lit(stamp),
        channel=pl.when(pl.col("arm") == "holdout").then(pl.lit("email")).otherwise(pl.lit("sms")),
        cost=pl.col("arm").replace_strict(COST, return_dtype=pl.Float64),
        campaign_name=pl.lit(c.name),
        offer=pl.col("arm").replace_strict(OFFERS, default=None),
    )
    return export, rows.select("person", "member", "arm")


def _vip_export(
    c: Campaign, persons: Persons, rng: np.random.Generator, date: dt.date, other_format: float
) -> pl.DataFrame:
    """The CRM tool's Excel sheet: contacts keyed by the mobile number the person gave."""
    who = c.contacts["person"].to_numpy()
    sent = dt.datetime.combine(date, dt.time(10, 30))
    return pl.DataFrame(
        {
            "Campaign ID": [c.campaign_id] * len(who),
            "Contact": [f"T-{i + 1:06d}" for i in range(len(who))],
            "Mobile": phone_variants(persons.given_phone[who], rng, other_format).tolist(),
            "Segment": c.contacts["arm"].to_list(),
            "Sent At": [sent] * len(who),
            "Channel": ["phone" if a == "vip_preview" else "other" for a in c.contacts["arm"]],
            "Cost": [COST[a] for a in c.contacts["arm"]],
            "Campaign": [c.name] * len(who),
        }
    )


def write_campaign(
    c: Campaign, folder: Path, persons: Persons, rng: np.random.Generator, date: dt.date, other_format: float
) -> tuple[Path, pl.DataFrame | str, pl.DataFrame]:
    """(path, content, contact truth) of one campaign's export; written by the caller at its day."""
    folder.mkdir(parents=True, exist_ok=True)
    if c.randomized:
        export, rows = _test_export(c, persons, rng, date)
        text = export.write_csv().replace("\n", "\r\n")
        truth = rows.with_columns(contact_id=pl.col("member"), campaign_id=pl.lit(c.campaign_id)).drop("member")
        return folder / f"campaign_{c.campaign_id}_{date:%Y%m%d}.csv", text, truth
    export = _vip_export(c, persons, rng, date, other_format)
    truth = c.contacts.select("person", "arm").with_columns(
        contact_id=export["Contact"], campaign_id=pl.lit(c.campaign_id)
    )
    return folder / f"campaign_{c.campaign_id}_{date:%Y%m%d}.xlsx", export, truth


def campaign_truth(campaigns: list[Campaign], listed: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per contact, per campaign and arm) truth. A person listed in two arms is left out of the
    effects, as the warehouse leaves them out; deleted accounts are no person."""
    per_contact = pl.concat(
        [
            c.contacts.with_columns(
                campaign_id=pl.lit(c.campaign_id),
                randomized=pl.lit(c.randomized),
                incremental_revenue=pl.col("person").replace_strict(c.revenue, default=0.0, return_dtype=pl.Float64),
            )
            for c in campaigns
        ]
    ).rename({"person": "person_id"})
    rows = pl.concat(listed).filter(pl.col("person") >= 0)
    twice = rows.group_by("campaign_id", "person").agg(arms=pl.col("arm").n_unique()).filter(pl.col("arms") > 1)
    per_contact = per_contact.join(
        twice.select("campaign_id", person_id="person", in_two_arms=pl.lit(True)),
        on=["campaign_id", "person_id"],
        how="left",
    ).with_columns(pl.col("in_two_arms").fill_null(False))
    effects = (
        per_contact.filter(~pl.col("in_two_arms"))
        .group_by("campaign_id", "randomized", "arm")
        .agg(
            customers=pl.len(),
            true_conversion_uplift=pl.col("uplift_probability").mean(),
            true_revenue_per_customer_effect=pl.col("incremental_revenue").mean(),
        )
        .sort("campaign_id", "arm")
    )
    return per_contact.drop("response_day"), effects
