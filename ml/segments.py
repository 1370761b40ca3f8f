"""Behaviour segments: k-means on standardized, log-scaled behaviour of the customers who bought.

k is the one in k_min..k_max with the highest silhouette score, k-means fitted and scored on a fixed
sample of up to 5,000 customers (so choosing stays cheap); the chosen k is then fitted on all. Each
segment gets a profile (size, mean RFM, revenue share) and a label read off its centre: value tier
by mean revenue rank among segments, then what stands out (recent / lapsed, frequent, web-first /
store-first, in touch with the call center).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from ml.config import SegmentConfig
from ml.run_context import NotEnoughHistory
from ml.sampling import fixed_sample

SAMPLE = 5000  # buyers k is chosen on
SEGMENT_FEATURES = [
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "web_sessions_90",
    "calls_90",
    "tenure_days",
    "web_order_share",
]


@dataclass
class SegmentModel:
    """What a fit leaves, the table's artifact: the scaling and the k-means of the chosen k."""

    scaler: StandardScaler
    model: KMeans
    k: int
    silhouette: float
    silhouettes: dict[int, float]


@dataclass
class Segmentation:
    assignments: pl.DataFrame
    profiles: pl.DataFrame
    fitted: SegmentModel


def _matrix(features: pl.DataFrame) -> np.ndarray:
    x = features.select(SEGMENT_FEATURES).fill_null(0.0).to_numpy().astype(float)
    return np.sign(x) * np.log1p(np.abs(x))  # heavy tails (revenue, counts) would dominate otherwise


def _label(profile: dict, overall: dict, value_rank: int, k: int) -> str:
    tier = "High-value" if value_rank == 0 else ("Low-value" if value_rank == k - 1 else "Mid-value")
    traits = [
        "recent"
        if profile["recency_days"] < 0.6 * overall["recency_days"]
        else "lapsed"
        if profile["recency_days"] > 1.5 * overall["recency_days"]
        else "",
        "frequent" if profile["frequency"] > 1.5 * overall["frequency"] else "",
        "web-first" if profile["web_order_share"] > 0.6 else "store-first" if profile["web_order_share"] < 0.2 else "",
        "calling" if profile["calls_90"] > 2 * overall["calls_90"] + 0.05 else "",
    ]
    return " ".join([tier, *[t for t in traits if t]]) or tier


def _buyers(features: pl.DataFrame) -> pl.DataFrame:
    return features.filter(pl.col("frequency") > 0).sort("customer_key")


def fit_segments(features: pl.DataFrame, cfg: SegmentConfig) -> SegmentModel:
    buyers = _buyers(features)
    if buyers.height < cfg.k_max * 10:
        raise NotEnoughHistory(
            f"segmentation needs at least {cfg.k_max * 10} customers who bought; got {buyers.height}"
        )
    scaler = StandardScaler()
    x = scaler.fit_transform(_matrix(buyers))
    # k is chosen on a fixed sample, then fitted on every buyer: six candidates of ten k-means
    # starts each on every buyer dominated the step (and grow with them), and
    # the silhouette is quadratic in rows anyway.
    sample = fixed_sample(len(x), SAMPLE, cfg.seed)
    silhouettes, models = {}, {}
    for k in range(cfg.k_min, cfg.k_max + 1):
        models[k] = KMeans(n_clusters=k, n_init=10, random_state=cfg.seed).fit(x[sample])
        silhouettes[k] = float(silhouette_score(x[sample], models[k].labels_))
    k = max(silhouettes, key=lambda c: (silhouettes[c], -c))
    model = models[k] if len(sample) == len(x) else KMeans(n_clusters=k, n_init=10, random_state=cfg.seed).fit(x)
    return SegmentModel(scaler, model, k, silhouettes[k], silhouettes)


def segment_customers(features: pl.DataFrame, cfg: SegmentConfig, fitted: SegmentModel | None = None) -> Segmentation:
    """`fitted`: a model fitted as of an earlier date to assign with, instead of fitting."""
    fitted = fitted or fit_segments(features, cfg)
    buyers = _buyers(features)
    assigned = buyers.with_columns(
        segment_id=pl.Series(fitted.model.predict(fitted.scaler.transform(_matrix(buyers))).astype(np.int32))
    )
    total_revenue = float(assigned["monetary"].sum()) or 1.0
    profiles = (
        assigned.group_by("segment_id")
        .agg(
            customers=pl.len(),
            **{c: pl.col(c).mean() for c in SEGMENT_FEATURES},
            revenue_share=pl.col("monetary").sum() / total_revenue,
        )
        .sort("segment_id")
    )
    overall = {c: float(cast(float, assigned[c].mean())) for c in SEGMENT_FEATURES}
    ranks = {sid: i for i, sid in enumerate(profiles.sort("monetary", descending=True)["segment_id"])}
    # A model fitted on other days may leave a segment empty today: tiers go by the segments there are.
    labels = [_label(p, overall, ranks[p["segment_id"]], profiles.height) for p in profiles.iter_rows(named=True)]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # unique labels: a second "Mid-value" becomes "Mid-value (2)"
        seen[label] = seen.get(label, 0) + 1
        labels[i] = label if seen[label] == 1 else f"{label} ({seen[label]})"
    profiles = profiles.with_columns(segment_label=pl.Series(labels))
    assignments = (
        assigned.select("customer_key", "segment_id")
        .join(profiles.select("segment_id", "segment_label"), on="segment_id")
        .sort("customer_key")
    )
    return Segmentation(assignments, profiles, fitted)
