"""Fuzzy matching of registry profiles with Splink, on either engine's Splink backend.

The Fellegi-Sunter model: the u-probabilities (how often two different people agree by chance)
are measured on the data by random sampling; the m-probabilities (how often one person's two
registrations agree) are set below from how registries garble people (docs/identity.md). The
"one character off" level is the one comparison in SQL of our own, written per dialect.
"""

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

PAIR_COLUMNS = {
    "customer_ref_l": "string",
    "customer_ref_r": "string",
    "match_probability": "float64",
    "match_weight": "float64",
    "full_name_l": "string",
    "full_name_r": "string",
    "birth_date": "datetime64[us]",
    "city_l": "string",
    "city_r": "string",
}
# What the next run needs to know which profiles changed since: the newest profile load scored (UTC)
# and how many profile versions there were up to it.
COLUMNS = {**PAIR_COLUMNS, "is_accepted": "bool", "profiles_loaded_at": "datetime64[us]", "profile_versions": "int64"}
REVIEW_THRESHOLD = 0.5


@dataclass(frozen=True)
class Matched:
    """What a run of the fuzzy step wrote, on either engine."""

    pairs: int
    accepted: int
    path: str  # full or incremental
    profiles_searched: int  # the profiles whose pairs were searched again


# One character off: a substitution counted in characters (DuckDB's edit distances count UTF-8
# bytes, so 何明/何铭 would be 3 apart) or a transposition of romanized letters. On Spark,
# damerau_levenshtein is the UDF of Splink's jar.
ONE_CHARACTER_OFF = {
    "duckdb": "(length(full_name_l) = length(full_name_r) and length(full_name_l) >= 2 and list_count(list_filter("
    "range(1, length(full_name_l) + 1), lambda i: substring(full_name_l, i, 1) <> substring(full_name_r, i, 1))) = 1)"
    " or damerau_levenshtein(full_name_l, full_name_r) <= 1",
    "spark": "(length(full_name_l) = length(full_name_r) and length(full_name_l) >= 2 and size(filter("
    "sequence(1, length(full_name_l)), i -> substring(full_name_l, i, 1) <> substring(full_name_r, i, 1))) = 1)"
    " or damerau_levenshtein(full_name_l, full_name_r) <= 1",
}


def settings(n_profiles: int, dialect: str = "duckdb") -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    name_levels: list[Any] = [
        cll.NullLevel("full_name"),
        cll.ExactMatchLevel("full_name").configure(m_probability=0.75),
        cll.CustomLevel(ONE_CHARACTER_OFF[dialect], "One character off").configure(m_probability=0.20),
        cll.JaroWinklerLevel("full_name", 0.9).configure(m_probability=0.03),
        cll.ElseLevel().configure(m_probability=0.02),
    ]
    return SettingsCreator(
        link_type="dedupe_only",
        # Until estimated below: one duplicate among all pairs.
        probability_two_random_records_match=2 / (n_profiles * (n_profiles - 1)),
        unique_id_column_name="customer_ref",
        blocking_rules_to_generate_predictions=[block_on("birth_date"), block_on("full_name", "city")],
        comparisons=[
            cl.CustomComparison(output_column_name="full_name", comparison_levels=name_levels),
            cl.ExactMatch("birth_date").configure(m_probabilities=[0.98, 0.02]),
            cl.ExactMatch("city").configure(m_probabilities=[0.90, 0.10]),  # people move
            cl.ExactMatch("gender").configure(m_probabilities=[0.98, 0.02]),
        ],
    )


def trained_linker(
    api: Any, profiles: Any, n_profiles: int, has_exact_duplicates: bool, dialect: str
) -> tuple[Any, Any]:
    """A Splink linker over `profiles` (a frame the backend `api` registers) with the prior and the
    u-probabilities measured on them, and the registered profiles."""
    from splink import Linker, block_on

    every = api.register(profiles)
    linker = Linker(every, settings(n_profiles, dialect), log_level=logging.WARNING)
    if has_exact_duplicates:  # else Splink cannot estimate the prior and the default in settings() stays
        linker.training.estimate_probability_two_random_records_match(
            [block_on("full_name", "birth_date", "city")], recall=0.5
        )
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=42)
    return linker, every


def predict(
    profiles: pd.DataFrame, api: Any, changed: pd.DataFrame | None = None, kept: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Pairs of `profiles` at REVIEW_THRESHOLD or above. With `changed` and `kept` (an incremental
    run), only the pairs holding a changed profile, plus the kept pairs scored again: u and the
    prior are measured anew on every current profile each run, and a kept pair's probability must
    be what a full refresh would give it (a pair near the threshold would otherwise link in one
    and not the other). Scoring the kept pairs alone compares only profiles that were paired."""
    has_exact_duplicates = bool(profiles.duplicated(["full_name", "birth_date", "city"]).any())
    linker, every = trained_linker(api, profiles, len(profiles), has_exact_duplicates, "duckdb")
    if changed is None:
        pairs = linker.inference.predict(threshold_match_probability=REVIEW_THRESHOLD).as_pandas_dataframe()
        return pairs.rename(columns={"birth_date_l": "birth_date"})[list(PAIR_COLUMNS)]
    parts = []
    if len(changed):
        parts.append(
            oriented(
                linker.inference.predict_between(
                    api.register(changed), every, threshold_match_probability=REVIEW_THRESHOLD
                ).as_pandas_dataframe()
            )
        )
    if kept is not None and len(kept):
        left = profiles[profiles["customer_ref"].isin(kept["customer_ref_l"])]
        right = profiles[profiles["customer_ref"].isin(kept["customer_ref_r"])]
        again = oriented(
            linker.inference.predict_between(
                api.register(left), api.register(right), threshold_match_probability=REVIEW_THRESHOLD
            ).as_pandas_dataframe()
        )
        parts.append(again.merge(kept[["customer_ref_l", "customer_ref_r"]], on=["customer_ref_l", "customer_ref_r"]))
    pairs = pd.concat(parts) if parts else pd.DataFrame(columns=[*PAIR_COLUMNS, "birth_date_l"])
    return pairs.rename(columns={"birth_date_l": "birth_date"})[list(PAIR_COLUMNS)]


def oriented(pairs: pd.DataFrame) -> pd.DataFrame:
    """predict_between pairs each changed profile with every profile, itself included, and two
    changed profiles both ways round: drop the self-pairs and keep each pair once, the way round
    dedupe's predict gives it (customer_ref_l < customer_ref_r). The comparisons are symmetric."""
    pairs = pairs[pairs["customer_ref_l"] != pairs["customer_ref_r"]].copy()
    swap = pairs["customer_ref_l"] > pairs["customer_ref_r"]
    for left in ("customer_ref_l", "full_name_l", "birth_date_l", "city_l"):
        right = left[:-2] + "_r"
        pairs.loc[swap, [left, right]] = pairs.loc[swap, [right, left]].to_numpy()
    return pairs.drop_duplicates(["customer_ref_l", "customer_ref_r"])
