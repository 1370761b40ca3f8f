"""Data-quality gates on freshly loaded raw partitions, with great-expectations.

GX 1.x's SQL engine cannot validate DuckDB through duckdb-engine (GX issues #10738, #11579: it
reads results after closing the connection), so DuckDB streams the loaded partitions to GX as
pandas batches of at most `batch_rows` rows, holding only the columns the expectations need;
counts are summed over batches. Memory stays bounded by one batch whatever the partition size.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ingestion._compat.great_expectations import skip_batch_fingerprints
from ingestion.contracts import Contract
from ingestion.load import LoadResult
from ingestion.sources import Source

BATCH_ROWS = 200_000
VALUE_SET_MOSTLY = 0.99  # share of non-null values that must be in a field's value set
RANGE_MOSTLY = 0.999  # share of non-null values that must lie in a field's range


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    description: str
    blocking: bool  # a failure stops downstream assets from using this output
    metadata: dict[str, object] = field(default_factory=dict)


def check_names(contract: Contract) -> list[tuple[str, str, bool]]:
    """(name, description, blocking) of every check a source of this contract gets."""
    checks = [
        ("keys_not_null", f"GX: {', '.join((*contract.key, contract.event_time))} are never null.", True),
        (
            "row_count_positive",
            "GX: the loaded partitions hold at least one row (warns, as shops close on some days).",
            False,
        ),
        ("quarantine_rate", "GX: share of quarantined rows is under the source's max_quarantine_rate.", True),
    ]
    if any(f.values for f in contract.fields):
        checks.append(
            ("values_in_set", f"GX: at least {VALUE_SET_MOSTLY:.0%} of values of coded fields are known codes.", False)
        )
    if any(f.min_value is not None for f in contract.fields) or contract.channel == "store":
        checks.append(("values_in_range", f"GX: at least {RANGE_MOSTLY:.1%} of numeric values are in range.", True))
    return checks


def _expectations(contract: Contract) -> dict[str, list]:
    import great_expectations as gx

    e = gx.expectations
    out: dict[str, list] = {
        "keys_not_null": [e.ExpectColumnValuesToNotBeNull(column=c) for c in (*contract.key, contract.event_time)],
        "values_in_set": [
            e.ExpectColumnValuesToBeInSet(column=f.name, value_set=list(f.values), mostly=VALUE_SET_MOSTLY)
            for f in contract.fields
            if f.values
        ],
        "values_in_range": [
            e.ExpectColumnValuesToBeBetween(
                column=f.name, min_value=f.min_value, max_value=f.max_value, mostly=RANGE_MOSTLY
            )
            for f in contract.fields
            if f.min_value is not None
        ],
    }
    if contract.channel == "store":  # refunds are negative quantities, never negative prices
        out["values_in_range"].append(
            e.ExpectColumnValuesToBeBetween(column="unit_price", min_value=0, mostly=RANGE_MOSTLY)
        )
    return out


@functools.cache
def _batch_definition() -> Any:
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    skip_batch_fingerprints()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("raw").add_dataframe_asset("partition_batch")
    return asset.add_batch_definition_whole_dataframe("whole")


def _columns(contract: Contract) -> list[str]:
    cols = {*contract.key, contract.event_time}
    cols |= {f.name for f in contract.fields if f.values or f.min_value is not None}
    if contract.channel == "store":
        cols.add("unit_price")
    # Coded fields are compared lower-cased and trimmed, as staging will read them.
    return [
        f"lower(trim({c})) AS {c}"
        if contract.field(c).values
        else (f"CAST({c} AS DOUBLE) AS {c}" if contract.field(c).type == "decimal" else c)
        for c in sorted(cols)
    ]


def validate(
    con: duckdb.DuckDBPyConnection, source: Source, result: LoadResult, batch_rows: int = BATCH_ROWS
) -> list[CheckOutcome]:
    """Run the checks of `check_names` over partitions result.start..result.end of the source."""
    groups = {k: v for k, v in _expectations(source.contract).items() if v}
    totals, rows = _unexpected_counts(con, source, result, groups, batch_rows)
    return [
        _outcome(name, description, blocking, groups.get(name, []), totals.get(name, []), rows, source, result)
        for name, description, blocking in check_names(source.contract)
    ]


def _unexpected_counts(
    con: duckdb.DuckDBPyConnection, source: Source, result: LoadResult, groups: dict[str, list], batch_rows: int
) -> tuple[dict[str, list[list[int]]], int]:
    """Per check, per expectation: [unexpected, seen] over the partitions' rows; and the rows read."""
    import great_expectations as gx

    totals: dict[str, list[list[int]]] = {k: [[0, 0] for _ in v] for k, v in groups.items()}
    # One suite per batch, not one validation per expectation: GX plans its metrics once per
    # validation (and fingerprinted the batch each time, before `_batch_definition` turned it
    # off). BASIC results leave out samples of the unexpected values; only the counts are used.
    # GX returns results in its own order; `meta` says whose each is.
    for name, expectations in groups.items():
        for i, exp in enumerate(expectations):
            exp.meta = {"check": name, "index": i}
    suite = gx.ExpectationSuite(name=f"raw_{source.name}", expectations=[e for v in groups.values() for e in v])
    cursor = con.execute(
        f"SELECT {', '.join(_columns(source.contract))} FROM {source.table} WHERE _partition_date BETWEEN ? AND ?",
        [result.start, result.end],
    )
    batch_def = _batch_definition()
    rows = 0
    while True:
        with warnings.catch_warnings():  # DuckDB's pandas conversion uses an API pandas 3 deprecates
            warnings.simplefilter("ignore")
            df = cursor.fetch_df_chunk(max(1, batch_rows // 2048))
        if df.empty:
            break
        rows += len(df)
        validation = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite, result_format="BASIC")
        for r in validation.results:
            total = totals[r.expectation_config.meta["check"]][r.expectation_config.meta["index"]]
            total[0] += int(r.result.get("unexpected_count") or 0)
            total[1] += int(r.result.get("element_count") or 0) - int(r.result.get("missing_count") or 0)
    return totals, rows


def _outcome(
    name: str,
    description: str,
    blocking: bool,
    expectations: list,
    totals: list[list[int]],
    rows: int,
    source: Source,
    result: LoadResult,
) -> CheckOutcome:
    if name == "row_count_positive":
        return CheckOutcome(name, rows > 0, description, blocking, {"rows": rows})
    if name == "quarantine_rate":
        return CheckOutcome(
            name,
            _quarantine_rate_passes(result, source.max_quarantine_rate),
            description,
            blocking,
            {
                "quarantine_rate": round(result.quarantine_rate, 6),
                "max_quarantine_rate": source.max_quarantine_rate,
                "rows_quarantined": result.rows_quarantined,
                "rows_read": result.rows_read,
            },
        )
    passed, meta = True, {}
    for exp, (bad, seen) in zip(expectations, totals):
        mostly = getattr(exp, "mostly", 1.0) or 1.0
        passed &= seen == 0 or bad / seen <= (1 - mostly) + 1e-12
        meta[f"{exp.column}_unexpected"] = bad
    return CheckOutcome(name, passed, description, blocking, {**meta, "rows": rows})


def _quarantine_rate_passes(result: LoadResult, threshold: float) -> bool:
    """The quarantine gate as a GX expectation on a one-row frame of the load's counts."""
    import great_expectations as gx
    import pandas as pd

    df = pd.DataFrame({"quarantine_rate": [result.quarantine_rate]})
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
    r = batch.validate(
        gx.expectations.ExpectColumnValuesToBeBetween(column="quarantine_rate", min_value=0, max_value=threshold)
    )
    return bool(r.success)
