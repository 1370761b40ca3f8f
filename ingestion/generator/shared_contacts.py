"""Contacts that real CRM data shares between different people: dummy mobiles and throwaway emails
typed for customers who give none, family landlines, and the shop's own phone on receipts.

Every value is drawn from the seed at generation time, never taken from a list, so identity
resolution can only tell them apart by evidence in the data (docs/identity.md).
"""

from __future__ import annotations

import numpy as np

MOBILE_PREFIXES = ["135", "138", "139", "186", "188"]


def placeholder_mobiles(rng: np.random.Generator) -> list[str]:
    """Four dummy mobiles as staff type them: a repeated digit, a run of zeros, a counting run, and
    one staff member's own number (no pattern at all)."""
    prefix = str(rng.choice(MOBILE_PREFIXES))
    digit = str(rng.integers(1, 10))
    start = int(rng.integers(0, 3))
    return [
        prefix[:2] + digit * 9,
        prefix + "0" * 8,
        prefix + "".join(str((start + i) % 10) for i in range(1, 9)),
        str(rng.choice([13, 15, 18])) + f"{rng.integers(0, 10**9):09d}",
    ]


def placeholder_emails(rng: np.random.Generator, domains: list[str]) -> list[str]:
    """Three throwaway emails: a repeated digit, 'no' plus digits, and a staff member's own."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    staff = "".join(letters[i] for i in rng.integers(0, 26, int(rng.integers(4, 8))))
    return [
        str(rng.integers(1, 10)) * int(rng.integers(5, 9)) + "@" + str(rng.choice(domains)),
        f"no{rng.integers(0, 1000)}@" + str(rng.choice(domains)),
        f"{staff}{rng.integers(10, 100)}@" + str(rng.choice(domains)),
    ]


def assign_placeholders(
    rng: np.random.Generator, n: int, rate: float, values: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(person indices, the value each gives): a share `rate` of persons, the first values the
    commonest (weights 4:3:2:1...), so each value is shared by dozens to hundreds at 10,000 persons."""
    who = np.flatnonzero(rng.random(n) < rate)
    weights = np.arange(len(values), 0, -1, dtype=float)
    pick = rng.choice(len(values), len(who), p=weights / weights.sum())
    return who, np.asarray(values, dtype=object)[pick]


def households(rng: np.random.Generator, n: int, rate: float) -> list[np.ndarray]:
    """Groups of 2-4 persons (a share `rate` of all) who share one home landline."""
    members = rng.permutation(np.flatnonzero(rng.random(n) < rate))
    groups, i = [], 0
    while i + 2 <= len(members):
        size = int(rng.integers(2, 5))
        groups.append(members[i : i + size])
        i += size
    return [g for g in groups if len(g) >= 2]


def landline(rng: np.random.Generator, area_code: str) -> str:
    return f"{area_code}-{rng.integers(2, 9)}{rng.integers(0, 10**7):07d}"
