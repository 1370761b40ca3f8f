"""Repurchase scores: P(a customer orders at least once in the next `horizon` days), per horizon.

The model is trained like the churn model (ml/churn.py) for each horizon, on the same point-in-time
customer features, but with gradient-boosted trees (`boosted_trees`): a logistic regression's
linear log-odds lost to BG/NBD on two years of history. Trained on older cut-offs,
sigmoid-calibrated on the latest training cut-off, evaluated on the held-out cut-off
as_of - horizon, whose labels end at as_of; P(repurchase) = 1 - P(no order in the horizon).
Beside it, on the same held-out customers, two baselines: BG/NBD's P(at least one purchase in the
horizon), fitted on the orders up to that cut-off, and recency alone. Where the model does not
beat BG/NBD (ROC AUC and Brier both), BG/NBD's probability is published instead, and the table
says so in `score_source`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from ml.churn import ChurnModel, band, boosted_trees, evaluate, fit_churn, scored_with_reasons
from ml.clv import BgNbd, fit_bgnbd, fit_sample, purchase_history
from ml.config import ChurnConfig, RepurchaseConfig
from ml.features import FEATURES, customer_features

CALIBRATION_BINS = 10


@dataclass
class HorizonModel:
    horizon_days: int
    churn: ChurnModel  # P(no order in the horizon)
    bgnbd: BgNbd  # fitted as of the held-out cut-off, for its evaluation
    metrics: dict[str, float]  # the model's, on the held-out cut-off, purchase as the positive class
    bgnbd_metrics: dict[str, float]
    recency_metrics: dict[str, float]

    @property
    def beats_bgnbd(self) -> bool:
        return (
            self.metrics["roc_auc"] > self.bgnbd_metrics["roc_auc"]
            and self.metrics["brier"] < self.bgnbd_metrics["brier"]
        )


@dataclass
class RepurchaseModel:
    horizons: list[HorizonModel]


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: |mean predicted - observed rate| over equal-count bins, weighted by size."""
    order = np.argsort(p)
    return float(sum(len(b) / len(p) * abs(p[b].mean() - y[b].mean()) for b in np.array_split(order, bins) if len(b)))


def _metrics(bought: np.ndarray, p: np.ndarray) -> dict[str, float]:
    out = evaluate(bought, p)
    out["purchase_rate"] = out.pop("churn_rate")
    return {**out, "calibration_error": calibration_error(bought, p)}


def _bgnbd_probability(bgnbd: BgNbd, history: pl.DataFrame, keys: pl.Series, days: int) -> np.ndarray:
    """BG/NBD's P(at least one purchase in the `days` after the cut-off of `history` (purchase_history))
    for the customers `keys`."""
    h = pl.DataFrame({"customer_key": keys}).join(history, on="customer_key", how="left")
    x, t_x, T = (h[c].fill_null(0.0).to_numpy() for c in ("x", "t_x", "T"))
    return bgnbd.p_purchase(float(days), x, t_x, T)


def _fit_bgnbd(history: pl.DataFrame) -> BgNbd:
    x, t_x, T = (history[c].to_numpy() for c in ("x", "t_x", "T"))
    sample = fit_sample(len(x))
    return fit_bgnbd(x[sample], t_x[sample], T[sample])


def fit_horizon(
    orders: pl.DataFrame,
    interactions: pl.DataFrame,
    customers: pl.DataFrame,
    as_of: dt.date,
    cfg: RepurchaseConfig,
    days: int,
) -> HorizonModel:
    churn_cfg = ChurnConfig(
        horizon_days=days, active_days=cfg.active_days, training_cutoffs=cfg.training_cutoffs, step_days=cfg.step_days
    )
    model = fit_churn(orders, interactions, customers, as_of, churn_cfg, boosted_trees)
    cutoff = model.held_out_cutoff
    held_out = customer_features(orders, interactions, customers, cutoff).filter(
        pl.col("last_purchase_date") > cutoff - dt.timedelta(days=cfg.active_days)
    )
    later = orders.filter(
        (pl.col("order_date") > cutoff)
        & (pl.col("order_date") <= cutoff + dt.timedelta(days=days))
        & (pl.col("net_amount") > 0)
    )
    bought = held_out["customer_key"].is_in(later["customer_key"].unique().implode()).to_numpy().astype(float)
    p_model = 1 - model.model.predict_proba(held_out.select(FEATURES).to_numpy())[:, 1]
    p_recency = 1 - model.baseline.predict_proba(held_out.select("recency_days").to_numpy())[:, 1]
    history = purchase_history(orders, cutoff)
    bgnbd = _fit_bgnbd(history)
    p_bgnbd = _bgnbd_probability(bgnbd, history, held_out["customer_key"], days)
    return HorizonModel(
        days, model, bgnbd, _metrics(bought, p_model), _metrics(bought, p_bgnbd), _metrics(bought, p_recency)
    )


def repurchase_scores(
    orders: pl.DataFrame,
    interactions: pl.DataFrame,
    customers: pl.DataFrame,
    as_of: dt.date,
    cfg: RepurchaseConfig,
    features_now: pl.DataFrame,
    fitted: RepurchaseModel | None = None,
    bgnbd_now: BgNbd | None = None,
) -> tuple[pl.DataFrame, RepurchaseModel]:
    """One row per customer active at `as_of` and horizon. `fitted`: models of an earlier run to score
    with. `bgnbd_now`: the BG/NBD model `ml.customer_value` scores with, when there is one (else fitted)."""
    fitted = fitted or RepurchaseModel(
        [fit_horizon(orders, interactions, customers, as_of, cfg, d) for d in cfg.horizons]
    )
    current = features_now.filter(pl.col("last_purchase_date") > as_of - dt.timedelta(days=cfg.active_days))
    x = current.select(FEATURES).to_numpy()
    history = purchase_history(orders, as_of)  # once for every horizon
    bgnbd_now = bgnbd_now or _fit_bgnbd(history)  # for the score it publishes where it is better
    frames = []
    for h in fitted.horizons:
        p_no_order, reasons = scored_with_reasons(h.churn.model, x, sign=-1)
        p_model = 1 - p_no_order
        p_bgnbd = _bgnbd_probability(bgnbd_now, history, current["customer_key"], h.horizon_days)
        source = "model" if h.beats_bgnbd else "bgnbd"
        frames.append(
            current.select("customer_key").with_columns(
                horizon_days=pl.lit(h.horizon_days, pl.Int32),
                purchase_probability=pl.Series(p_model if h.beats_bgnbd else p_bgnbd),
                model_probability=pl.Series(p_model),
                bgnbd_probability=pl.Series(p_bgnbd),
                score_source=pl.lit(source),
                top_reasons=reasons,
            )
        )
    scores = pl.concat(frames).with_columns(band=band(pl.col("purchase_probability"), cfg.medium, cfg.high))
    return scores, fitted
