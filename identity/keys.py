"""Customer keys of the identity graph's connected components, kept stable from run to run.

Engine-neutral: the components come from SciPy (DuckDB, int_customer_keys_assigned) or from
Splink's SQL clustering (Spark, identity/spark.py); the keys are then given here by the same rules.
A component holding at least one customer identifier (customer ref, loyalty card, phone, email)
is one customer. Its key is kept from the previous run whenever any of its identifiers had one;
when a component now joins several previous customers, the oldest key survives and the others are
recorded as merged into it. When a customer falls apart, one piece keeps its key and the others
get new keys, recorded as split off it. A component new to the warehouse gets 'C' + the MD5 of
its strongest identifier, so a rebuild from scratch gives the same keys as the first build did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

CUSTOMER_IDENTIFIERS = ["customer_ref", "loyalty_card", "phone", "email"]  # strongest first
COLUMNS = [
    "identifier_type",
    "identifier_value",
    "customer_key",
    "assigned_at",
    "previous_customer_key",
    "merged_at",
    "key_change",
    "component_records",
]
PREVIOUS = ["customer_key", "assigned_at", "previous_customer_key", "merged_at", "key_change"]

# The edges of int_identifiers_collected whose identifier the guard (int_identifier_quality) lets
# link: contact values it guards would join strangers. Portable SQL, for both engines.
GUARDED_EDGES_SQL = """
    select e.record_type, e.record_id, e.identifier_type, e.identifier_value from {collected} as e
    where not exists (select 1 from {guarded} as g
                      where g.identifier_type = e.identifier_type and g.identifier_value = e.identifier_value)
"""


@dataclass(frozen=True)
class Assigned:
    """What a run of the keys step wrote, on either engine."""

    identifiers: int
    customers: int
    path: str  # full or incremental
    records_recomputed: int


def one_claim_per_key(survivors: pd.DataFrame, fresh: pd.Series, records: pd.Series) -> pd.DataFrame:
    """The previous key each component keeps (survivors: component -> customer_key, assigned_at),
    with at most one component per key. The pieces of a customer that fell apart all claim its key:
    the piece whose own new key it would be keeps it, else the one with the most records; the
    others get new keys."""
    claims = survivors.assign(
        own=fresh.reindex(survivors.index) == survivors["customer_key"],
        records=records.reindex(survivors.index),
        fresh=fresh.reindex(survivors.index),
    )
    claims = claims.sort_values(["own", "records", "fresh"], ascending=[False, False, True])
    return survivors.loc[claims.index[~claims["customer_key"].duplicated()]]


def assign_keys(
    n_rec: int, record_idx: np.ndarray, ident_idx: np.ndarray, identifiers: pd.DataFrame, prev: pd.DataFrame | None
) -> pd.DataFrame:
    """Keys of the graph of `n_rec` records and `identifiers` (in value order), one edge per
    (record_idx, ident_idx) pair; `prev`: each identifier's previous key columns, or None."""
    if identifiers.empty:
        return keys_of_components(identifiers.assign(component=[], component_records=[]), prev)
    n = n_rec + len(identifiers)
    graph = coo_matrix((np.ones(len(record_idx), dtype=np.int8), (record_idx, n_rec + ident_idx)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    records = np.bincount(labels[:n_rec], minlength=labels.max() + 1)
    return keys_of_components(
        identifiers.assign(component=labels[n_rec:], component_records=records[labels[n_rec:]].astype("int64")), prev
    )


def keys_of_components(nodes: pd.DataFrame, prev: pd.DataFrame | None) -> pd.DataFrame:
    """Keys of identifiers (identifier_type, identifier_value, in value order) given their
    `component` and the component's record count (`component_records`); `prev` as assign_keys."""
    now = pd.Timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None)).as_unit("us")
    if nodes.empty:
        types = {"assigned_at": "datetime64[us]", "merged_at": "datetime64[us]", "component_records": "int64"}
        return pd.DataFrame({c: pd.Series(dtype=types.get(c, "string")) for c in COLUMNS})  # typed, even when empty
    nodes = nodes.reset_index(drop=True).assign(ident_idx=np.arange(len(nodes)))
    n_identifiers = len(nodes)
    nodes["rank"] = nodes["identifier_type"].map({t: i for i, t in enumerate(CUSTOMER_IDENTIFIERS)})

    known = nodes.dropna(subset=["rank"]).sort_values(["component", "rank", "ident_idx"])  # ident_idx: value order
    anchors = known.groupby("component").first()
    nodes = nodes[nodes["component"].isin(anchors.index)].copy()  # anonymous components: no customer
    fresh = "C" + (anchors["identifier_type"] + "|" + anchors["identifier_value"]).map(
        lambda s: hashlib.md5(s.encode()).hexdigest()[:16]
    )

    if prev is not None:
        for c in ("assigned_at", "merged_at"):
            prev[c] = pd.to_datetime(prev[c]).astype("datetime64[us]")
        if (
            len(prev) != n_identifiers
        ):  # taken by position below: a key table not unique per identifier would shift them
            raise ValueError(
                f"{len(prev)} previous keys for {n_identifiers} identifiers: the previous "
                "int_customer_keys_assigned holds an identifier twice"
            )
        positions = nodes["ident_idx"].to_numpy()  # prev is in identifier order
        for c in prev.columns:
            nodes[c] = prev[c].take(positions).set_axis(nodes.index)
        # The oldest key survives; between keys as old, the one a build from scratch would give.
        seen = nodes.dropna(subset=["customer_key"])
        seen = seen.assign(is_fresh=seen["customer_key"] == seen["component"].map(fresh))
        seen = seen.sort_values(["assigned_at", "is_fresh", "customer_key"], ascending=[True, False, True])
        survivors = seen.groupby("component")[["customer_key", "assigned_at"]].first()
        survivors = one_claim_per_key(survivors, fresh, nodes.groupby("component")["component_records"].first())
    else:
        for c in PREVIOUS:
            nodes[c] = None
        survivors = pd.DataFrame(columns=["customer_key", "assigned_at"])
    nodes = nodes.rename(columns={"customer_key": "old_key", "assigned_at": "old_assigned_at"})
    # Typed before filling: with no previous keys the lookups come back as float NaN, which pandas
    # will stop filling with strings and timestamps.
    nodes["customer_key"] = (
        nodes["component"].map(survivors["customer_key"]).astype("string").fillna(nodes["component"].map(fresh))
    )
    nodes["assigned_at"] = nodes["component"].map(survivors["assigned_at"]).astype("datetime64[us]").fillna(now)
    changed = nodes["old_key"].notna() & (nodes["old_key"] != nodes["customer_key"])
    nodes.loc[changed, "previous_customer_key"] = nodes.loc[changed, "old_key"]
    nodes.loc[changed, "merged_at"] = now
    kept_elsewhere = nodes["old_key"].isin(set(nodes["customer_key"]))  # the old key lives on in another piece
    nodes.loc[changed, "key_change"] = np.where(kept_elsewhere[changed], "split", "merged")
    out = nodes[COLUMNS].copy()
    # Typed: without a merge the column holds only None, which DuckDB would store as type NULL
    # (and int_customer_merges.merged_customer_key with it), not VARCHAR.
    out["previous_customer_key"] = out["previous_customer_key"].astype("string")
    out["key_change"] = out["key_change"].astype("string")
    # Microseconds always: with no merge yet pandas would make nanoseconds, another DuckDB type,
    # which the incremental path refuses (on_schema_change: fail).
    out["assigned_at"] = pd.to_datetime(out["assigned_at"]).astype("datetime64[us]")
    out["merged_at"] = pd.to_datetime(out["merged_at"]).astype("datetime64[us]")
    return out.reset_index(drop=True)  # in identifier order (graph_edges): sorting by key is slow at scale
