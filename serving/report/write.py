"""`write_report`: the insight report of the current published version, written beside the
warehouse as reports/<as_of>/report.html (and report.pdf), with reports/latest pointing at the
newest as-of date. It reads only the published version, so it never waits for a run."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from serving import publish
from serving.report.data import ReportData, gather
from serving.report.labels import LANGUAGES
from serving.report.page import PageOptions, render
from serving.report.pdf import print_pdf

LATEST = "latest"


@dataclass(frozen=True)
class ReportSpec:
    as_of: dt.date | None = None  # default: the published version's as-of date
    region: str | None = None
    lang: str = "en"
    default_lang: str = "en"  # the deployment's language: its report is report.html, others report.<lang>.html
    pdf: bool = False
    masked: bool = True
    out: Path | None = None  # a folder of the caller's choosing instead of reports/<as_of>/


@dataclass
class ReportResult:
    html: Path
    pdf: Path | None
    as_of: str
    version: int
    seconds: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0


def published_run_id(published_dir: Path, duckdb_config: dict | None = None) -> str:
    """The run that built the current published version (its checks are the report's)."""
    with contextlib.closing(publish.connect(published_dir, duckdb_config)) as con:
        return con.execute("select run_id from serving.publication").fetchall()[0][0]


def report_folder(reports_dir: Path, data: ReportData, spec: ReportSpec) -> Path:
    if spec.out:
        return spec.out
    folder = reports_dir / str(data.as_of)
    return folder / "regions" / data.region if data.region else folder


def write_report(
    published_dir: Path,
    reports_dir: Path,
    spec: ReportSpec,
    masking_key: str | None,
    checks: list[tuple[str, bool]] | None = None,
    duckdb_config: dict | None = None,
    version: publish.Readable | None = None,
) -> ReportResult:
    """Gather, render and write the report of the current version, or of `version` (another file
    holding it: the build file while it is published); the file appears whole (written aside, then renamed)."""
    if spec.lang not in LANGUAGES:
        raise ValueError(f"unknown language {spec.lang!r}; one of {list(LANGUAGES)}")
    started = time.perf_counter()
    source = version or publish.readable_current(published_dir)
    with contextlib.closing(source.connect(duckdb_config)) as con:
        data = gather(con, spec.region, spec.as_of)
    gathered = time.perf_counter()
    page = render(data, PageOptions(spec.lang, spec.masked, masking_key, checks))
    rendered = time.perf_counter()
    source.published()  # a report is written only of a version that became current
    waited = time.perf_counter()
    folder = report_folder(reports_dir, data, spec)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "report" if spec.lang == spec.default_lang else f"report.{spec.lang}"
    html = folder / f"{stem}.html"
    partial = folder / f".{stem}.html.partial"
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, html)
    pdf = print_pdf(html, folder / f"{stem}.pdf") if spec.pdf else None
    if not spec.out and not spec.region:
        publish.switch_link(reports_dir / LATEST, Path(folder.name))  # relative: the folder can move
    return ReportResult(
        html,
        pdf,
        str(data.as_of),
        data.version,
        seconds={
            "gather": round(gathered - started, 3),
            "render": round(rendered - gathered, 3),
            "publish_wait": round(waited - rendered, 3),
            "pdf": round(time.perf_counter() - waited, 3),
        },
        size_bytes=html.stat().st_size,
    )
