"""The trees of a fitted binary HistGradientBoostingClassifier as flat node arrays. scikit-learn
keeps them in private `_predictors` (one TreePredictor per iteration, its `nodes` a structured
array) and its starting log-odds in private `_baseline_prediction`; it has no public way to walk
them. And a calibrated classifier's probability from those log-odds, as its predict_proba computes
it from the decision function."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier


@dataclass(frozen=True)
class TreeArrays:
    """Every node of every tree, trees one after another; children are indices into these arrays."""

    feature: np.ndarray  # int64
    threshold: np.ndarray  # float64: a value <= threshold goes left
    missing_left: np.ndarray  # bool: where a missing value goes
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    is_leaf: np.ndarray  # bool
    value: np.ndarray  # float64: a leaf's raw (log-odds) prediction
    roots: np.ndarray  # int64: each tree's first node
    baseline: float  # the log-odds every prediction starts from


def tree_arrays(model: HistGradientBoostingClassifier) -> TreeArrays:
    """`model`'s trees; raises on what the arrays do not describe (categorical splits, several
    classes)."""
    trees = model._predictors
    if any(len(iteration) != 1 for iteration in trees):
        raise ValueError("tree arrays describe a binary classifier: one tree per iteration")
    nodes = [iteration[0].nodes for iteration in trees]
    if any(n["is_categorical"].any() for n in nodes):
        raise ValueError("tree arrays do not describe categorical splits")
    sizes = np.array([len(n) for n in nodes], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    offset = np.repeat(roots, sizes)
    flat = np.concatenate(nodes)
    return TreeArrays(
        feature=flat["feature_idx"].astype(np.int64),
        threshold=flat["num_threshold"].astype(np.float64),
        missing_left=flat["missing_go_to_left"].astype(bool),
        left=flat["left"].astype(np.int64) + offset,
        right=flat["right"].astype(np.int64) + offset,
        is_leaf=flat["is_leaf"].astype(bool),
        value=flat["value"].astype(np.float64),
        roots=roots,
        baseline=float(np.asarray(model._baseline_prediction).reshape(-1)[0]),
    )


def calibrated_probability(model: CalibratedClassifierCV, raw: np.ndarray) -> np.ndarray:
    """P(the positive class) that `model.predict_proba` gives rows whose estimator's decision function
    is `raw`: the mean over the calibrated classifiers of each one's calibrator (sigmoid or isotonic)
    applied to it, with scikit-learn's clip of values a hair above 1."""
    if len(model.classes_) != 2 or model.method not in ("sigmoid", "isotonic"):
        raise ValueError("a calibrated probability from log-odds needs a binary sigmoid or isotonic calibration")
    mean = np.zeros(len(raw))
    for calibrated in model.calibrated_classifiers_:
        p = calibrated.calibrators[0].predict(raw)
        p[(1.0 < p) & (p <= 1.0 + 1e-5)] = 1.0
        mean += p
    return mean / len(model.calibrated_classifiers_)
