"""Who exists in the generated world: persons (with their behaviour), products, stores and the
planted product associations. Arrays of one row per person; everything drawn from one seed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from ingestion.generator.config import GeneratorConfig, coded
from ingestion.generator.shared_contacts import (
    assign_placeholders,
    households,
    landline,
    placeholder_emails,
    placeholder_mobiles,
)

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高")
SURNAME_PINYIN = [
    "wang",
    "li",
    "zhang",
    "liu",
    "chen",
    "yang",
    "huang",
    "zhao",
    "wu",
    "zhou",
    "xu",
    "sun",
    "ma",
    "zhu",
    "hu",
    "guo",
    "he",
    "lin",
    "luo",
    "gao",
]
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰")
GIVEN_PINYIN = [
    "wei",
    "fang",
    "na",
    "min",
    "jing",
    "li",
    "qiang",
    "lei",
    "jun",
    "yang",
    "yong",
    "yan",
    "jie",
    "juan",
    "tao",
    "ming",
    "chao",
    "xiu",
    "xia",
    "ping",
    "gang",
    "gui",
    "ying",
    "hua",
    "yu",
    "lan",
]
DOMAINS = ["qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com", "foxmail.com"]
REGIONS = [  # region, city, area code
    ("Shanghai", "Shanghai", "021"),
    ("Beijing", "Beijing", "010"),
    ("Guangdong", "Guangzhou", "020"),
    ("Guangdong", "Shenzhen", "0755"),
    ("Zhejiang", "Hangzhou", "0571"),
    ("Jiangsu", "Nanjing", "025"),
    ("Sichuan", "Chengdu", "028"),
    ("Hubei", "Wuhan", "027"),
]
CATEGORIES = ["tea", "snacks", "kitchen", "home", "beauty", "toys", "stationery", "apparel"]
TIERS = ["basic", "silver", "gold", "platinum"]


@dataclass
class Persons:
    """One row per true person (index = person id)."""

    n: int
    member_id: np.ndarray  # registry id 'M0000001'
    dup_member_id: np.ndarray  # second registration or '' (duplicate_registration)
    name: np.ndarray
    is_latin_name: np.ndarray
    gender: np.ndarray
    birth_date: np.ndarray  # datetime64[D]
    email: np.ndarray
    phone: np.ndarray  # canonical: 11-digit mobile, 'AREA-NUMBER' landline or '+CC...' foreign
    given_phone: np.ndarray  # what they tell the registry and the tills: their phone, or a dummy one
    given_email: np.ndarray  # what they tell the registry: their email, or a throwaway one
    shared_contacts: pl.DataFrame  # planted shared values: kind, value, persons
    region_idx: np.ndarray
    card: np.ndarray
    signup_day: np.ndarray  # day index; negative = before the window
    signup_channel: np.ndarray
    consent: np.ndarray
    purchase_rate: np.ndarray  # expected orders per day while active
    web_share: np.ndarray  # share of orders placed on the web
    visit_rate: np.ndarray  # web sessions per day
    call_rate: np.ndarray
    social_rate: np.ndarray
    churn_day: np.ndarray  # day index the person stops buying; large = never
    home_store: np.ndarray
    handles: np.ndarray  # social handle ('' when not on social)
    platform: np.ndarray
    cookie: np.ndarray

    def frame(self, start: dt.date) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "person_id": np.arange(self.n),
                "member_id": self.member_id,
                "duplicate_member_id": self.dup_member_id,
                "name": self.name,
                "email": self.email,
                "phone": self.phone,
                "signup_date": np.datetime64(start) + self.signup_day.astype("timedelta64[D]"),
                "is_churner": self.churn_day < 10**6,
                "churn_date": np.where(
                    self.churn_day < 10**6,
                    np.datetime64(start) + np.minimum(self.churn_day, 10**5).astype("timedelta64[D]"),
                    np.datetime64("NaT"),
                ),
                "purchase_rate": self.purchase_rate,
            }
        )


def _pick(rng: np.random.Generator, options: list, size: int) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), size)]


def make_persons(cfg: GeneratorConfig, rng: np.random.Generator) -> Persons:
    n = cfg.customers
    sur = rng.integers(0, len(SURNAMES), n)
    g1 = rng.integers(0, len(GIVEN), n)
    g2 = rng.integers(0, len(GIVEN), n)
    two = rng.random(n) < 0.6
    latin = rng.random(n) < 0.15
    cn_names = np.array(
        [SURNAMES[s] + GIVEN[a] + (GIVEN[b] if t else "") for s, a, b, t in zip(sur, g1, g2, two)], dtype=object
    )
    py_names = np.array(
        [
            f"{GIVEN_PINYIN[a].title()}{GIVEN_PINYIN[b] if t else ''} {SURNAME_PINYIN[s].title()}"
            for s, a, b, t in zip(sur, g1, g2, two)
        ],
        dtype=object,
    )
    name = np.where(latin, py_names, cn_names)
    email = np.array(
        [
            f"{SURNAME_PINYIN[s]}.{GIVEN_PINYIN[a]}{i % 9973}@{DOMAINS[i % len(DOMAINS)]}"
            for i, (s, a) in enumerate(zip(sur, g1))
        ],
        dtype=object,
    )
    kind = rng.random(n)
    mobile = rng.choice([13, 15, 17, 18, 19], n) * 10**9 + rng.integers(0, 10**9, n)
    region_idx = rng.integers(0, len(REGIONS), n)
    phone = np.array([str(m) for m in mobile], dtype=object)
    home_line = kind < 0.05
    foreign = (kind >= 0.05) & (kind < 0.07)
    phone[home_line] = [landline(rng, REGIONS[r][2]) for r in region_idx[home_line]]
    phone[foreign] = [f"+44 7{rng.integers(10**8, 10**9)}" for _ in range(int(foreign.sum()))]
    for group in households(rng, n, cfg.mess.household_landline):  # a family lives in one place
        region_idx[group] = region_idx[group[0]]
        phone[group] = landline(rng, REGIONS[region_idx[group[0]]][2])
    given_phone, given_email = phone.copy(), email.copy()
    dummy_phone, dummy_phone_values = assign_placeholders(rng, n, cfg.mess.placeholder_phone, placeholder_mobiles(rng))
    given_phone[dummy_phone] = dummy_phone_values
    dummy_email, dummy_email_values = assign_placeholders(
        rng, n, cfg.mess.placeholder_email, placeholder_emails(rng, DOMAINS)
    )
    given_email[dummy_email] = dummy_email_values
    shared = (
        pl.concat(
            [
                # A member who gave a dummy mobile does not share the landline in the data.
                pl.DataFrame({"kind": "household_landline", "value": given_phone}).filter(
                    pl.col("value").str.contains("-")
                ),
                pl.DataFrame({"kind": "placeholder_phone", "value": dummy_phone_values.astype(str)}),
                pl.DataFrame({"kind": "placeholder_email", "value": dummy_email_values.astype(str)}),
            ]
        )
        .group_by("kind", "value")
        .agg(persons=pl.len())
        .filter(pl.col("persons") > 1)
        .sort("kind", "value")
    )
    dup = rng.random(n) < cfg.mess.duplicate_registration
    member_id = np.array([f"M{i + 1:07d}" for i in range(n)], dtype=object)
    dup_member_id = np.where(dup, np.array([f"M{n + i + 1:07d}" for i in range(n)], dtype=object), "")
    signup_day = np.where(rng.random(n) < cfg.signup_share, rng.integers(0, cfg.days, n), -rng.integers(1, 1500, n))
    # Heterogeneous purchase rates: gamma-distributed, about 4.5 orders a year on average.
    purchase_rate = rng.gamma(0.9, 4.5 / 0.9 / 365.0, n)
    churners = (signup_day < 0) & (rng.random(n) < cfg.churn_share)
    churn_day = np.where(
        churners, rng.integers(int(cfg.days * 0.3), max(int(cfg.days * 0.85), int(cfg.days * 0.3) + 1), n), 10**9
    )
    platforms = coded(["weibo", "wechat", "douyin", "xiaohongshu", "instagram"], "platform", "social")
    social = rng.random(n) < 0.35
    handles = np.where(
        social,
        np.array(
            [f"@{SURNAME_PINYIN[s]}{GIVEN_PINYIN[a]}_{i % 997}" for i, (s, a) in enumerate(zip(sur, g1))], dtype=object
        ),
        "",
    )
    return Persons(
        n=n,
        member_id=member_id,
        dup_member_id=dup_member_id,
        name=name,
        is_latin_name=latin,
        gender=_pick(
            rng, coded(["F", "M", "F", "M", "X"], "gender", "customers"), n
        ),  # upper case, as the registry exports
        birth_date=np.datetime64("1950-01-01") + rng.integers(0, 365 * 55, n).astype("timedelta64[D]"),
        email=email,
        phone=phone,
        given_phone=given_phone,
        given_email=given_email,
        shared_contacts=shared,
        region_idx=region_idx,
        card=np.array([f"8{i + 1:011d}" for i in range(n)], dtype=object),
        signup_day=signup_day,
        signup_channel=_pick(
            rng, coded(["store", "store", "web", "web", "app", "social", "referral"], "signup_channel", "customers"), n
        ),
        consent=rng.random(n) < 0.7,
        purchase_rate=purchase_rate,
        web_share=rng.beta(2, 3, n),
        visit_rate=rng.gamma(1.0, 1.2 / 365.0, n) + purchase_rate * 0.2,  # about 30 web events a year
        call_rate=rng.gamma(1.0, 0.5 / 365.0, n),
        social_rate=np.where(social, rng.gamma(1.0, 3.0 / 365.0, n), 0.0),
        churn_day=churn_day,
        home_store=(region_idx * 3 + rng.integers(0, 3, n)) % cfg.stores,
        handles=handles,
        platform=_pick(rng, platforms, n),
        cookie=np.array([f"c{rng.integers(16**11, 16**12):012x}" for _ in range(n)], dtype=object),
    )


@dataclass
class Catalog:
    sku: np.ndarray
    name: np.ndarray
    category: np.ndarray
    price: np.ndarray  # list price, CNY
    popularity: np.ndarray  # sampling probabilities
    rules: list[tuple[int, int, float]]  # planted (antecedent idx, consequent idx, add probability)


def make_catalog(cfg: GeneratorConfig, rng: np.random.Generator) -> Catalog:
    n = cfg.products
    cat = rng.integers(0, len(CATEGORIES), n)
    adjectives = ["Classic", "Premium", "Mini", "Deluxe", "Organic", "Travel", "Family", "Limited"]
    names = np.array(
        [f"{adjectives[i % len(adjectives)]} {CATEGORIES[c].title()} Item {i + 1}" for i, c in enumerate(cat)],
        dtype=object,
    )
    price = np.round(np.exp(rng.normal(3.5, 0.8, n)), 1)  # about 33 CNY median
    pop = 1.0 / np.arange(1, n + 1) ** 0.9
    pop = pop[rng.permutation(n)]
    pop /= pop.sum()
    # Planted associations between mid-popularity products: B is added to baskets holding A.
    order = np.argsort(-pop)
    mid = order[10:60]
    picks = rng.choice(mid, 10, replace=False)
    rules = [(int(picks[2 * i]), int(picks[2 * i + 1]), p) for i, p in enumerate([0.6, 0.5, 0.45, 0.4, 0.35])]
    return Catalog(
        sku=np.array([f"SKU-{10001 + i}" for i in range(n)], dtype=object),
        name=names,
        category=np.asarray(CATEGORIES, dtype=object)[cat],
        price=price,
        popularity=pop,
        rules=rules,
    )


def store_codes(cfg: GeneratorConfig) -> list[str]:
    return [f"S{i + 1:02d}" for i in range(cfg.stores)]
