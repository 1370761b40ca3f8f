"""How far a tree ensemble's log-odds move when one feature at a time is set to a reference value,
per row and feature, walking the trees directly.

Predicting every row again with each feature changed cost as many predictions of every tree as
there are features. A tree's leaf changes only if the row's path has a split on that feature that
sends the reference value the other way, and the two paths are one down to the first such split:
so each tree is walked again only from there, only for those features. Compiled with numba
(cached on disk beside this module: the first call in a fresh checkout compiles for a few seconds)."""

from __future__ import annotations

import numba
import numpy as np

from ml._compat.sklearn_trees import TreeArrays


@numba.njit(cache=True, inline="always")
def _goes_left(value: float, node: int, threshold: np.ndarray, missing_left: np.ndarray) -> bool:
    # scikit-learn's rule: missing goes where the split sent missing values, else value <= threshold goes left
    return missing_left[node] if np.isnan(value) else value <= threshold[node]


@numba.njit(cache=True, inline="always")
def _leaf(
    row: np.ndarray,
    node: int,
    feature: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    is_leaf: np.ndarray,
) -> int:
    while not is_leaf[node]:
        node = left[node] if _goes_left(row[feature[node]], node, threshold, missing_left) else right[node]
    return node


@numba.njit(cache=True, parallel=True)
def _moved(
    x: np.ndarray,
    reference: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    is_leaf: np.ndarray,
    value: np.ndarray,
    roots: np.ndarray,
    baseline: float,
) -> tuple[np.ndarray, np.ndarray]:
    n, p = x.shape
    reference_left = np.zeros(feature.shape[0], dtype=np.bool_)  # where each split sends the reference
    for node in range(feature.shape[0]):
        if not is_leaf[node]:
            reference_left[node] = _goes_left(reference[feature[node]], node, threshold, missing_left)
    moved = np.zeros((n, p))
    raw = np.empty(n)
    for i in numba.prange(n):
        total = baseline  # then each tree's leaf in turn, as scikit-learn adds them
        row = x[i].copy()
        walked = np.full(p, -1)  # the tree in which each feature was last walked again
        features = np.empty(p, dtype=np.int64)  # those walked again in this tree, and where they led
        others = np.empty(p)
        for t in range(roots.shape[0]):
            count = 0
            node = roots[t]
            while not is_leaf[node]:
                f = feature[node]
                own = row[f]
                goes_left = _goes_left(own, node, threshold, missing_left)
                # The first split on f that sends the reference the other way: there its path leaves the row's.
                if goes_left != reference_left[node] and walked[f] != t:
                    walked[f] = t
                    row[f] = reference[f]
                    features[count] = f
                    other = right[node] if goes_left else left[node]
                    others[count] = value[_leaf(row, other, feature, threshold, missing_left, left, right, is_leaf)]
                    count += 1
                    row[f] = own
                node = left[node] if goes_left else right[node]
            total += value[node]  # node is the row's own leaf
            for k in range(count):
                moved[i, features[k]] += value[node] - others[k]
        raw[i] = total
    return moved, raw


def moved_to_reference(trees: TreeArrays, x: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `x` and feature j: the ensemble's raw prediction at the row minus at the row with
    feature j set to `reference[j]` (missing is a value: a missing row at a missing reference moves 0);
    and per row the raw prediction itself, summed as scikit-learn sums it: the walk reaches every
    leaf it adds, and predicting again walked every tree a second time."""
    return _moved(
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(reference, dtype=np.float64),
        trees.feature,
        trees.threshold,
        trees.missing_left,
        trees.left,
        trees.right,
        trees.is_leaf,
        trees.value,
        trees.roots,
        trees.baseline,
    )
