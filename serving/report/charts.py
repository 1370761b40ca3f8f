"""The report's charts as Plotly figures, drawn from the frames data.py aggregated. Each function
returns the figures of one section, keyed by a stable name (the page's element ids)."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import polars as pl

from serving.report.data import WEB_STEPS, ReportData
from serving.report.labels import text, value_label

FONT = "Noto Sans CJK SC, Noto Sans SC, Microsoft YaHei, PingFang SC, Helvetica, Arial, sans-serif"
HEIGHT = 340


def _figure(lang: str, title: str | None = None, height: int = HEIGHT) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        template="plotly_white",
        font={"family": FONT, "size": 12},
        height=height,
        margin={"l": 60, "r": 20, "t": 40 if title else 20, "b": 50},
        title={"text": title} if title else None,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _col(lang: str, name: str) -> str:
    return text(lang, f"col.{name}")


def _values(lang: str, series: pl.Series) -> list[str]:
    return [value_label(lang, v) for v in series.to_list()]


def kpi_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    daily = data.frames.get("daily_revenue")
    if daily is None or daily.is_empty():
        return {}
    fig = _figure(lang, height=160)
    fig.add_trace(go.Scatter(x=daily["day"].to_list(), y=daily["revenue"].to_list(), mode="lines", fill="tozeroy"))
    fig.update_layout(margin={"l": 50, "r": 10, "t": 10, "b": 30}, yaxis_title=_col(lang, "revenue"))
    return {"daily_revenue": fig}


def sales_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    frame = data.frames["sales_by_month"]
    out = {}
    for by in ("channel", "region"):
        totals = frame.group_by("month", by).agg(pl.col("revenue").sum(), pl.col("orders").sum()).sort("month", by)
        fig = _figure(lang, f"{_col(lang, 'revenue')} · {_col(lang, by)}")
        for key, part in totals.partition_by(by, as_dict=True, maintain_order=True).items():
            fig.add_trace(
                go.Bar(name=value_label(lang, key[0]), x=part["month"].to_list(), y=part["revenue"].to_list())
            )
        fig.update_layout(barmode="stack", yaxis_title=_col(lang, "revenue"))
        out[f"revenue_by_{by}"] = fig
    months = frame.group_by("month").agg(pl.col("orders").sum()).sort("month")
    fig = _figure(lang, _col(lang, "orders"))
    fig.add_trace(go.Scatter(x=months["month"].to_list(), y=months["orders"].to_list(), mode="lines+markers"))
    out["orders_by_month"] = fig
    products = data.frames["top_products"].reverse()
    fig = _figure(lang, text(lang, "sales.top_products"), height=380)
    fig.add_trace(go.Bar(x=products["revenue"].to_list(), y=products["name"].to_list(), orientation="h"))
    fig.update_layout(xaxis_title=_col(lang, "revenue"), margin={"l": 180})
    out["top_products"] = fig
    categories = data.frames["top_categories"]
    fig = _figure(lang, text(lang, "sales.top_categories"))
    fig.add_trace(go.Pie(labels=_values(lang, categories["name"]), values=categories["revenue"].to_list(), hole=0.4))
    out["top_categories"] = fig
    return out


def rfm_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    segments = data.frames.get("rfm_segments")
    if segments is None or segments.is_empty():
        return {}
    fig = _figure(lang, height=420)
    fig.add_trace(
        go.Treemap(
            labels=_values(lang, segments["segment"]),
            parents=[""] * segments.height,
            values=segments["customers"].to_list(),
            marker={"colors": segments["revenue_share"].to_list(), "colorscale": "Blues", "showscale": True},
            customdata=segments["revenue_share"].to_list(),
            texttemplate="%{label}<br>%{value}<br>%{customdata:.1%}",
        )
    )
    return {"rfm_treemap": fig}


def cohort_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    cells = data.frames["cohorts"]
    if cells.is_empty():
        return {}
    grid = cells.pivot(on="months_after", index="cohort", values="retention", sort_columns=True).sort("cohort")
    offsets = [c for c in grid.columns if c != "cohort"]
    fig = _figure(lang, height=420)
    fig.add_trace(
        go.Heatmap(
            z=[[None if v is None else round(v, 4) for v in row] for row in grid.select(offsets).rows()],
            x=[int(o) for o in offsets],
            y=[str(c) for c in grid["cohort"].to_list()],
            colorscale="Blues",
            zmin=0,
            zmax=1,
            texttemplate="%{z:.0%}",
        )
    )
    fig.update_layout(
        xaxis_title=_col(lang, "months_after"), yaxis_title=_col(lang, "cohort"), yaxis_autorange="reversed"
    )
    return {"cohort_retention": fig}


BANDS = ["high", "medium", "low"]
BAND_COLOURS = {"high": "#d62728", "medium": "#ff7f0e", "low": "#2ca02c"}


def churn_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    out = {}
    for by in ("segment", "region"):
        frame = data.frames.get(f"risk_by_{by}")
        if frame is None or frame.is_empty():
            continue
        fig = _figure(lang, f"{_col(lang, 'risk_band')} · {_col(lang, by)}")
        for band in BANDS:
            part = frame.filter(pl.col("risk_band") == band)
            fig.add_trace(
                go.Bar(
                    name=value_label(lang, band),
                    x=_values(lang, part["group"]),
                    y=part["customers"].to_list(),
                    marker_color=BAND_COLOURS[band],
                )
            )
        fig.update_layout(barmode="stack", yaxis_title=_col(lang, "customers"))
        out[f"risk_by_{by}"] = fig
    return out


def value_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    out = {}
    frame = data.frames.get("value_by_segment")
    if frame is not None and not frame.is_empty():
        fig = _figure(lang)
        labels = _values(lang, frame["segment"])
        fig.add_trace(
            go.Bar(name=_col(lang, "mean_predicted_value"), x=labels, y=frame["mean_predicted_value"].to_list())
        )
        fig.add_trace(
            go.Scatter(
                name=_col(lang, "mean_p_alive"), x=labels, y=frame["mean_p_alive"].to_list(), yaxis="y2", mode="markers"
            )
        )
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "range": [0, 1], "tickformat": ".0%"})
        out["value_by_segment"] = fig
    stages = data.frames.get("lifecycle")
    if stages is not None:
        fig = _figure(lang)
        fig.add_trace(go.Funnel(y=_values(lang, stages["stage"]), x=stages["customers"].to_list()))
        out["lifecycle_funnel"] = fig
    return out


def segment_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    frame = data.frames.get("segment_profiles")
    if frame is None or frame.is_empty():
        return {}
    fig = _figure(lang)
    fig.add_trace(
        go.Scatter(
            x=frame["mean_recency_days"].to_list(),
            y=frame["mean_monetary"].to_list(),
            text=frame["segment_label"].to_list(),
            mode="markers+text",
            textposition="top center",
            marker={
                "size": frame["customers"].to_list(),
                "sizemode": "area",
                "sizeref": max(frame["customers"]) / 2500,
            },
        )
    )
    fig.update_layout(xaxis_title=_col(lang, "mean_recency_days"), yaxis_title=_col(lang, "mean_monetary"))
    return {"segment_map": fig}


def rule_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    frame = data.frames.get("rules")
    if frame is None or frame.is_empty():
        return {}
    fig = _figure(lang)
    fig.add_trace(
        go.Bar(
            x=frame["lift"].to_list(),
            y=[f"{a} → {c}" for a, c in zip(frame["antecedents"], frame["consequents"], strict=True)],
            orientation="h",
        )
    )
    fig.update_layout(xaxis_title=_col(lang, "lift"), yaxis_autorange="reversed", margin={"l": 220})
    return {"rules_lift": fig}


def outlook_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    out = {}
    forecast, history = data.frames.get("forecast"), data.frames.get("weekly_revenue")
    if forecast is not None and not forecast.is_empty() and history is not None:
        fig = _figure(lang, text(lang, "outlook.forecast"), height=360)
        weeks = forecast["week_start"].to_list()
        for lo, hi, shade in (("lo_95", "hi_95", 0.15), ("lo_80", "hi_80", 0.3)):
            fig.add_trace(
                go.Scatter(
                    x=weeks + weeks[::-1],
                    y=forecast[hi].to_list() + forecast[lo].to_list()[::-1],
                    fill="toself",
                    fillcolor=f"rgba(99,110,250,{shade})",
                    line={"width": 0},
                    name=f"{lo[3:]} %",
                )
            )
        fig.add_trace(
            go.Scatter(x=history["week_start"].to_list(), y=history["revenue"].to_list(), name=_col(lang, "revenue"))
        )
        fig.add_trace(
            go.Scatter(x=weeks, y=forecast["forecast"].to_list(), name=_col(lang, "forecast"), line={"dash": "dash"})
        )
        out["sales_forecast"] = fig
    bands = data.frames.get("repurchase_bands")
    if bands is not None and not bands.is_empty():
        fig = _figure(lang, text(lang, "outlook.repurchase"))
        for band in BANDS:
            part = bands.filter(pl.col("band") == band)
            fig.add_trace(
                go.Bar(
                    name=value_label(lang, band),
                    x=[f"{d} d" for d in part["horizon_days"].to_list()],
                    y=part["customers"].to_list(),
                    marker_color=BAND_COLOURS[{"high": "low", "low": "high"}.get(band, band)],
                )
            )
        fig.update_layout(barmode="stack", yaxis_title=_col(lang, "customers"))
        out["repurchase_bands"] = fig
    return out


def campaign_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    frame = data.frames.get("campaign_results")
    measured = None if frame is None else frame.filter(pl.col("status") == "measured")
    if measured is None or measured.is_empty():
        return {}
    fig = _figure(lang, text(lang, "campaigns.effect"))
    fig.add_trace(
        go.Bar(
            x=[f"{c} · {a}" for c, a in zip(measured["campaign_id"], measured["arm"], strict=True)],
            y=measured["revenue_difference"].to_list(),
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (measured["revenue_difference_hi"] - measured["revenue_difference"]).to_list(),
                "arrayminus": (measured["revenue_difference"] - measured["revenue_difference_lo"]).to_list(),
            },
        )
    )
    fig.update_layout(yaxis_title=_col(lang, "revenue_difference"))
    return {"campaign_effects": fig}


def web_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    frame = data.frames["web_funnel"]
    if frame.is_empty():
        return {}
    fig = _figure(lang, height=400)
    steps = [_col(lang, s) for s in WEB_STEPS]
    for row in frame.iter_rows(named=True):
        fig.add_trace(go.Funnel(name=row["source"], y=steps, x=[row[s] for s in WEB_STEPS]))
    return {"web_funnel": fig}


def service_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    frame = data.frames["service_by_month"]
    if frame.is_empty():
        return {}
    out = {}
    for measure in ("interactions", "complaints", "mean_csat", "mean_sentiment"):
        fig = _figure(lang, _col(lang, measure), height=280)
        for key, part in frame.partition_by("channel", as_dict=True, maintain_order=True).items():
            if part[measure].null_count() == part.height:
                continue
            fig.add_trace(
                go.Scatter(
                    name=value_label(lang, key[0]),
                    x=part["month"].to_list(),
                    y=part[measure].to_list(),
                    mode="lines+markers",
                )
            )
        out[f"service_{measure}"] = fig
    return out


def quality_charts(data: ReportData, lang: str) -> dict[str, go.Figure]:
    loads = data.frames.get("loads")
    if loads is None or loads.is_empty():
        return {}
    fig = _figure(lang, _col(lang, "quarantine_rate"))
    fig.add_trace(go.Bar(x=loads["source"].to_list(), y=loads["quarantine_rate"].fill_null(0).to_list()))
    fig.update_layout(yaxis_tickformat=".2%")
    return {"quarantine_rate": fig}


CHARTS: dict[str, Callable[[ReportData, str], dict[str, go.Figure]]] = {
    "kpis": kpi_charts,
    "sales": sales_charts,
    "rfm": rfm_charts,
    "cohorts": cohort_charts,
    "churn": churn_charts,
    "value": value_charts,
    "segments": segment_charts,
    "rules": rule_charts,
    "outlook": outlook_charts,
    "campaigns": campaign_charts,
    "web": web_charts,
    "service": service_charts,
    "quality": quality_charts,
}
