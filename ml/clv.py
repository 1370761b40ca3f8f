"""Customer value: BG/NBD (how many purchases, is the customer still alive) and Gamma-Gamma (how
much per purchase), fitted by maximum likelihood with SciPy.

Per customer who bought: x = repeat purchase days (distinct purchase days − 1), t_x = days from the
first to the last purchase day, T = days from the first purchase day to the as-of date. Formulas:
Fader, Hardie & Lee (2005) and Fader & Hardie (2013); tests check the fit on their CDNOW data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

from ml.config import ValueConfig
from ml.run_context import NotEnoughHistory
from ml.sampling import fixed_sample

DAYS_PER_MONTH = 365.25 / 12
# Customers the two models are fitted on (a fixed random sample above this; all of them below).
# Seven parameters are pinned down long before, and a fit costs iterations × customers: on the
# Gamma-Gamma ridge Nelder-Mead runs its 5,000 iterations, which took minutes at 1 million customers.
FIT_SAMPLE, FIT_SEED = 50_000, 42


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        odds = np.where(x > 0, a / np.maximum(b + x - 1, 1e-12) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
        return 1.0 / (1.0 + odds)

    def p_purchase(self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(at least one purchase in (T, T + t]): alive (a customer drops out only right after a
        purchase, so one alive at T stays alive until their next purchase) and one Poisson event with
        the rate's posterior Gamma(r + x, alpha + T)."""
        none_while_alive = ((self.alpha + T) / (self.alpha + T + t)) ** (self.r + x)
        return self.p_alive(x, t_x, T) * (1 - none_while_alive)

    def expected_purchases(self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Expected purchases in (T, T + t] given the customer's history."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        tail = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        return head * tail * self.p_alive(x, t_x, T)


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float

    def expected_spend(self, x: np.ndarray, mean_spend: np.ndarray) -> np.ndarray:
        """Expected value of a future purchase; the population mean for customers without repeats."""
        population = self.p * self.gamma / (self.q - 1)
        conditional = (self.gamma + x * mean_spend) * self.p / (self.p * x + self.q - 1)
        return np.where(x > 0, conditional, population)


# Log-parameters stay within ±LOG_BOUND. Where spend hardly varies between customers, the
# Gamma-Gamma likelihood is a long flat ridge (q and gamma grow together, their ratio fixed): a
# Nelder-Mead search to 1e-10 crawled along it for 20,000 steps. A
# coarse Nelder-Mead (robust start) polished by L-BFGS-B (gradient, fast on ridges) reaches the
# published CDNOW parameters in well under a second.
LOG_BOUND = 15.0


def _fit(negative_log_likelihood: Callable[[np.ndarray], float], start: np.ndarray) -> np.ndarray:
    """Minimize over log-parameters (keeps them positive); coarse Nelder-Mead, then L-BFGS-B."""
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    result = minimize(
        negative_log_likelihood,
        np.log(start),
        method="Nelder-Mead",
        bounds=bounds,
        # A few hundred steps converge; where spend has no spread between customers Gamma-Gamma's
        # likelihood is a ridge to the bound, and 5,000 steps along it took 40 s at M for the same end.
        options={"maxiter": 1_000, "xatol": 1e-6, "fatol": 1e-8},
    )
    result = minimize(negative_log_likelihood, result.x, method="L-BFGS-B", bounds=bounds)
    if not np.all(np.isfinite(result.x)):
        raise ValueError("the likelihood did not converge")
    return np.exp(result.x)


def distinct_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of equal-length `columns` (as columns), sorted as `np.unique(axis=1)` sorts
    them, and for each row its distinct row's index: `np.unique` took 1.8 s on a million customers'
    histories, a hashed group-by 0.14 s."""
    names = [str(i) for i in range(len(columns))]
    groups = (
        pl.DataFrame(dict(zip(names, columns, strict=True)))
        .with_row_index("row")
        .group_by(names)
        .agg("row")
        .sort(names)  # an order of their own: a fit sums over them
    )
    of_row = np.empty(len(columns[0]), dtype=np.int64)
    of_row[groups["row"].explode().to_numpy()] = np.repeat(
        np.arange(groups.height), groups["row"].list.len().to_numpy()
    )
    return [groups[n].to_numpy() for n in names], of_row


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> BgNbd:
    if len(x) < 10 or not (x > 0).any():
        raise NotEnoughHistory(
            f"BG/NBD needs repeat buyers among at least 10 customers; got {len(x)} customers, {(x > 0).sum()} repeaters"
        )

    # Customers with the same (x, t_x, T) add the same term: fit on the distinct triples, weighted.
    (x, t_x, T), of_customer = distinct_rows(x, t_x, T)
    weight = np.bincount(of_customer)

    def nll(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        a3 = -(r + x) * np.log(alpha + T)
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + t_x), -np.inf)
        return -float(np.sum(weight * (a1 + a2 + np.logaddexp(a3, a4))))

    return BgNbd(*map(float, _fit(nll, np.array([1.0, float(np.mean(T)), 1.0, 1.0]))))


def fit_gamma_gamma(x: np.ndarray, mean_spend: np.ndarray) -> GammaGamma:
    keep = (x > 0) & (mean_spend > 0)
    x, m = x[keep], mean_spend[keep]
    if len(x) < 10:
        raise NotEnoughHistory(f"Gamma-Gamma needs at least 10 repeat buyers with positive spend; got {len(x)}")

    def nll(log_params: np.ndarray) -> float:
        p, q, gamma = np.exp(log_params)
        ll = (
            gammaln(p * x + q)
            - gammaln(p * x)
            - gammaln(q)
            + q * np.log(gamma)
            + (p * x - 1) * np.log(m)
            + p * x * np.log(x)
            - (p * x + q) * np.log(gamma + x * m)
        )
        return -float(np.sum(ll))

    return GammaGamma(*map(float, _fit(nll, np.array([1.0, 2.0, float(np.mean(m))]))))


def fit_sample(n: int, size: int = FIT_SAMPLE) -> np.ndarray:
    """Indices, in order, of the customers the models are fitted on: a fixed random `size` of `n`."""
    return fixed_sample(n, size, FIT_SEED)


def purchase_history(orders: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """x, t_x, T (days) and mean repeat spend per customer with a purchase by `as_of`.

    Grouped in the rows' order: `data.orders` sorts by customer and date, and then the sorts below
    find their input sorted (at a million customers a third of the time of hashed groups sorted
    again). Rows in another order give the same figures, but for the last bits of the sums' rounding."""
    days = (
        orders.filter((pl.col("order_date") <= as_of) & (pl.col("net_amount") > 0))
        .group_by("customer_key", "order_date", maintain_order=True)
        .agg(value=pl.col("net_amount").sum())
        .sort("customer_key", "order_date")
    )
    return (
        days.group_by("customer_key", maintain_order=True)
        .agg(
            first=pl.col("order_date").first(),
            last=pl.col("order_date").last(),
            x=(pl.len() - 1).cast(pl.Float64),
            mean_spend=pl.col("value").slice(1).mean(),  # repeat purchases only, as Gamma-Gamma defines it
        )
        .with_columns(
            t_x=(pl.col("last") - pl.col("first")).dt.total_days().cast(pl.Float64),
            T=(pl.lit(as_of) - pl.col("first")).dt.total_days().cast(pl.Float64),
            mean_spend=pl.col("mean_spend").fill_null(0.0),
        )
        .sort("customer_key")
    )


def customer_value(
    orders: pl.DataFrame, as_of: dt.date, cfg: ValueConfig, fitted: tuple[BgNbd, GammaGamma] | None = None
) -> tuple[pl.DataFrame, BgNbd, GammaGamma]:
    """`fitted`: the two models fitted as of an earlier date, to score with instead of fitting."""
    h = purchase_history(orders, as_of)
    x, t_x, T, m = (h[c].to_numpy() for c in ("x", "t_x", "T", "mean_spend"))
    if fitted:
        bgnbd, gg = fitted
    else:
        fit = fit_sample(len(x))
        bgnbd, gg = fit_bgnbd(x[fit], t_x[fit], T[fit]), fit_gamma_gamma(x[fit], m[fit])
    spend = gg.expected_spend(x, m)
    monthly_rate = (1 + cfg.annual_discount_rate) ** (1 / 12) - 1
    # BG/NBD's expectation depends on (x, t_x, T) only, which customers share: computed once per
    # distinct history (hyp2f1 for each customer and month was most of the table's time at a million).
    distinct, of_customer = distinct_rows(x, t_x, T)
    value, previous = np.zeros(len(x)), np.zeros(len(x))
    for month in range(1, cfg.horizon_months + 1):  # discount each month's expected purchases
        cumulative = bgnbd.expected_purchases(month * DAYS_PER_MONTH, *distinct)[of_customer]
        value += (cumulative - previous) * spend / (1 + monthly_rate) ** month
        previous = cumulative
    purchases = previous
    return (
        h.select("customer_key", "x", "t_x", "T", "mean_spend")
        .rename(
            {
                "x": "repeat_purchases",
                "t_x": "days_first_to_last",
                "T": "days_since_first",
                "mean_spend": "mean_repeat_spend",
            }
        )
        .with_columns(
            p_alive=pl.Series(bgnbd.p_alive(x, t_x, T)),
            expected_purchases=pl.Series(purchases),
            expected_spend_per_purchase=pl.Series(spend),
            predicted_value=pl.Series(value),
            horizon_months=pl.lit(cfg.horizon_months),
        ),
        bgnbd,
        gg,
    )
