"""Churn scores: who of the active customers will not buy in the next `horizon_days`.

Active at a cut-off c: bought in (c - active_days, c]. Churned: no purchase in (c, c + horizon].
Time-based split, never random rows: the held-out cut-off is as_of - horizon (its labels end at
as_of); training cut-offs end their label window before it (c + horizon <= held-out), every
step_days back. A standardized logistic regression learns on the older training cut-offs and is
calibrated (sigmoid) on the most recent one; a recency-only model trained the same way is the
baseline. Scores are for the customers active at as_of; each gets its three features that push
its score up most (coefficient × standardized value).
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl
import pyarrow as pa
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ml._compat.sklearn_trees import calibrated_probability, tree_arrays
from ml.config import ChurnConfig
from ml.features import FEATURES, customer_features
from ml.run_context import NotEnoughHistory


@dataclass
class ChurnModel:
    """What a fit leaves, the table's artifact: the model and its recency-only baseline, and how
    both did on the held-out cut-off."""

    model: CalibratedClassifierCV
    baseline: CalibratedClassifierCV
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    training_cutoffs: list[dt.date]
    held_out_cutoff: dt.date
    training_rows: int


@dataclass
class ChurnResult:
    scores: pl.DataFrame
    fitted: ChurnModel


def labelled(
    orders: pl.DataFrame, interactions: pl.DataFrame, customers: pl.DataFrame, cutoff: dt.date, cfg: ChurnConfig
) -> pl.DataFrame:
    """Features at `cutoff` of the customers active then, with is_churned from the next horizon."""
    active_since = cutoff - dt.timedelta(days=cfg.active_days)
    frame = customer_features(orders, interactions, customers, cutoff).filter(
        pl.col("last_purchase_date") > active_since
    )
    horizon_end = cutoff + dt.timedelta(days=cfg.horizon_days)
    buyers = orders.filter(
        (pl.col("order_date") > cutoff) & (pl.col("order_date") <= horizon_end) & (pl.col("net_amount") > 0)
    )
    bought = buyers.select("customer_key").unique().with_columns(bought_again=pl.lit(True))
    return (
        frame.join(bought, on="customer_key", how="left")
        .with_columns(is_churned=pl.col("bought_again").is_null(), cutoff=pl.lit(cutoff))
        .drop("bought_again")
    )


class MedianImputer(TransformerMixin, BaseEstimator):
    """Missing values take the column's training median, 0 where a column has none: sklearn's
    `SimpleImputer(strategy="median", keep_empty_features=True)`, whose median goes through masked
    arrays."""

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> MedianImputer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": that median is NaN, made 0 below
            median = np.nanmedian(x, axis=0)
        self.statistics_ = np.where(np.isnan(median), 0.0, median)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return np.where(np.isnan(x), self.statistics_, x)


def logistic_pipeline() -> Pipeline:
    # Newton-Cholesky: many more customers than features, where sklearn advises it; it converges in
    # 4 iterations where lbfgs took 18 and stopped at its looser tolerance.
    return make_pipeline(MedianImputer(), StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=2000))


class EmptyColumnsFilled(TransformerMixin, BaseEstimator):
    """Columns with no value at all in training become 0; the others keep their missing values,
    which the trees use (no CSAT: never called). The trees' binning fails on an all-missing column
    (CSAT and web features in data without a call center or web shop, e.g. Online Retail)."""

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> EmptyColumnsFilled:
        self.empty_ = np.isnan(np.asarray(x, dtype=float)).all(axis=0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float).copy()
        x[:, self.empty_] = 0.0
        return x


def boosted_trees() -> Pipeline:
    """Gradient-boosted trees: they learn how recency, frequency and rhythm interact, which a linear
    log-odds cannot (the repurchase model; docs/ml.md). Small leaves and a slow rate, fixed seed."""
    return make_pipeline(
        EmptyColumnsFilled(),
        HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=100, random_state=0
        ),
    )


Learner = Callable[[], BaseEstimator]


def _fit(
    train: pl.DataFrame, calibrate: pl.DataFrame, columns: list[str], learner: Learner = logistic_pipeline
) -> CalibratedClassifierCV:
    if train["is_churned"].n_unique() < 2 or calibrate["is_churned"].n_unique() < 2:
        raise NotEnoughHistory("churn training needs churners and buyers at every training cut-off; load more history")
    base = learner().fit(train.select(columns).to_numpy(), train["is_churned"].to_numpy())
    return CalibratedClassifierCV(FrozenEstimator(base), method="sigmoid").fit(
        calibrate.select(columns).to_numpy(), calibrate["is_churned"].to_numpy()
    )


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    top = p >= np.quantile(p, 0.9)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "lift_top_decile": float(y[top].mean() / y.mean()),
        "churn_rate": float(y.mean()),
        "customers": float(len(y)),
    }


def band(p: pl.Expr, medium: float, high: float) -> pl.Expr:
    """'high' from `high` up, 'medium' from `medium`, else 'low'."""
    return pl.when(p >= high).then(pl.lit("high")).when(p >= medium).then(pl.lit("medium")).otherwise(pl.lit("low"))


def fit_churn(
    orders: pl.DataFrame,
    interactions: pl.DataFrame,
    customers: pl.DataFrame,
    as_of: dt.date,
    cfg: ChurnConfig,
    learner: Learner = logistic_pipeline,
) -> ChurnModel:
    held_out_cutoff = as_of - dt.timedelta(days=cfg.horizon_days)
    last_training = held_out_cutoff - dt.timedelta(days=cfg.horizon_days)
    cutoffs = [last_training - dt.timedelta(days=cfg.step_days * k) for k in range(cfg.training_cutoffs)]
    first_order = cast(dt.date | None, orders["order_date"].min())
    cutoffs = [c for c in cutoffs if first_order is not None and c > first_order]
    if len(cutoffs) < 2:
        raise NotEnoughHistory(
            f"churn needs at least {2 * cfg.horizon_days + 2 * cfg.step_days} days of orders before "
            f"{as_of} (two training cut-offs and a held-out one); the orders start {first_order}"
        )
    frames = {c: labelled(orders, interactions, customers, c, cfg) for c in cutoffs}
    train = pl.concat([frames[c] for c in cutoffs[1:]])
    calibrate = frames[cutoffs[0]]
    held_out = labelled(orders, interactions, customers, held_out_cutoff, cfg)

    model = _fit(train, calibrate, FEATURES, learner)
    baseline = _fit(train, calibrate, ["recency_days"])
    y = held_out["is_churned"].to_numpy()
    return ChurnModel(
        model=model,
        baseline=baseline,
        metrics=evaluate(y, model.predict_proba(held_out.select(FEATURES).to_numpy())[:, 1]),
        baseline_metrics=evaluate(y, baseline.predict_proba(held_out.select("recency_days").to_numpy())[:, 1]),
        training_cutoffs=cutoffs,
        held_out_cutoff=held_out_cutoff,
        training_rows=train.height + calibrate.height,
    )


def churn_scores(
    orders: pl.DataFrame,
    interactions: pl.DataFrame,
    customers: pl.DataFrame,
    as_of: dt.date,
    cfg: ChurnConfig,
    features_now: pl.DataFrame | None = None,
    fitted: ChurnModel | None = None,
) -> ChurnResult:
    """`features_now`: `customer_features` as of `as_of`, when the caller has them (the other tables
    share them). `fitted`: a model fitted as of an earlier date to score with, instead of fitting."""
    fitted = fitted or fit_churn(orders, interactions, customers, as_of, cfg)
    if features_now is None:
        features_now = customer_features(orders, interactions, customers, as_of)
    current = features_now.filter(pl.col("last_purchase_date") > as_of - dt.timedelta(days=cfg.active_days))
    x = current.select(FEATURES).to_numpy()
    probability, reasons = scored_with_reasons(fitted.model, x)
    scores = (
        current.select("customer_key", "recency_days", "frequency")
        .with_columns(
            churn_probability=pl.Series(probability),
            baseline_probability=pl.Series(
                fitted.baseline.predict_proba(current.select("recency_days").to_numpy())[:, 1]
            ),
            top_features=reasons,
        )
        .with_columns(risk_band=band(pl.col("churn_probability"), cfg.medium_risk, cfg.high_risk))
    )
    return ChurnResult(scores, fitted)


def scored_with_reasons(
    model: CalibratedClassifierCV, x: np.ndarray, k: int = 3, sign: int = 1
) -> tuple[np.ndarray, pl.Series]:
    """`model.predict_proba(x)[:, 1]`, and the k features adding most to each row's log-odds (with
    sign -1, those lowering it most), those that add anything: coefficient × standardized value for
    the logistic regression; for the boosted trees, how far the log-odds move from the row's value
    to the scored rows' median of that feature. For the trees both come from one walk of them
    (ml.tree_explanations), which predicting again would repeat."""
    base = model.calibrated_classifiers_[0].estimator.estimator
    if isinstance(base.steps[-1][1], LogisticRegression):
        imputer, scaler, logistic = base.steps[0][1], base.steps[1][1], base.steps[2][1]
        contributions = sign * scaler.transform(imputer.transform(x)) * logistic.coef_[0]
        probability = model.predict_proba(x)[:, 1]
    else:
        moved, raw = _moved_from_median(base, x)
        contributions, probability = sign * moved, calibrated_probability(model, raw)
    return probability, largest_positive_names(contributions, k)


def largest_positive_names(contributions: np.ndarray, k: int) -> pl.Series:
    """Per row, the names of its k largest positive contributions, largest first; contributions
    equal to 6 decimals (of log-odds) are equal and go by feature order. Built from offsets into
    one list column: a list expression per rank took as long as explaining the trees at a million
    customers."""
    from ml.top_reasons import largest_positive  # numba: loaded when scores explain, not with the definitions

    # Collinear features tie exactly in theory (monetary and revenue_90 while the training cut-offs
    # have under 90 days of history), and a refit's float noise would otherwise pick another one.
    k = min(k, contributions.shape[1])
    top, counts = largest_positive(np.ascontiguousarray(np.round(contributions, 6), dtype=np.float64), k)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    chosen = top[np.arange(k) < counts[:, None]]  # row by row, each row's first counts[i]
    names = pa.DictionaryArray.from_arrays(pa.array(chosen), pa.array(FEATURES))
    return cast(pl.Series, pl.from_arrow(pa.ListArray.from_arrays(pa.array(offsets), names.cast(pa.string())))).alias(
        "top_features"
    )


def _moved_from_median(base: Pipeline, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per customer and feature: log-odds at the customer's values minus log-odds with that one
    feature set to its median over `x` (missing stays missing where the median is), from the
    boosted trees themselves (ml.tree_explanations); and each customer's log-odds."""
    from ml.tree_explanations import moved_to_reference  # numba: loaded when trees explain, not with the definitions

    trees = base.steps[-1][1]
    if not isinstance(trees, HistGradientBoostingClassifier):
        raise TypeError(f"explanations by median need the boosted trees or a logistic regression, not {trees!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column's median
        median = np.nanmedian(x, axis=0)
    prepared = base[:-1]  # the steps before the trees, applied to the rows and the median alike
    return moved_to_reference(tree_arrays(trees), prepared.transform(x), prepared.transform(median[None, :])[0])
