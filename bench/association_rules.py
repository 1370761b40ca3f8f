"""Benchmark: our frequent-itemset miner against mlxtend's fpgrowth on the real Online Retail data.

Same baskets, same threshold, same run: UK invoices, not cancelled, positive quantity and price,
stock codes starting with five digits (17,901 baskets × 3,894 items). Prints itemsets, rules,
mining time and peak traced memory of both, their ratio, and whether the results are equal.
`--synthetic-lines N` then times ours alone on N order lines (Zipf-popular items, 4 lines a
basket on average), with the size mlxtend's one-hot frame would need.

    python3 -m uv run python bench/association_rules.py [--min-support 0.01] [--synthetic-lines 10000000]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import pandas as pd
import polars as pl

from ml.baskets import association_rules, encode, frequent_itemsets

DATA = Path(__file__).resolve().parents[1] / "ingestion" / "examples" / "online_retail" / "online_retail.parquet"


def measured(fn):
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--min-support", type=float, default=0.01)
    parser.add_argument("--synthetic-lines", type=int, default=0)
    args = parser.parse_args()
    from mlxtend.frequent_patterns import association_rules as mlxtend_rules
    from mlxtend.frequent_patterns import fpgrowth

    lines = pl.read_parquet(DATA).with_columns(pl.col("InvoiceNo").cast(pl.String), pl.col("StockCode").cast(pl.String))
    lines = lines.filter(
        (pl.col("Country") == "United Kingdom")
        & ~pl.col("InvoiceNo").str.starts_with("C")
        & (pl.col("Quantity") > 0)
        & (pl.col("UnitPrice") > 0)
        & pl.col("StockCode").str.contains(r"^\d{5}")
    )
    baskets, items, names, n = encode(lines.select(basket="InvoiceNo", item="StockCode"))
    print(f"{n:,} baskets × {len(names):,} items, min support {args.min_support}")

    ours, ours_s, ours_mib = measured(lambda: frequent_itemsets(baskets, items, names, n, args.min_support))
    rules, rules_s, _ = measured(lambda: association_rules(ours, 0.0))
    onehot = pd.crosstab(pd.Series(baskets), pd.Series(items)).astype(bool)
    onehot.columns = [names[c] for c in onehot.columns]
    theirs, theirs_s, theirs_mib = measured(lambda: fpgrowth(onehot, min_support=args.min_support, use_colnames=True))
    their_rules = mlxtend_rules(theirs, num_itemsets=n, metric="confidence", min_threshold=0.0)

    ours_sets = {frozenset(names[i] for i in s): c / n for s, c in zip(ours.sets, ours.counts)}
    same = ours_sets == dict(zip(theirs["itemsets"], theirs["support"])) and rules.height == len(their_rules)
    print(
        f"ours     {len(ours.sets):6,} itemsets (up to {max(map(len, ours.sets))} items), {rules.height:6,} rules; "
        f"mining {ours_s:6.2f} s, rules {rules_s:5.2f} s, peak {ours_mib:5.0f} MiB"
    )
    print(
        f"mlxtend  {len(theirs):6,} itemsets, {len(their_rules):6,} rules; mining {theirs_s:6.2f} s, peak {theirs_mib:5.0f} MiB "
        f"(plus the one-hot frame: {onehot.memory_usage(deep=True).sum() / 2**20:.0f} MiB)"
    )
    print(
        f"speed-up {theirs_s / ours_s:.1f}×, memory {theirs_mib / max(ours_mib, 1e-9):.1f}× less; same itemsets and rules: {same}"
    )
    if args.synthetic_lines:
        synthetic(args.synthetic_lines, args.min_support)


def synthetic(n_lines: int, min_support: float) -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    sizes = rng.geometric(0.25, n_lines // 4)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_lines) + 1]
    items = np.minimum(rng.zipf(1.3, sizes.sum()), 20_000)
    pairs = pl.DataFrame({"basket": np.repeat(np.arange(len(sizes)), sizes), "item": items}).with_columns(
        pl.col("basket").cast(pl.String), ("SKU-" + pl.col("item").cast(pl.String)).alias("item")
    )
    start = time.perf_counter()
    (baskets, item_index, names, n), encode_s, _ = measured(lambda: encode(pairs))
    itemsets, mine_s, mine_mib = measured(lambda: frequent_itemsets(baskets, item_index, names, n, min_support))
    rules, rules_s, _ = measured(lambda: association_rules(itemsets, 0.1))
    onehot_gib = n * len(names) / 2**30  # one bool byte per basket × item
    print(
        f"synthetic: {len(pairs):,} lines, {n:,} baskets × {len(names):,} items at min support {min_support}: "
        f"{len(itemsets.sets):,} itemsets, {rules.height:,} rules; encode {encode_s:.1f} s, mining {mine_s:.1f} s "
        f"(peak {mine_mib:.0f} MiB), rules {rules_s:.1f} s, {time.perf_counter() - start:.1f} s in all; "
        f"mlxtend's one-hot frame alone would be {onehot_gib:.0f} GiB"
    )


if __name__ == "__main__":
    main()
