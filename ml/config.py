"""Settings of the ML tables: dataclass defaults, overridable from a YAML file ($CRM_ML_CONFIG).

The YAML mirrors these classes, e.g.

    churn: {horizon_days: 60}
    baskets: {basket: customer, item: category, min_support: 0.02}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

# The fitted models (churn, segments, value) are reused for this many days: a run as of D scores
# with the newest model fitted as of a date in D - refit_days + 1 .. D, and fits only when there is
# none (0: fit in every run). A daily run then fits once a week and scores on the other days:
# fitting is most of their time.
REFIT_DAYS = 7


@dataclass(frozen=True)
class ChurnConfig:
    horizon_days: int = 90  # churned = no purchase in this many days after the cut-off ...
    active_days: int = 365  # ... among customers who bought in this many days before it
    training_cutoffs: int = 6  # earlier cut-offs to train on, each step_days apart
    step_days: int = 30
    medium_risk: float = 0.3  # churn_probability >= this: medium risk band
    high_risk: float = 0.6  # >= this: high
    refit_days: int = REFIT_DAYS


@dataclass(frozen=True)
class BasketConfig:
    basket: str = "order"  # or "customer": all of a customer's purchases are one basket
    item: str = "sku"  # or "category"
    min_support: float = 0.005  # share of baskets holding the itemset
    min_confidence: float = 0.1  # rules kept at this confidence or more ...
    min_lift: float | None = 1.0  # ... and this lift or more (None: keep negative associations too)
    max_len: int | None = None  # longest itemset mined (None: no limit)
    refit_days: int = REFIT_DAYS  # rules mined this recently are published again (0: mine every run)


@dataclass(frozen=True)
class SegmentConfig:
    k_min: int = 3
    k_max: int = 8  # k chosen in k_min..k_max by the highest silhouette score
    seed: int = 42
    refit_days: int = REFIT_DAYS


@dataclass(frozen=True)
class LifecycleConfig:
    new_days: int = 90  # first purchase within this many days: new
    active_days: int = 90  # last purchase within: active (or loyal with loyal_orders orders)
    loyal_orders: int = 4
    churned_days: int = 365  # no purchase for longer: churned; in between: at risk


@dataclass(frozen=True)
class ValueConfig:
    horizon_months: int = 12
    annual_discount_rate: float = 0.10
    refit_days: int = REFIT_DAYS


@dataclass(frozen=True)
class RepurchaseConfig:
    horizons: tuple[int, ...] = (30, 90)  # one score per customer and horizon: P(an order within this many days)
    active_days: int = 365  # customers scored: bought in this many days before the cut-off
    training_cutoffs: int = 6
    step_days: int = 30
    medium: float = 0.3  # purchase_probability >= this: band medium
    high: float = 0.6  # >= this: high
    refit_days: int = REFIT_DAYS


@dataclass(frozen=True)
class ForecastConfig:
    horizon_weeks: int = 13
    top_n: int = 10  # products (or categories) forecast one by one, by revenue in the last 52 weeks
    product_level: str = "category"  # or "sku"
    season_length: int = 52  # weeks in the yearly cycle; seasonal models need two cycles of history
    backtest_windows: int = 4  # rolling origins, each horizon_weeks apart, at the end of the history
    min_weeks: int = 26  # less history to fit on: not built
    calendar: str | None = None  # CSV of known event days (date,event); default: the sources file's `calendar:`
    refit_days: int = REFIT_DAYS  # a forecast made this recently from the same complete weeks is published again


@dataclass(frozen=True)
class TriggerConfig:
    within_hours: int = 24  # abandoned: no order by the customer within this many hours after the session
    lookback_days: int = 7  # sessions this recent are candidates (older ones are past following up)


@dataclass(frozen=True)
class CampaignConfig:
    margin: float = 0.35  # share of net revenue kept as profit (incremental profit, ROI)
    uplift_min_customers: int = 200  # an arm and its control group need this many customers for an uplift model
    uplift_test_share: float = 0.3  # of each group, held out to measure the Qini coefficient
    seed: int = 42
    refit_days: int = REFIT_DAYS  # uplift models fitted this recently score again, unless a campaign has closed since


@dataclass(frozen=True)
class HistoryConfig:
    # Each run adds an as-of date of every score table (a million customers: about 250 MB), and
    # every publish copies the warehouse file: a window bounds what a daily run copies. None: keep all.
    keep_days: int | None = None  # as-of dates older than the newest minus this many days are deleted

    def __post_init__(self) -> None:
        if self.keep_days is not None and self.keep_days < 0:
            raise ValueError(
                f"history: keep_days is {self.keep_days}; it must be 0 or more (or unset: keep every as-of date)"
            )


@dataclass(frozen=True)
class MLConfig:
    churn: ChurnConfig = field(default_factory=ChurnConfig)
    baskets: BasketConfig = field(default_factory=BasketConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    repurchase: RepurchaseConfig = field(default_factory=RepurchaseConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    campaigns: CampaignConfig = field(default_factory=CampaignConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)


def load_config(path: Path | str | None = None) -> MLConfig:
    """Defaults, with the sections of the YAML file at `path` (if given) laid over them."""
    config = MLConfig()
    if not path:
        return config
    doc = yaml.safe_load(Path(path).read_text()) or {}
    for section, values in doc.items():
        current = getattr(config, section, None)
        if current is None or not isinstance(values, dict):
            raise ValueError(
                f"{path}: unknown section {section!r}; expected one of {[f.name for f in fields(MLConfig)]}"
            )
        known = {f.name for f in fields(current)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: {section}: unknown keys {unknown}; expected {sorted(known)}")
        try:
            config = replace(config, **{section: replace(current, **values)})
        except ValueError as e:  # a section's own check of its values
            raise ValueError(f"{path}: {e}") from e
    return config
