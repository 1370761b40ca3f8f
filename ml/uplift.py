"""Uplift targeting: whom an arm of a randomized campaign moves, scored per customer (T-learner).

Per arm, two classifiers of the churn model's kind (median imputation, scaling, logistic
regression) on the customer features as of the day before the campaign: P(convert | treated) on
the arm's customers and P(convert | control) on the control group. A customer's uplift is their
difference: the expected change in the chance of an order in the response window if contacted.
Evaluated on a held-out share of the campaign's customers (stratified by group) by the Qini curve:
incremental conversions when targeting the top fraction by uplift, against targeting at random.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.pipeline import Pipeline

from ml.churn import logistic_pipeline
from ml.config import CampaignConfig
from ml.features import FEATURES, customer_features
from ml.run_context import NotEnoughHistory


@dataclass
class ArmModel:
    campaign_id: str
    arm: str
    treated: Pipeline
    control: Pipeline
    revenue_per_conversion: float  # mean net revenue of the arm's converted customers in the window
    metrics: dict[str, float]


@dataclass
class UpliftFit:
    """The arms one run fitted, and every randomized campaign it considered (one with no arm big
    enough for a model included): a later run reuses the fit only if it has no campaign beyond these."""

    arms: list[ArmModel]
    campaigns: frozenset[str]


def counted(contacts: pl.DataFrame) -> pl.DataFrame:
    """The contacts an uplift model learns from: randomized campaigns, closed windows, no exclusion."""
    return contacts.filter(pl.col("is_randomized") & pl.col("excluded_because").is_null())


def qini(uplift: np.ndarray, treated: np.ndarray, outcome: np.ndarray) -> dict[str, float]:
    """Area under the Qini curve (incremental conversions per customer of the sample, by targeted
    fraction) for the model's order and for random targeting (the straight line to the same end),
    and their difference, the Qini coefficient: above 0, the ranking beats random targeting."""
    order = np.argsort(-uplift, kind="stable")
    t, y = treated[order].astype(float), outcome[order].astype(float)
    n_t, n_c = np.cumsum(t), np.cumsum(1 - t)
    y_t, y_c = np.cumsum(y * t), np.cumsum(y * (1 - t))
    curve = (y_t - np.divide(y_c * n_t, n_c, out=np.zeros_like(y_c), where=n_c > 0)) / len(t)
    x = np.arange(1, len(t) + 1) / len(t)
    model = float(np.trapezoid(np.concatenate([[0.0], curve]), np.concatenate([[0.0], x])))
    random = float(curve[-1]) / 2
    return {"auuc": model, "auuc_random": random, "qini_coefficient": model - random}


def _split(frame: pl.DataFrame, share: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test): `share` of each group at random to the test side."""
    rng = np.random.default_rng(seed)
    test = np.zeros(frame.height, bool)
    for group in (True, False):
        idx = np.flatnonzero(frame["is_treated"].to_numpy() == group)
        test[rng.permutation(idx)[: int(round(len(idx) * share))]] = True
    return frame.filter(~pl.Series(test)), frame.filter(pl.Series(test))


def _fit_arm(frame: pl.DataFrame) -> tuple[Pipeline, Pipeline]:
    models = []
    for group in (True, False):
        rows = frame.filter(pl.col("is_treated") == group)
        if rows["converted"].n_unique() < 2:
            raise NotEnoughHistory(
                "an uplift model needs converters and non-converters in the arm and in the control group"
            )
        models.append(logistic_pipeline().fit(rows.select(FEATURES).to_numpy(), rows["converted"].to_numpy()))
    return models[0], models[1]


def probabilities(model: ArmModel, features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(P(convert | contacted), P(convert | not)) per row of `features`."""
    x = features.select(FEATURES).to_numpy()
    return model.treated.predict_proba(x)[:, 1], model.control.predict_proba(x)[:, 1]


def uplift_of(model: ArmModel, features: pl.DataFrame) -> np.ndarray:
    contacted, not_contacted = probabilities(model, features)
    return contacted - not_contacted


def fit_uplift(
    contacts: pl.DataFrame,
    orders: pl.DataFrame,
    interactions: pl.DataFrame,
    customers: pl.DataFrame,
    cfg: CampaignConfig,
) -> UpliftFit:
    """One model per arm of every randomized campaign with at least cfg.uplift_min_customers in the
    arm and in its control group (closed windows, excluded rows left out)."""
    campaigns = counted(contacts)
    fitted = []
    for campaign in campaigns.partition_by("campaign_id", maintain_order=True):
        cutoff = campaign["assigned_at"].min().date() - dt.timedelta(days=1)  # type: ignore[union-attr]
        features = customer_features(orders, interactions, customers, cutoff)
        with_features = campaign.join(features, on="customer_key", how="inner")
        control = with_features.filter(pl.col("is_control"))
        for arm in with_features.filter(~pl.col("is_control"))["arm"].unique().sort():
            treated = with_features.filter(pl.col("arm") == arm)
            if min(treated.height, control.height) < cfg.uplift_min_customers:
                continue
            frame = pl.concat([treated, control]).with_columns(is_treated=pl.col("arm") == arm)
            train, test = _split(frame, cfg.uplift_test_share, cfg.seed)
            treated_model, control_model = _fit_arm(train)
            spend = train.filter(pl.col("is_treated") & pl.col("converted"))["net_revenue"].to_numpy()
            model = ArmModel(campaign["campaign_id"][0], arm, treated_model, control_model, float(spend.mean()), {})
            model.metrics = qini(uplift_of(model, test), test["is_treated"].to_numpy(), test["converted"].to_numpy())
            model.metrics |= {"train_customers": float(train.height), "test_customers": float(test.height)}
            fitted.append(model)
    if not fitted:
        raise NotEnoughHistory(
            f"no randomized campaign has {cfg.uplift_min_customers} customers in an arm and in its control group "
            "with a closed response window"
        )
    return UpliftFit(fitted, frozenset(campaigns["campaign_id"].unique()))


def uplift_scores(models: list[ArmModel], features: pl.DataFrame) -> pl.DataFrame:
    """Every customer's uplift per campaign arm (features as of the run's as-of date), best first."""
    frames = []
    for m in models:
        p1, p0 = probabilities(m, features)
        frames.append(
            features.select("customer_key").with_columns(
                campaign_id=pl.lit(m.campaign_id),
                arm=pl.lit(m.arm),
                p_convert_if_contacted=pl.Series(p1),
                p_convert_if_not=pl.Series(p0),
                uplift=pl.Series(p1 - p0),
                expected_incremental_revenue=pl.Series((p1 - p0) * m.revenue_per_conversion),
            )
        )
    out = pl.concat(frames)
    return out.with_columns(
        uplift_decile=(pl.col("uplift").rank("ordinal", descending=True).over("campaign_id", "arm") - 1)
        * 10
        // pl.len().over("campaign_id", "arm")
        + 1
    ).sort("campaign_id", "arm", "uplift", descending=[False, False, True])
