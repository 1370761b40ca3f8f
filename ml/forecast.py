"""Weekly sales forecasts: net revenue and orders, `horizon_weeks` ahead, for the total, each
channel, each region and the top-N products (or categories), with 80 % and 95 % intervals.

Models (statsforecast): AutoETS (no season), AutoTheta and, with two yearly cycles of history,
MSTL (the yearly season by STL, the rest by ETS), beside two baselines, seasonal naive (the same
week a year before) and naive (the last week). A history shorter than two yearly cycles has no
seasonal models: AutoTheta runs without a season, MSTL and seasonal naive are left out (the
metrics say `seasonal` 0). Seasonal AutoETS is not used: with a 52-week season it cost ten times
the other models together on 2 cores.

Net revenue also has a derived model, `OrdersxAOV`: the orders forecast of MSTL (AutoETS without
seasons) times the revenue per order of the AOV_WEEKS before the origin. Weekly revenue is orders
times a noisy basket value; forecasting the count and scaling it by a stable average spends the
models' fit on the part that has a pattern. Every measure has `Combined`: the mean of MSTL,
seasonal naive and OrdersxAOV (without seasons: AutoETS, AutoTheta and OrdersxAOV), the models it
has, and the mean of their bounds.

Backtest: rolling origins `horizon_weeks` apart over the end of the history (up to
`backtest_windows` of them, each leaving at least `min_weeks` to fit on); MASE (scaled by the
in-sample error of seasonal naive, or naive without seasons) and sMAPE per series type and model;
the interval coverage of each. Each series publishes the model with the lowest backtest MASE,
which may be a baseline.

Known events (promotions, holidays: a calendar of dates) enter as a multiplicative effect per
event day in the week, estimated per series against the weeks around each event week; the
series is divided by it before fitting and the forecasts (and their intervals) multiplied back
for the event days planned in the horizon. statsforecast's ETS and Theta take no regressors, and
its ARIMA with regressors cost minutes here.

Intervals: the winning model's own 80 % and 95 % intervals, widened (or narrowed) around the point
forecast by the factor that would have made them cover 80 % (95 %) of that series' backtest errors
(split conformal on the rolling origins). `coverage_80` is measured on each window with the factor
learnt on the other windows; `coverage_80_native`, of the model's own intervals.

Coherence: channels and regions are scaled, week by week, so that each set sums to the total's
forecast (top-down with forecast proportions, Athanasopoulos et al. 2009), intervals by the same
factor. Products are not reconciled: the top N are not the whole.

Daily runs: a series whose inputs are bit for bit those of an earlier run's fit reuses that fit
(statsforecast fits each series alone); the others are fitted again, together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pandas as pd
import polars as pl

from ml.config import ForecastConfig
from ml.run_context import NotEnoughHistory

MEASURES = ("net_revenue", "orders")
LEVELS = (80, 95)
RECONCILED = ("channel", "region")
EVENT_WINDOW_WEEKS = 3  # an event week's base: the median of the event-free weeks this close
AOV_WEEKS = 26  # revenue per order of this many weeks before the origin scales the orders forecast
DERIVED = "OrdersxAOV"
COMBINED = "Combined"


@dataclass
class ForecastResult:
    forecasts: pl.DataFrame
    backtest: pl.DataFrame  # per series, model and window week: actual, forecast, interval
    metrics: dict[str, float]
    seasonal: bool
    windows: int
    event_effects: dict[str, float]  # per series: the multiplicative effect of one event day
    fits: dict[str, SeriesFit]  # per series (unique_id): the models' raw rows, to reuse while its weeks are unchanged


@dataclass(frozen=True)
class SeriesFit:
    """What statsforecast made of one series: each series is fitted on its own, so equal inputs
    give equal rows."""

    inputs: str  # digest of the series' weeks and of everything else the models were given
    backtest: pd.DataFrame  # its cross-validation rows
    ahead: pd.DataFrame  # its forecast rows


def _weeks(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(weeks=k) for k in range((last - first).days // 7 + 1)]


def series(cells: pl.DataFrame, products: pl.DataFrame, cfg: ForecastConfig) -> pl.DataFrame:
    """Long frame: series_type, series_key, measure, week_start, y; every week present (0 without sales)."""
    if cells.is_empty():
        raise NotEnoughHistory("no complete week of orders to forecast from")
    weeks = pl.DataFrame({"week_start": _weeks(cells["week_start"].min(), cells["week_start"].max())})  # type: ignore[arg-type]
    last_year = weeks["week_start"].max() - dt.timedelta(weeks=52)  # type: ignore[operator]
    top = (
        products.filter(pl.col("week_start") > last_year)
        .group_by("product")
        .agg(pl.col("net_revenue").sum())
        .sort(["net_revenue", "product"], descending=[True, False])
        .head(cfg.top_n)["product"]
    )
    parts = [
        cells.group_by("week_start")
        .agg(pl.col(*MEASURES).sum())
        .with_columns(series_type=pl.lit("total"), series_key=pl.lit("total")),
        cells.group_by("week_start", series_key="channel")
        .agg(pl.col(*MEASURES).sum())
        .with_columns(series_type=pl.lit("channel")),
        cells.group_by("week_start", series_key="region")
        .agg(pl.col(*MEASURES).sum())
        .with_columns(series_type=pl.lit("region")),
        products.filter(pl.col("product").is_in(top.implode()))
        .rename({"product": "series_key"})
        .with_columns(series_type=pl.lit(cfg.product_level)),
    ]
    columns = ["series_type", "series_key", "week_start", *MEASURES]
    wide = pl.concat([p.select(columns).with_columns(pl.col(m).cast(pl.Float64) for m in MEASURES) for p in parts])
    grid = wide.select("series_type", "series_key").unique().join(weeks, how="cross")
    full = grid.join(wide, on=["series_type", "series_key", "week_start"], how="left").fill_null(0.0)
    return full.unpivot(
        index=["series_type", "series_key", "week_start"], on=list(MEASURES), variable_name="measure", value_name="y"
    ).sort("series_type", "series_key", "measure", "week_start")


def event_days_per_week(weeks: list[dt.date], events: set[dt.date]) -> np.ndarray:
    return np.array([sum(w + dt.timedelta(days=d) in events for d in range(7)) for w in weeks], dtype=float)


def event_effect(y: np.ndarray, days: np.ndarray) -> float:
    """The multiplicative effect of one event day: the median over event weeks of (week / base - 1) / days,
    base = the median of the event-free weeks within EVENT_WINDOW_WEEKS. 0 with fewer than two event weeks."""
    ratios = []
    for t in np.flatnonzero(days > 0):
        lo, hi = max(0, int(t) - EVENT_WINDOW_WEEKS), min(len(y), int(t) + EVENT_WINDOW_WEEKS + 1)
        near = [y[k] for k in range(lo, hi) if days[k] == 0]
        base = float(np.median(near)) if near else 0.0
        if base > 0:
            ratios.append((y[t] / base - 1) / days[t])
    return float(max(np.median(ratios), -0.9)) if len(ratios) >= 2 else 0.0


def _models(seasonal: bool, season_length: int) -> list:
    from statsforecast.models import MSTL, AutoETS, AutoTheta, Naive, SeasonalNaive

    models = [
        AutoETS(season_length=1, alias="AutoETS"),
        AutoTheta(season_length=season_length if seasonal else 1, alias="AutoTheta"),
        Naive(alias="Naive"),
    ]
    if seasonal:  # the yearly season by STL, its remainder and trend by a non-seasonal ETS
        models.append(SeasonalNaive(season_length=season_length, alias="SeasonalNaive"))
        models.append(MSTL(season_length=season_length, trend_forecaster=AutoETS(model="ZZN"), alias="MSTL"))
    return models


def _model_names(seasonal: bool) -> list[str]:
    return ["AutoETS", "AutoTheta", "Naive", *(["SeasonalNaive", "MSTL"] if seasonal else []), DERIVED, COMBINED]


def _combined_members(seasonal: bool) -> list[str]:
    return ["MSTL", "SeasonalNaive", DERIVED] if seasonal else ["AutoETS", "AutoTheta", DERIVED]


def with_derived(frame: pl.DataFrame, history: pd.DataFrame, seasonal: bool) -> pl.DataFrame:
    """`frame` with the derived models: OrdersxAOV, then COMBINED, the mean of `_combined_members`
    where they have a forecast (OrdersxAOV only on net revenue), bounds likewise. An equal-weight
    combination errs less than its members when their errors differ (the M4 competition's lesson);
    on the two-year sample the seasonal models alone each lost to seasonal naive on some seeds."""
    frame = with_orders_times_aov(frame, history, seasonal)
    members = _combined_members(seasonal)
    bounds = ["", *(f"-{b}-{lv}" for lv in LEVELS for b in ("lo", "hi"))]
    return frame.with_columns(
        pl.mean_horizontal(f"{m}{bound}" for m in members).alias(f"{COMBINED}{bound}") for bound in bounds
    )


def with_orders_times_aov(frame: pl.DataFrame, history: pd.DataFrame, seasonal: bool) -> pl.DataFrame:
    """`frame` (statsforecast's output: unique_id, ds, [cutoff], a column per model and bound) with
    DERIVED columns on the net revenue series: the paired orders series' base model times the revenue
    per order of the AOV_WEEKS up to the origin (`cutoff`, else the last week of history)."""
    base = "MSTL" if seasonal else "AutoETS"
    columns = [base, *(f"{base}-{b}-{lv}" for lv in LEVELS for b in ("lo", "hi"))]
    raw = pl.from_pandas(history[["unique_id", "ds", "y_raw"]]).with_columns(
        pl.col("ds").cast(frame["ds"].dtype),
        measure=pl.col("unique_id").str.split("|").list.first(),
        series=pl.col("unique_id").str.splitn("|", 2).struct.field("field_1"),
    )
    origins = frame["cutoff"].unique() if "cutoff" in frame.columns else pl.Series([raw["ds"].max()])
    aov = pl.concat(
        [
            raw.filter(pl.col("ds").is_between(origin - dt.timedelta(weeks=AOV_WEEKS), origin, closed="right"))
            .group_by("series")
            .agg(
                aov=pl.col("y_raw").filter(pl.col("measure") == "net_revenue").sum()
                / pl.col("y_raw").filter(pl.col("measure") == "orders").sum(),
            )
            .with_columns(origin=pl.lit(origin).cast(frame["ds"].dtype))
            for origin in origins
        ]
    )
    keyed = frame.with_columns(
        measure=pl.col("unique_id").str.split("|").list.first(),
        series=pl.col("unique_id").str.splitn("|", 2).struct.field("field_1"),
        origin=(pl.col("cutoff") if "cutoff" in frame.columns else pl.lit(origins[0])).cast(frame["ds"].dtype),
    )
    orders = (
        keyed.filter(pl.col("measure") == "orders")
        .join(aov, on=["series", "origin"])
        .select(
            "series",
            "ds",
            "origin",
            **{c.replace(base, DERIVED, 1): pl.col(c) * pl.col("aov").fill_nan(None) for c in columns},
        )
    )
    return keyed.join(
        orders.with_columns(measure=pl.lit("net_revenue")), on=["measure", "series", "ds", "origin"], how="left"
    ).drop("measure", "series", "origin")


@dataclass
class _Series:
    """The series ready to fit: event-adjusted history, and what the backtest and forecast need."""

    history: pd.DataFrame  # unique_id, ds, y (event-adjusted up to the first backtest origin), y_raw
    ids: list[tuple[str, str, str, str]]  # unique_id, series_type, series_key, measure
    effects: dict[str, float]  # per series, the event effect learnt on the whole history
    scales: dict[str, float]  # per series, MASE's scale
    days_past: np.ndarray
    days_future: np.ndarray
    future: list[dt.date]
    windows: int
    seasonal: bool


def _prepare(long: pl.DataFrame, events: set[dt.date], cfg: ForecastConfig) -> _Series:
    weeks = sorted(set(long["week_start"].to_list()))
    n, h = len(weeks), cfg.horizon_weeks
    if n < cfg.min_weeks + h:
        raise NotEnoughHistory(f"sales forecasts need {cfg.min_weeks + h} complete weeks of orders; there are {n}")
    seasonal = n >= 2 * cfg.season_length
    min_train = max(cfg.min_weeks, cfg.season_length + 1 if seasonal else 0)
    windows = min(cfg.backtest_windows, (n - min_train) // h)
    lag = cfg.season_length if seasonal else 1
    future = [weeks[-1] + dt.timedelta(weeks=k) for k in range(1, h + 1)]
    days_past = event_days_per_week(weeks, events)
    first_origin = n - windows * h
    ids, frames, effects, scales = [], [], {}, {}
    for (series_type, key, measure), part in long.group_by("series_type", "series_key", "measure", maintain_order=True):
        uid = f"{measure}|{series_type}|{key}"
        y = part["y"].to_numpy()
        effect = event_effect(y[:first_origin], days_past[:first_origin])  # the backtest learns from its past only
        effects[uid] = event_effect(y, days_past)
        diffs = np.abs(y[lag:first_origin] - y[: first_origin - lag])
        scales[uid] = float(diffs.mean()) if len(diffs) and diffs.mean() > 0 else np.nan
        frames.append(
            pd.DataFrame(
                {
                    "unique_id": uid,
                    "ds": pd.to_datetime(weeks),
                    "y": y / (1 + effect * days_past),
                    "y_raw": y,
                    "effect": effect,
                }
            )
        )
        ids.append((uid, str(series_type), str(key), str(measure)))
    history = pd.concat(frames, ignore_index=True)
    return _Series(
        history, ids, effects, scales, days_past, event_days_per_week(future, events), future, windows, seasonal
    )


def forecast_sales(
    cells: pl.DataFrame,
    products: pl.DataFrame,
    events: set[dt.date],
    cfg: ForecastConfig,
    earlier: ForecastResult | None = None,
) -> ForecastResult:
    """`earlier`: a forecast of an earlier run, whose series fits are reused where a series' inputs
    are unchanged (the weeks are complete weeks: most series stay the same within a week)."""
    s = _prepare(series(cells, products, cfg), events, cfg)
    adjusted = s.history.copy()
    adjusted["y"] = adjusted["y_raw"] / (1 + adjusted["unique_id"].map(s.effects) * np.tile(s.days_past, len(s.ids)))
    fits = _fitted(s, adjusted, cfg, earlier.fits if earlier else {})
    order = sorted(fits)  # statsforecast's own order of series
    weeks = sorted(set(s.history["ds"].dt.date))
    cv = with_derived(
        pl.from_pandas(pd.concat([fits[u].backtest for u in order], ignore_index=True)), s.history, s.seasonal
    )
    backtest = _backtest(cv, s.history, s.days_past, weeks, s.seasonal)
    table, per_series = _scores(backtest, s.scales, s.seasonal, s.ids)
    ahead = with_derived(
        pl.from_pandas(pd.concat([fits[u].ahead for u in order], ignore_index=True)), s.history, s.seasonal
    )
    forecasts = _published(
        ahead, s.ids, per_series, _widening(backtest), s.effects, s.days_future, s.future, s.seasonal
    )
    reused = sum(1 for u in order if earlier and earlier.fits.get(u) is fits[u])
    metrics = {
        **table,
        "seasonal": float(s.seasonal),
        "backtest_windows": float(s.windows),
        "weeks_of_history": float(len(weeks)),
        "series": float(len(order)),
        "series_reused": float(reused),
    }
    return ForecastResult(_reconcile(forecasts), backtest, metrics, s.seasonal, s.windows, s.effects, fits)


def _fitted(
    s: _Series, adjusted: pd.DataFrame, cfg: ForecastConfig, earlier: dict[str, SeriesFit]
) -> dict[str, SeriesFit]:
    """Every series' fit: an earlier one where the series' inputs are unchanged, else fitted now
    (one cross-validation and one forecast over all the series that changed)."""
    from statsforecast import StatsForecast

    h, levels = cfg.horizon_weeks, list(LEVELS)
    given = repr((s.windows, s.seasonal, h, levels, cfg.season_length, metadata.version("statsforecast")))
    inputs: dict[str, str] = {}
    for uid, part in s.history.groupby("unique_id", sort=False):
        digest = hashlib.sha256(given.encode())
        for values in (part["ds"], part["y"], adjusted.loc[part.index, "y"]):
            digest.update(values.to_numpy().tobytes())  # every bit: an equal digest must mean equal inputs
        inputs[uid] = digest.hexdigest()
    fits = {uid: earlier[uid] for uid, digest in inputs.items() if uid in earlier and earlier[uid].inputs == digest}
    changed = [uid for uid in inputs if uid not in fits]
    if changed:
        sf = StatsForecast(models=_models(s.seasonal, cfg.season_length), freq="W-MON", n_jobs=1)
        history = s.history[s.history["unique_id"].isin(changed)]
        cv = sf.cross_validation(
            df=history[["unique_id", "ds", "y"]], h=h, n_windows=s.windows, step_size=h, level=levels
        )
        ahead = sf.forecast(df=adjusted.loc[history.index, ["unique_id", "ds", "y"]], h=h, level=levels)
        for uid in changed:
            fits[uid] = SeriesFit(
                inputs[uid],
                cv[cv["unique_id"] == uid].reset_index(drop=True),
                ahead[ahead["unique_id"] == uid].reset_index(drop=True),
            )
    return fits


def _backtest(
    cv: pl.DataFrame, history: pd.DataFrame, days: np.ndarray, weeks: list[dt.date], seasonal: bool
) -> pl.DataFrame:
    """The cross-validation's forecasts multiplied back by each week's event effect, beside the raw actuals."""
    week_days = pl.DataFrame({"week_start": weeks, "event_days": days})
    raw = pl.from_pandas(history[["unique_id", "ds", "y_raw", "effect"]]).with_columns(
        week_start=pl.col("ds").dt.date()
    )
    cv = (
        cv.with_columns(week_start=pl.col("ds").dt.date())
        .join(raw.drop("ds"), on=["unique_id", "week_start"])
        .join(week_days, on="week_start")
    )
    factor = 1 + pl.col("effect") * pl.col("event_days")
    rows = []
    for name in _model_names(seasonal):
        rows.append(
            cv.select(
                "unique_id",
                "week_start",
                cutoff=pl.col("cutoff").dt.date(),
                model=pl.lit(name),
                actual=pl.col("y_raw"),
                forecast=pl.col(name) * factor,
                **{f"{b}_{lv}": pl.col(f"{name}-{b}-{lv}") * factor for lv in LEVELS for b in ("lo", "hi")},
            )
        )
    return (
        pl.concat(rows)
        .drop_nulls("forecast")
        .with_columns(
            (
                (pl.col("actual") - pl.col("forecast")).abs()
                / ((pl.col(f"hi_{lv}") - pl.col(f"lo_{lv}")) / 2).clip(lower_bound=1e-9)
            ).alias(f"ratio_{lv}")
            for lv in LEVELS
        )
    )


def _widening(rows: pl.DataFrame) -> pl.DataFrame:
    """Per series and model, the factor on the model's interval half-widths that would have covered
    80 % (95 %) of these backtest errors: the empirical quantile of |error| / half-width."""
    return rows.group_by("unique_id", "model").agg(
        pl.col(f"ratio_{lv}").quantile(lv / 100, interpolation="higher").alias(f"widen_{lv}") for lv in LEVELS
    )


def _calibrated_coverage(backtest: pl.DataFrame) -> pl.DataFrame:
    """Each backtest week, covered or not by its interval widened with the factor learnt on the other
    windows (on all of them when there is one window: then the coverage is in-sample)."""
    cutoffs = backtest["cutoff"].unique().to_list()
    parts = []
    for cutoff in cutoffs:
        others = backtest.filter(pl.col("cutoff") != cutoff) if len(cutoffs) > 1 else backtest
        parts.append(
            backtest.filter(pl.col("cutoff") == cutoff)
            .join(_widening(others), on=["unique_id", "model"])
            .with_columns(covered=pl.col("ratio_80") <= pl.col("widen_80"))
        )
    return pl.concat(parts)


def _scores(
    backtest: pl.DataFrame, scales: dict[str, float], seasonal: bool, ids: list[tuple[str, str, str, str]]
) -> tuple[dict[str, float], pl.DataFrame]:
    """Metrics per measure, series type and model; and each series' MASE per model."""
    kinds = pl.DataFrame(ids, schema=["unique_id", "series_type", "series_key", "measure"], orient="row")
    errors = (
        _calibrated_coverage(backtest)
        .join(kinds, on="unique_id")
        .with_columns(
            abs_error=(pl.col("actual") - pl.col("forecast")).abs(),
            smape=pl.when((pl.col("actual").abs() + pl.col("forecast").abs()) > 0)
            .then(
                2 * (pl.col("actual") - pl.col("forecast")).abs() / (pl.col("actual").abs() + pl.col("forecast").abs())
            )
            .otherwise(0.0),
            native=(pl.col("actual") >= pl.col("lo_80")) & (pl.col("actual") <= pl.col("hi_80")),
        )
    )
    per_series = (
        errors.group_by("unique_id", "series_type", "measure", "model")
        .agg(pl.col("abs_error").mean(), pl.col("smape").mean(), pl.col("covered").mean(), pl.col("native").mean())
        .with_columns(mase=pl.col("abs_error") / pl.col("unique_id").replace_strict(scales, return_dtype=pl.Float64))
    )
    by_type = per_series.group_by("measure", "series_type", "model").agg(
        pl.col("mase").drop_nans().mean(), pl.col("smape").mean(), pl.col("covered").mean(), pl.col("native").mean()
    )
    baseline = "SeasonalNaive" if seasonal else "Naive"
    reference = by_type.filter(pl.col("model") == baseline).select("measure", "series_type", baseline_mase="mase")
    by_type = by_type.join(reference, on=["measure", "series_type"]).with_columns(
        relative=pl.col("mase") / pl.col("baseline_mase")
    )
    metrics: dict[str, float] = {}
    for r in by_type.iter_rows(named=True):
        prefix = f"{r['measure']}/{r['series_type']}/{r['model']}"
        metrics |= {f"{prefix}/mase": r["mase"], f"{prefix}/smape": r["smape"], f"{prefix}/coverage_80": r["covered"]}
        metrics[f"{prefix}/coverage_80_native"] = r["native"]
        metrics[f"{prefix}/mase_vs_{baseline.lower()}"] = r["relative"]
    return {k: float(v) for k, v in metrics.items() if v is not None}, per_series


def _published(
    ahead: pl.DataFrame,
    ids: list[tuple[str, str, str, str]],
    per_series: pl.DataFrame,
    widening: pl.DataFrame,
    effects: dict[str, float],
    days_future: np.ndarray,
    future: list[dt.date],
    seasonal: bool,
) -> pl.DataFrame:
    """Each series' forecast by the model that won its backtest (lowest MASE; ties to the simpler),
    its intervals widened (or narrowed) by that model's backtest factor around the point forecast."""
    order = {name: i for i, name in enumerate(reversed(_model_names(seasonal)))}  # baselines first on ties
    winners = {
        uid: min(rows.iter_rows(named=True), key=lambda r: (np.nan_to_num(r["mase"], nan=np.inf), order[r["model"]]))[
            "model"
        ]
        for (uid,), rows in per_series.group_by("unique_id")
    }
    factor = pl.DataFrame({"week_start": future, "event_days": days_future})
    out = []
    suffix = "" if seasonal else " (no season: under two years of history)"
    for uid, series_type, key, measure in ids:
        name = winners.get(uid, "Naive")
        rows = (
            ahead.filter(pl.col("unique_id") == uid)
            .with_columns(week_start=pl.col("ds").dt.date())
            .join(factor, on="week_start")
        )
        scale = 1 + effects[uid] * pl.col("event_days")
        widen = widening.filter((pl.col("unique_id") == uid) & (pl.col("model") == name)).row(0, named=True)
        point = pl.col(name) * scale
        out.append(
            rows.select(
                series_type=pl.lit(series_type),
                series_key=pl.lit(key),
                measure=pl.lit(measure),
                week_start="week_start",
                forecast=point,
                **{
                    f"{b}_{lv}": point + (pl.col(f"{name}-{b}-{lv}") * scale - point) * widen[f"widen_{lv}"]
                    for lv in LEVELS
                    for b in ("lo", "hi")
                },
                model=pl.lit(name + suffix),
            )
        )
    bounds = ["forecast", "lo_80", "hi_80", "lo_95", "hi_95"]
    return pl.concat(out).with_columns(pl.col(c).clip(lower_bound=0.0) for c in bounds)


def _reconcile(forecasts: pl.DataFrame) -> pl.DataFrame:
    """Scale channels and regions, per measure and week, to sum to the total's forecast."""
    total = forecasts.filter(pl.col("series_type") == "total").select("measure", "week_start", total="forecast")
    sums = (
        forecasts.filter(pl.col("series_type").is_in(RECONCILED))
        .group_by("series_type", "measure", "week_start")
        .agg(parts=pl.col("forecast").sum())
    )
    factor = (
        sums.join(total, on=["measure", "week_start"])
        .with_columns(factor=pl.when(pl.col("parts") > 0).then(pl.col("total") / pl.col("parts")).otherwise(1.0))
        .select("series_type", "measure", "week_start", "factor")
    )
    bounds = ["forecast", "lo_80", "hi_80", "lo_95", "hi_95"]
    return (
        forecasts.join(factor, on=["series_type", "measure", "week_start"], how="left")
        .with_columns(pl.col(c) * pl.col("factor").fill_null(1.0) for c in bounds)
        .with_columns(reconciled=pl.col("factor").is_not_null())
        .drop("factor")
    )
