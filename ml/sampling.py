"""A fixed random sample of rows, shared by the models that fit or choose on a subset."""

from __future__ import annotations

import numpy as np


def fixed_sample(n: int, size: int, seed: int) -> np.ndarray:
    """Indices, in order, of a reproducible random `size` of `n` rows; all of them when n <= size."""
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False)) if n > size else np.arange(n)
