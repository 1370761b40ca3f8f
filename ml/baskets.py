"""Frequent itemsets and association rules, exact and fast (Eclat on bitsets).

Each frequent item's baskets are a bitset (one bit per basket, 64 to a word); the support of an
itemset is the popcount of the AND of its items' bitsets. Mining goes depth-first (Eclat): the
bitsets of a prefix's extensions are ANDed with the prefix in one NumPy operation, so the work
grows with the number of frequent itemsets, not with basket size, and memory holds the frequent
items' bitsets (items × baskets / 8 bytes), never a dense basket × item matrix. A 60-item basket
costs what a 2-item one does (mlxtend issue #909).

The itemsets and rules equal mlxtend's `fpgrowth` + `association_rules` on the same baskets and
thresholds (support >= min_support compared as count / baskets in float64, as mlxtend does).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl


@dataclass(frozen=True)
class Itemsets:
    items: list[str]  # item index -> item
    n_baskets: int
    sets: list[tuple[int, ...]]  # each sorted by item index
    counts: np.ndarray  # baskets holding each set

    def support(self) -> dict[frozenset[int], float]:
        return {frozenset(s): c / self.n_baskets for s, c in zip(self.sets, self.counts)}


def encode(pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """(basket, item) pairs -> distinct basket and item indices, the item names (sorted), the basket count.

    Items are numbered in name order (the mining order); baskets in any order, which no count
    depends on. In DuckDB, on every core: polars' unique and joins over the 9.6 million pairs of a
    million customers took 8.7 s, DuckDB 4.9 s. Baskets are numbered as they come, not by a dense
    rank: ranking 10 million order keys is a string sort."""
    with duckdb.connect() as con:
        con.register("given", pairs.select(pl.col("basket").cast(pl.String), pl.col("item").cast(pl.String)).to_arrow())
        con.execute(
            "create temp table pairs as select distinct basket, item from given where basket is not null and item is not null"
        ).fetchall()
        con.execute(
            "create temp table items as select item, (row_number() over (order by item) - 1)::bigint as item_index "
            "from (select distinct item from pairs)"
        ).fetchall()
        con.execute(
            "create temp table baskets as select basket, (row_number() over () - 1)::bigint as basket_index "
            "from (select distinct basket from pairs)"
        ).fetchall()
        coded = con.execute(
            "select basket_index, item_index from pairs join baskets using (basket) join items using (item)"
        ).fetchnumpy()
        names = [row[0] for row in con.execute("select item from items order by item_index").fetchall()]
        n_baskets = con.execute("select count(*) from baskets").fetchall()[0][0]
    return np.asarray(coded["basket_index"]), np.asarray(coded["item_index"]), names, n_baskets


def _bitsets(baskets: np.ndarray, rows: np.ndarray, n_rows: int, n_baskets: int) -> np.ndarray:
    """rows × words uint64 matrix with bit b set in row r for every (b, r) pair (pairs distinct)."""
    words = (n_baskets + 63) // 64
    keys = rows * words + (baskets >> 6)
    bits = np.left_shift(np.uint64(1), (baskets & 63).astype(np.uint64))
    order = np.argsort(keys, kind="stable")
    keys, bits = keys[order], bits[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    matrix = np.zeros(n_rows * words, dtype=np.uint64)
    matrix[keys[starts]] = np.add.reduceat(bits, starts)  # distinct bits: a sum is an OR
    return matrix.reshape(n_rows, words)


def frequent_itemsets(
    baskets: np.ndarray,
    items: np.ndarray,
    names: list[str],
    n_baskets: int,
    min_support: float,
    max_len: int | None = None,
) -> Itemsets:
    """All itemsets held by at least min_support of the baskets (Eclat, depth-first)."""
    if n_baskets == 0:
        return Itemsets(names, 0, [], np.zeros(0, dtype=np.int64))
    item_counts = np.bincount(items, minlength=len(names))
    frequent = np.flatnonzero(item_counts / n_baskets >= min_support)
    frequent = frequent[np.argsort(item_counts[frequent], kind="stable")]  # rarest first: small prefixes
    row_of = np.full(len(names), -1)
    row_of[frequent] = np.arange(len(frequent))
    keep = row_of[items] >= 0
    bits = _bitsets(baskets[keep], row_of[items[keep]], len(frequent), n_baskets)

    sets: list[tuple[int, ...]] = []
    counts: list[int] = []

    def extend(
        prefix: tuple[int, ...], candidates: np.ndarray, candidate_bits: np.ndarray, candidate_counts: np.ndarray
    ) -> None:
        for j, item in enumerate(candidates):
            itemset = prefix + (int(item),)
            sets.append(itemset)
            counts.append(int(candidate_counts[j]))
            if (max_len is not None and len(itemset) >= max_len) or j + 1 == len(candidates):
                continue
            joined = candidate_bits[j + 1 :] & candidate_bits[j]
            joined_counts = np.bitwise_count(joined).sum(axis=1, dtype=np.int64)
            ok = joined_counts / n_baskets >= min_support
            if ok.any():
                extend(itemset, candidates[j + 1 :][ok], joined[ok], joined_counts[ok])

    extend((), frequent, bits, item_counts[frequent])
    return Itemsets(names, n_baskets, [tuple(sorted(s)) for s in sets], np.asarray(counts, dtype=np.int64))


def association_rules(itemsets: Itemsets, min_confidence: float) -> pl.DataFrame:
    """Every rule A -> C from a frequent itemset A ∪ C, with mlxtend's metrics, at min_confidence or more."""
    support = itemsets.support()
    rows = []
    for itemset, count in zip(itemsets.sets, itemsets.counts):
        if len(itemset) < 2:
            continue
        s_ac = count / itemsets.n_baskets
        for size in range(1, len(itemset)):
            for antecedent in itertools.combinations(itemset, size):
                consequent = tuple(i for i in itemset if i not in antecedent)
                s_a, s_c = support[frozenset(antecedent)], support[frozenset(consequent)]
                confidence = s_ac / s_a
                if confidence >= min_confidence:
                    rows.append((antecedent, consequent, s_a, s_c, s_ac, confidence))
    names = itemsets.items
    frame = pl.DataFrame(
        {
            "antecedents": [sorted(names[i] for i in a) for a, *_ in rows],
            "consequents": [sorted(names[i] for i in c) for _, c, *_ in rows],
            "antecedent_support": [r[2] for r in rows],
            "consequent_support": [r[3] for r in rows],
            "support": [r[4] for r in rows],
            "confidence": [r[5] for r in rows],
        },
        schema={
            "antecedents": pl.List(pl.String),
            "consequents": pl.List(pl.String),
            "antecedent_support": pl.Float64,
            "consequent_support": pl.Float64,
            "support": pl.Float64,
            "confidence": pl.Float64,
        },
    )
    return frame.with_columns(
        lift=pl.col("confidence") / pl.col("consequent_support"),
        leverage=pl.col("support") - pl.col("antecedent_support") * pl.col("consequent_support"),
        conviction=pl.when(pl.col("confidence") < 1)
        .then((1 - pl.col("consequent_support")) / (1 - pl.col("confidence")))
        .otherwise(float("inf")),
    ).sort(["lift", "antecedents", "consequents"], descending=[True, False, False])
