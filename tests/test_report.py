"""The insight report: every number equals an independent query on the same published version, a
region's report holds only its customers, and the page renders in a real Chromium with no request
leaving the file, in English and Chinese, to HTML and PDF."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import polars as pl
import pytest

from serving import publish
from serving.report.labels import TEXT
from serving.report.pdf import QUIET_FLAGS, find_browser
from serving.report.write import ReportSpec, write_report
from tests.conftest import Year

KEY = "report-test-key"
MAX_HTML_BYTES = 10 * 2**20


class Page(HTMLParser):
    """The numbers a report shows: KPI cards, table cells (exact values in data-value) and figures."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.kpis: dict[str, str] = {}
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.figures: dict[str, dict] = {}
        self._table: str | None = None
        self._figure: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-kpi" in a:
            self.kpis[a["data-kpi"] or ""] = a.get("data-value") or ""
        if tag == "table":
            self._table = a.get("data-table")
            self.tables[self._table or ""] = []
        if tag == "tr" and self._table is not None:
            self.tables[self._table].append({})
        if tag == "td" and self._table is not None:
            self.tables[self._table][-1][a["data-column"] or ""] = a.get("data-value") or ""
        if tag == "script" and a.get("type") == "application/json":
            self._figure = (a.get("id") or "").removeprefix("figure-")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if tag == "script":
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._figure:
            self.figures[self._figure] = json.loads(data)

    def rows(self, table: str) -> list[dict[str, str]]:
        return [r for r in self.tables[table] if r]  # the header row has no cells


def _close(shown: str, expected: float | int | None) -> bool:
    if expected is None:
        return shown in ("", "None")
    return math.isclose(float(shown), float(expected), rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture(scope="module")
def report(year: Year, tmp_path_factory: pytest.TempPathFactory) -> tuple[Page, Path]:
    out = tmp_path_factory.mktemp("report")
    done = write_report(year.cfg.out / "published", out, ReportSpec(out=out), KEY)
    assert done.size_bytes < MAX_HTML_BYTES
    return Page(done.html.read_text()), publish.current(year.cfg.out / "published")


def test_every_run_leaves_a_report_with_a_latest_link(year: Year) -> None:
    latest = year.cfg.out / "reports" / "latest"
    with publish.connect(year.cfg.out / "published") as con:
        as_of = con.execute("select as_of_date from serving.publication").fetchall()[0][0]
    assert latest.is_symlink() and latest.resolve().name == str(as_of)
    assert (latest / "report.html").stat().st_size > 0
    assert (latest / "report.pdf").stat().st_size > 0  # Chromium is installed by set-up
    # The checks of the build run and of the ingestion run it built on: dbt's tests and the GX gates.
    import dagster as dg

    from orchestration.serving_assets import checks_of_run
    from serving.report.write import published_run_id

    with dg.DagsterInstance.get() as instance:
        checks = checks_of_run(instance, published_run_id(year.cfg.out / "published"))
    assert checks and {c.split("/")[0] for c, _ in checks} >= {"raw", "staging", "marts"}
    shown = re.search(r'data-checks-passed="(\d+)" data-checks="(\d+)"', (latest / "report.html").read_text())
    assert shown and (int(shown[1]), int(shown[2])) == (sum(ok for _, ok in checks), len(checks))


def test_kpis_equal_an_independent_computation(report: tuple[Page, Path]) -> None:
    page, version = report
    with duckdb.connect(str(version), read_only=True) as con:
        as_of = con.execute("select as_of_date from serving.publication").fetchall()[0][0]
        orders = con.sql("select * from marts.fct_orders").pl()
        current = con.sql("select customer_key, first_seen_at from marts.dim_customer where is_current").pl()
        ml_as_of = con.execute("select max(as_of_date) from ml.churn_scores").fetchall()[0][0]
        at_risk = con.execute(
            "select count(*) from ml.churn_scores where as_of_date = ? and risk_band = 'high'", [ml_as_of]
        ).fetchall()[0][0]
        value = con.execute(
            "select sum(predicted_value) from ml.customer_value where as_of_date = ?", [ml_as_of]
        ).fetchall()[0][0]
    start = as_of - dt.timedelta(days=29)
    period = orders.filter(pl.col("ordered_local_date").is_between(start, as_of))
    sold = period.filter(~pl.col("is_refund"))
    buyers = set(sold["customer_key"].drop_nulls())
    to_date = (
        orders.filter((pl.col("ordered_local_date") <= as_of) & ~pl.col("is_refund")).group_by("customer_key").len()
    )
    repeaters = set(to_date.filter(pl.col("len") >= 2)["customer_key"].drop_nulls()) & buyers
    revenue = float(period["net_amount"].cast(pl.Float64).sum())
    expected = {
        "customers": current.filter(pl.col("first_seen_at").dt.date() <= as_of).height,
        "active_customers": len(buyers),
        "revenue": revenue,
        "orders": sold.height,
        "average_order_value": revenue / sold.height,
        "repeat_purchase_rate": len(repeaters) / len(buyers),
        "customers_at_risk": at_risk,
        "predicted_12m_value": float(value),
    }
    for name, number in expected.items():
        assert _close(page.kpis[name], number), (name, page.kpis[name], number)


def test_segments_cohorts_and_rules_equal_independent_queries(report: tuple[Page, Path]) -> None:
    page, version = report
    with duckdb.connect(str(version), read_only=True) as con:
        as_of = con.execute("select as_of_date from serving.publication").fetchall()[0][0]
        ml_as_of = con.execute("select max(as_of_date) from ml.rfm_segments").fetchall()[0][0]
        segments = con.sql(f"select segment, monetary from ml.rfm_segments where as_of_date = '{ml_as_of}'").pl()
        orders = con.sql(
            "select customer_key, ordered_local_date from marts.fct_orders "
            f"where not is_refund and customer_key is not null and ordered_local_date <= '{as_of}'"
        ).pl()
        in_both = con.execute(
            "select count(*) from (select customer_key from ml.rfm_segments where as_of_date = ? intersect "
            "select customer_key from ml.rfm_segments where as_of_date = "
            "(select max(as_of_date) from ml.rfm_segments where as_of_date < ?))",
            [ml_as_of, ml_as_of],
        ).fetchall()[0][0]
        rules = con.execute(
            "select support, confidence, lift from ml.association_rules where as_of_date = ? "
            "order by lift desc, support desc limit 10",
            [ml_as_of],
        ).fetchall()

    shares = segments.group_by("segment").agg(pl.len(), pl.col("monetary").cast(pl.Float64).sum())
    total = shares["monetary"].sum()
    expected = {r["segment"]: (r["len"], r["monetary"] / total) for r in shares.iter_rows(named=True)}
    shown = {r["segment"]: (int(r["customers"]), float(r["revenue_share"])) for r in page.rows("rfm_segments")}
    assert shown.keys() == expected.keys()
    for segment, (customers, share) in expected.items():
        assert shown[segment][0] == customers and math.isclose(shown[segment][1], share, rel_tol=1e-9)
    moved = sum(int(v) for r in page.rows("rfm_transitions") for k, v in r.items() if k != "previous_segment" and v)
    assert moved == in_both > 0

    months = orders.with_columns(month=pl.col("ordered_local_date").dt.truncate("1mo")).select("customer_key", "month")
    first = months.group_by("customer_key").agg(cohort=pl.col("month").min())
    heatmap = page.figures["cohort_retention"]["data"][0]
    cohorts, offsets, z = heatmap["y"], heatmap["x"], heatmap["z"]
    checked = 0
    for i in range(0, len(cohorts), 3):
        cohort = dt.date.fromisoformat(cohorts[i])
        members = set(first.filter(pl.col("cohort") == cohort)["customer_key"])
        for j in (0, 1, 2):
            if j >= len(offsets) or z[i][j] is None:
                continue
            month = (pl.Series([cohort]).dt.offset_by(f"{offsets[j]}mo"))[0]
            active = set(months.filter(pl.col("month") == month)["customer_key"]) & members
            assert math.isclose(z[i][j], round(len(active) / len(members), 4), abs_tol=1e-4), (cohort, offsets[j])
            checked += 1
    assert checked >= 5

    shown_rules = [(float(r["support"]), float(r["confidence"]), float(r["lift"])) for r in page.rows("rules")]
    assert len(shown_rules) == len(rules)
    for got, want in zip(shown_rules, rules, strict=True):
        assert all(math.isclose(g, w, rel_tol=1e-9) for g, w in zip(got, want, strict=True))


def test_a_region_report_holds_only_that_regions_customers(year: Year, tmp_path: Path) -> None:
    version = publish.current(year.cfg.out / "published")
    with duckdb.connect(str(version), read_only=True) as con:
        region, customers = con.execute(
            "select region, count(*) from marts.dim_customer where is_current and region is not null "
            "group by region order by count(*) desc limit 1"
        ).fetchall()[0]
        others = {
            r[0]
            for r in con.execute(
                "select customer_key from marts.dim_customer where is_current and region is distinct from ?", [region]
            ).fetchall()
        }
        region_orders = con.execute(
            "select count(*) from marts.fct_orders o join marts.dim_customer c using (customer_key) "
            "where c.is_current and c.region = ? and not o.is_refund and o.ordered_local_date >= "
            "(select as_of_date - 29 from serving.publication)",
            [region],
        ).fetchall()[0][0]
    done = write_report(year.cfg.out / "published", tmp_path, ReportSpec(region=region, out=tmp_path), KEY)
    text = done.html.read_text()
    page = Page(text)
    assert int(page.kpis["orders"]) == region_orders
    assert int(page.kpis["customers"]) <= customers
    shown = {r["customer"] for r in page.rows("at_risk")}
    assert shown and not shown & others
    assert not [key for key in others if key in text]  # no other region's customer anywhere on the page
    assert {r["region"] for r in page.rows("at_risk")} == {region}


def test_the_page_renders_offline_in_chromium_and_prints_in_chinese(year: Year, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    done = write_report(year.cfg.out / "published", tmp_path, ReportSpec(lang="zh", pdf=True, out=tmp_path), KEY)
    requests, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_browser(), args=QUIET_FLAGS[1:])
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def only_files(route) -> None:  # type: ignore[no-untyped-def]
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                requests.append(route.request.url)
                route.abort()

        page.route("**/*", only_files)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(done.html.resolve().as_uri())
        page.wait_for_function("window.reportRendered === true", timeout=30_000)
        drawn = page.eval_on_selector_all(
            "section",
            "sections => sections.map(s => [s.id, s.querySelectorAll("
            "'div.chart svg.main-svg g.trace, div.chart svg.main-svg g.hm, div.chart svg.main-svg g.slice').length])",
        )
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert requests == [] and errors == []
    assert [section for section, marks in drawn if marks == 0] == []
    assert (tmp_path / "report.png").stat().st_size > 0
    words = subprocess.run(["pdftotext", str(done.pdf), "-"], capture_output=True, text=True, check=True).stdout
    for key in ("title", "rfm.title", "cohorts.title", "quality.title"):
        assert TEXT["zh"][key] in words, key


def test_both_languages_say_every_thing() -> None:
    assert set(TEXT["en"]) == set(TEXT["zh"])


def test_erasure_deletes_the_reports_that_name_the_person(year: Year, tmp_path: Path) -> None:
    from serving.erasure import delete_reports_naming

    reports = tmp_path / "reports"
    named = write_report(year.cfg.out / "published", reports, ReportSpec(masked=False, pdf=True), KEY)
    person = Page(named.html.read_text()).rows("at_risk")[0]["customer"]
    kept = reports / "2000-01-01" / "report.html"
    kept.parent.mkdir(parents=True)
    kept.write_text("<html>a report that names nobody</html>")
    assert delete_reports_naming(reports, [person]) == [str(named.html)]
    assert not named.html.exists() and named.pdf is not None and not named.pdf.exists()
    assert kept.exists()


def test_the_campaigns_section_shows_each_arm_as_ml_campaign_results_has_it(report: tuple[Page, Path]) -> None:
    page, version = report
    with duckdb.connect(str(version), read_only=True) as con:
        ml_as_of = con.execute("select max(as_of_date) from ml.campaign_results").fetchall()[0][0]
        results = con.sql(
            "select arm, status, revenue_difference, revenue_difference_lo, revenue_difference_hi, "
            "naive_difference_not_causal from ml.campaign_results where as_of_date = ? order by campaign_id, arm",
            params=[ml_as_of],
        ).pl()
    shown = page.rows("campaign_results")
    assert [r["arm"] for r in shown] == results["arm"].to_list()
    for got, want in zip(shown, results.iter_rows(named=True), strict=True):
        assert got["status"] == want["status"]
        for column in (
            "revenue_difference",
            "revenue_difference_lo",
            "revenue_difference_hi",
            "naive_difference_not_causal",
        ):
            assert _close(got[column], want[column]), (want["arm"], column)
    measured = results.filter(pl.col("status") == "measured")
    bars = page.figures["campaign_effects"]["data"][0]
    assert bars["y"] == pytest.approx(measured["revenue_difference"].to_list())
