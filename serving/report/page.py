"""The report as one self-contained HTML page: plotly.js inlined once, each figure's JSON in a
<script type="application/json"> beside its <div>, tables whose cells carry their exact values
(data-value), a print stylesheet. Nothing on the page asks the network for anything."""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs

from serving.masking import keyed_hash
from serving.report.charts import CHARTS, FONT
from serving.report.data import KPI_ORDER, WEB_STEPS, ReportData
from serving.report.labels import TEXT, text, value_label

SECTIONS = [
    "kpis",
    "sales",
    "rfm",
    "cohorts",
    "churn",
    "value",
    "segments",
    "rules",
    "outlook",
    "campaigns",
    "web",
    "service",
    "quality",
]
SHARES = {"revenue_share", "retention", "quarantine_rate", "repeat_purchase_rate", "churn_probability", "mean_p_alive"}
SHARES = SHARES | {"conversion_rate", "control_conversion_rate"}
MONEY = {"revenue", "predicted_value", "mean_predicted_value", "mean_monetary", "average_order_value"}
MONEY = MONEY | {"predicted_12m_value", "forecast", "lo_80", "hi_80", "lo_95", "hi_95"}
MONEY = MONEY | {"revenue_difference", "revenue_difference_lo", "revenue_difference_hi", "incremental_profit"}
MONEY = MONEY | {"naive_difference_not_causal"}

CSS = f"""
body {{ font-family: {FONT}; margin: 0 auto; max-width: 1180px; padding: 24px; color: #1f2933; }}
header h1 {{ margin: 0 0 4px; }} header p {{ margin: 2px 0; color: #52606d; }}
section {{ border-top: 1px solid #d9e2ec; padding: 12px 0 20px; }}
.read {{ color: #334e68; }} details {{ color: #52606d; font-size: 0.9em; margin-bottom: 8px; }}
.kpis {{ display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 12px 0; }}
.kpi {{ background: #f0f4f8; border-radius: 6px; padding: 10px 12px; }}
.kpi .name {{ font-size: 0.85em; color: #52606d; }} .kpi .value {{ font-size: 1.5em; font-weight: 600; }}
.kpi .change {{ font-size: 0.8em; }} .up {{ color: #2f8132; }} .down {{ color: #c62828; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 8px; }}
.chart {{ min-height: 160px; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 8px 0; }}
th, td {{ border-bottom: 1px solid #e4e7eb; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.note {{ font-size: 0.85em; color: #7b8794; }}
@media print {{
  body {{ max-width: none; padding: 0; }}
  section {{ break-inside: avoid-page; }}
  .charts {{ grid-template-columns: 1fr 1fr; }}
  details {{ display: block; }} details > * {{ display: block; }}
}}
@page {{ size: A4; margin: 12mm; }}
"""

RENDER = """
document.querySelectorAll('div.chart').forEach(function (el) {
  var fig = JSON.parse(document.getElementById(el.dataset.figure).textContent);
  Plotly.newPlot(el, fig.data, fig.layout, {displayModeBar: false, responsive: true});
});
window.reportRendered = true;
"""


@dataclass(frozen=True)
class PageOptions:
    lang: str = "en"
    masked: bool = True
    masking_key: str | None = None  # needed when masked
    checks: list[tuple[str, bool]] | None = None  # (check, passed) of the run that built the version


def _format(column: str, value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()[:7] if column in {"month", "cohort"} else value.isoformat()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if column in SHARES:
            return f"{value:.1%}"
        if column in MONEY:
            return f"{value:,.0f}"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _heading(lang: str, column: str) -> str:
    """A column's label; a pivoted table's columns are values (segments), shown in the report's language."""
    return text(lang, f"col.{column}") if f"col.{column}" in TEXT[lang] else value_label(lang, column)


def _table(frame: pl.DataFrame, lang: str, name: str, translate: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    head = "".join(f"<th>{html.escape(_heading(lang, c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows(named=True):
        cells = []
        for column, value in row.items():
            shown = value_label(lang, value) if column in translate else _format(column, value)
            raw = "" if value is None else value.isoformat() if isinstance(value, dt.date) else value
            cells.append(f'<td data-column="{column}" data-value="{html.escape(str(raw))}">{html.escape(shown)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table data-table="{name}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _figure_html(name: str, fig: go.Figure) -> str:
    payload = pio.to_json(fig, validate=False, pretty=False).replace("</", "<\\/")
    return (
        f'<div class="chart" id="chart-{name}" data-figure="figure-{name}"></div>'
        f'<script type="application/json" id="figure-{name}">{payload}</script>'
    )


def _kpi_cards(data: ReportData, lang: str) -> str:
    cards = []
    for name in KPI_ORDER:
        now, before = data.kpis[name]["value"], data.kpis[name]["previous"]
        if now is not None and before:
            change = (now - before) / abs(before)
            arrow = "▲" if change >= 0 else "▼"
            note = f'<span class="{"up" if change >= 0 else "down"}">{arrow} {change:+.1%}</span> {text(lang, "vs_previous")}'
        else:
            note = text(lang, "no_previous")
        cards.append(
            f'<div class="kpi" data-kpi="{name}" data-value="{"" if now is None else now}">'
            f'<div class="name">{html.escape(text(lang, f"kpi.{name}"))}</div>'
            f'<div class="value">{html.escape(_format(name, now))}</div><div class="change">{note}</div></div>'
        )
    return f'<div class="kpis">{"".join(cards)}</div>'


def _at_risk(frame: pl.DataFrame, options: PageOptions) -> pl.DataFrame:
    if not options.masked:
        return frame.rename({"full_name": "name"})
    if not options.masking_key:
        raise ValueError("a masked report needs the deployment's masking key")
    key = options.masking_key
    return (
        frame.with_columns(
            pl.col("full_name").map_elements(lambda v: keyed_hash(key, v)[:12], return_dtype=pl.String).alias("name")
        )
        .drop("full_name")
        .select(frame.columns[0], "name", *frame.columns[2:])
    )


def _tables(section: str, data: ReportData, options: PageOptions) -> list[str]:
    lang, frames = options.lang, data.frames
    if section == "rfm" and "rfm_segments" in frames:
        moves = frames["rfm_transitions"]
        grid = (
            _table(
                moves.pivot(on="segment", index="previous_segment", values="customers", sort_columns=True).sort(
                    "previous_segment"
                ),
                lang,
                "rfm_transitions",
                {"previous_segment"},
            )
            if not moves.is_empty()
            else f'<p class="note">{text(lang, "rfm.no_moves")}</p>'
        )
        return [_table(frames["rfm_segments"], lang, "rfm_segments", {"segment"}), grid]
    if section == "churn" and "churn_metrics" in frames:
        risky = _at_risk(frames["at_risk"], options).rename({"customer_key": "customer"})
        note = text(lang, "masked" if options.masked else "unmasked")
        return [
            _table(frames["churn_metrics"], lang, "churn_metrics"),
            _table(risky, lang, "at_risk", {"segment"}),
            f'<p class="note">{html.escape(note)}</p>',
        ]
    if section == "value" and "value_by_segment" in frames:
        return [_table(frames["value_by_segment"], lang, "value_by_segment", {"segment"})]
    if section == "segments" and "segment_profiles" in frames:
        return [_table(frames["segment_profiles"], lang, "segment_profiles")]
    if section == "rules" and "rules" in frames:
        return [_table(frames["rules"].drop("basket", "item"), lang, "rules")]
    if section == "outlook" and "repurchase_metrics" in frames:
        return [_table(frames["repurchase_metrics"], lang, "repurchase_metrics")]
    if section == "campaigns" and "campaign_results" in frames and not frames["campaign_results"].is_empty():
        return [_table(frames["campaign_results"], lang, "campaign_results", {"status"})]
    if section == "web" and not frames["web_funnel"].is_empty():
        return [_table(frames["web_funnel"].select("source", *WEB_STEPS), lang, "web_funnel")]
    if section == "quality":
        return _quality_tables(data, options)
    return []


def _quality_tables(data: ReportData, options: PageOptions) -> list[str]:
    lang, out = options.lang, []
    for name in ("loads", "quarantine", "identity"):
        if name in data.frames:
            out.append(_table(data.frames[name], lang, name))
    if options.checks is None:
        out.append(f'<p class="note">{text(lang, "checks.unknown")}</p>')
    else:
        passed = sum(ok for _, ok in options.checks)
        out.append(
            f'<p data-checks-passed="{passed}" data-checks="{len(options.checks)}">'
            f"{text(lang, 'checks.passed', passed=passed, total=len(options.checks))}</p>"
        )
        failed = pl.DataFrame({"check": [c for c, ok in options.checks if not ok]}, schema={"check": pl.String})
        if not failed.is_empty():
            out.append(_table(failed.with_columns(passed=pl.lit(text(lang, "no"))), lang, "failed_checks"))
    return out


def render(data: ReportData, options: PageOptions) -> str:
    lang = options.lang
    header = [
        f"<h1>{text(lang, 'title')}</h1>",
        f"<p>{text(lang, 'as_of')} {data.as_of} · {text(lang, 'version', version=data.version)} · "
        f"{html.escape(text(lang, 'region', region=data.region) if data.region else text(lang, 'all_regions'))}</p>",
        f"<p>{text(lang, 'data_range', first=data.first_day, last=data.last_day)}"
        + (
            f" · {text(lang, 'models_as_of', date=data.dates.ml_as_of)}"
            if data.dates.ml_as_of and data.dates.ml_as_of != data.as_of
            else ""
        )
        + "</p>",
    ]
    body = []
    for section in SECTIONS:
        figures = CHARTS[section](data, lang)
        parts = [
            f"<h2>{text(lang, f'{section}.title')}</h2>",
            f'<p class="read"><b>{text(lang, "how_to_read")}:</b> {html.escape(text(lang, f"{section}.read"))}</p>',
            f"<details open><summary>{text(lang, 'definitions')}</summary><p>"
            f"{html.escape(text(lang, f'{section}.defs'))}</p></details>",
        ]
        if section == "kpis":
            parts.append(_kpi_cards(data, lang))
        if figures:
            parts.append(f'<div class="charts">{"".join(_figure_html(n, f) for n, f in figures.items())}</div>')
        tables = _tables(section, data, options)
        if not figures and not tables and section != "kpis":
            parts.append(f'<p class="note">{text(lang, "not_available")}</p>')
        parts.extend(tables)
        body.append(f'<section id="{section}" data-section="{section}">{"".join(parts)}</section>')
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (
        f'<!DOCTYPE html><html lang="{html_lang}"><head><meta charset="utf-8">'
        f"<title>{text(lang, 'title')} {data.as_of}</title><style>{CSS}</style></head><body>"
        f"<header>{''.join(header)}</header>{''.join(body)}"
        f'<script type="text/javascript">{get_plotlyjs()}</script><script>{RENDER}</script></body></html>'
    )
