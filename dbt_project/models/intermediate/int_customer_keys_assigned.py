"""Connected components of the identity graph, with customer keys that stay put.

Records and identifiers are nodes; a record links to each identifier it carries; a connected
component holding at least one customer identifier (customer ref, loyalty card, phone, email) is
one customer. Its key is kept from the previous run whenever any of its identifiers had one; when
a component now joins several previous customers, the oldest key survives and the others are
recorded as merged into it. A component new to the warehouse gets 'C' + the MD5 of its strongest
identifier, so a rebuild from scratch gives the same keys as the first build did.
"""

import datetime as dt
import hashlib

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

CUSTOMER_IDENTIFIERS = ["customer_ref", "loyalty_card", "phone", "email"]  # strongest first


def previous_keys(dbt, session) -> pd.DataFrame | None:
    exists = session.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [dbt.this.schema, dbt.this.identifier],
    ).fetchall()[0][0]
    if not exists:
        return None
    return session.execute(
        f"select identifier_type, identifier_value, customer_key, assigned_at, previous_customer_key, merged_at from {dbt.this}"
    ).df()


def model(dbt, session):
    dbt.config(materialized="table")
    edges = dbt.ref("int_identifiers_collected").df()
    now = pd.Timestamp(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).as_unit("us")
    columns = ["identifier_type", "identifier_value", "customer_key", "assigned_at", "previous_customer_key",
               "merged_at", "component_records"]
    if edges.empty:
        types = {"assigned_at": "datetime64[us]", "merged_at": "datetime64[us]", "component_records": "int64"}
        return pd.DataFrame({c: pd.Series(dtype=types.get(c, "string")) for c in columns})  # typed, even when empty

    records = edges["record_type"] + "|" + edges["record_id"]
    identifiers = edges["identifier_type"] + "|" + edges["identifier_value"]
    record_idx, record_names = pd.factorize(records)
    ident_idx, ident_names = pd.factorize(identifiers)
    n_rec = len(record_names)
    n = n_rec + len(ident_names)
    graph = coo_matrix((np.ones(len(edges)), (record_idx, n_rec + ident_idx)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)

    nodes = pd.DataFrame({"identifier": ident_names, "component": labels[n_rec:]})
    nodes[["identifier_type", "identifier_value"]] = nodes["identifier"].str.split("|", n=1, expand=True)
    nodes["rank"] = nodes["identifier_type"].map({t: i for i, t in enumerate(CUSTOMER_IDENTIFIERS)})
    component_records = pd.Series(labels[:n_rec]).value_counts()
    nodes["component_records"] = nodes["component"].map(component_records).fillna(0).astype("int64")

    known = nodes.dropna(subset=["rank"]).sort_values(["component", "rank", "identifier_value"])
    anchors = known.groupby("component").first()
    nodes = nodes[nodes["component"].isin(anchors.index)].copy()  # anonymous components: no customer
    fresh = "C" + anchors["identifier"].map(lambda s: hashlib.md5(s.encode()).hexdigest()[:16])

    prev = previous_keys(dbt, session)
    if prev is not None and not prev.empty:
        for c in ("assigned_at", "merged_at"):
            prev[c] = pd.to_datetime(prev[c]).astype("datetime64[us]")
        nodes = nodes.merge(prev, on=["identifier_type", "identifier_value"], how="left")
        seen = nodes.dropna(subset=["customer_key"]).sort_values(["assigned_at", "customer_key"])
        survivors = seen.groupby("component")[["customer_key", "assigned_at"]].first()
    else:
        for c in ("customer_key", "assigned_at", "previous_customer_key", "merged_at"):
            nodes[c] = None
        survivors = pd.DataFrame(columns=["customer_key", "assigned_at"])
    nodes = nodes.rename(columns={"customer_key": "old_key", "assigned_at": "old_assigned_at"})
    nodes["customer_key"] = nodes["component"].map(survivors["customer_key"]).fillna(nodes["component"].map(fresh))
    nodes["assigned_at"] = nodes["component"].map(survivors["assigned_at"]).fillna(now)
    merged = nodes["old_key"].notna() & (nodes["old_key"] != nodes["customer_key"])
    nodes.loc[merged, "previous_customer_key"] = nodes.loc[merged, "old_key"]
    nodes.loc[merged, "merged_at"] = now
    out = nodes[columns].copy()
    out["assigned_at"] = pd.to_datetime(out["assigned_at"])
    out["merged_at"] = pd.to_datetime(out["merged_at"])
    return out.sort_values(["customer_key", "identifier_type", "identifier_value"]).reset_index(drop=True)
