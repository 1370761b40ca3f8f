"""The `crm` command line. Heavy imports (dagster, great-expectations) happen inside commands, so
`crm --help` answers at once."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.settings import DEFAULT_SAMPLE_OUT, SAMPLE_DAYS, SAMPLE_START, Settings, hand_to_processes

app = typer.Typer(
    help="crm-warehouse: multi-channel CRM extracts into a tested DuckDB warehouse, through Dagster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
SOURCES_OPTION = typer.Option(help="Sources file (default: $CRM_SOURCES or the generated sample's).")
WAREHOUSE_OPTION = typer.Option(
    help="Build warehouse file; published versions and exports sit beside it (default: $CRM_WAREHOUSE or warehouse/crm.duckdb)."
)


def _date(value: str | None, flag: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=flag) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def _fail(error: BaseException | str) -> None:
    console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=1, help="Number of true persons.")] = 10_000,
    days: Annotated[int, typer.Option(min=1, help="Days of activity.")] = SAMPLE_DAYS,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 42,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = SAMPLE_START.isoformat(),
    out: Annotated[
        Path, typer.Option(help="Output folder: extracts/ and truth/ are written in it.")
    ] = DEFAULT_SAMPLE_OUT,
) -> None:
    """Write realistic sample extracts of every channel, with planted structure, mess and ground truth."""
    from ingestion.generator import GeneratorConfig, sources_file_for
    from ingestion.generator import generate as run_generator

    try:
        cfg = GeneratorConfig(
            out=out.resolve(), customers=customers, days=days, seed=seed, start=_date(start, "--start")
        )
        with _progress() as progress:
            task = progress.add_task("Generating days", total=days)
            summary = run_generator(cfg, on_day=lambda d: progress.update(task, completed=d + 1))
    except (OSError, ValueError) as e:
        _fail(e)
    sources = sources_file_for(cfg.extracts, cfg.out / "sources.yml", cfg.start)
    console.print(
        f"Wrote {summary['files']:,} files ({summary['bytes'] / 2**20:,.0f} MiB) to {cfg.extracts}; "
        f"ground truth in {cfg.truth}; run them with `crm run --sources {sources}`"
    )


@app.command()
def run(
    sources: Annotated[Path | None, SOURCES_OPTION] = None,
    warehouse: Annotated[
        Path | None, typer.Option(help="DuckDB warehouse file (default: $CRM_WAREHOUSE or warehouse/crm.duckdb).")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Load nothing after this date (default: the latest event date in the data)."),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option("--from", help="First partition to (re)load (default: the sources file's start_date)."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Last partition to (re)load (default: --as-of, else today).")
    ] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild dbt's incremental models from scratch.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Dagster's step logs.")] = False,
    engine: Annotated[
        str | None,
        typer.Option(help="Where dbt builds: duckdb or spark (default: $CRM_ENGINE or duckdb; docs/spark.md)."),
    ] = None,
) -> None:
    """Materialize every asset through Dagster (in-process) for a range of daily partitions."""
    from ingestion.sources import SourcesError
    from orchestration.run import RunFailed, run_pipeline

    try:
        settings = Settings.load(sources, warehouse, engine=engine)
    except ValueError as e:
        _fail(str(e))
    log = None if verbose else _run_log(settings)
    try:
        # dbt prints every line to stdout (in this process; dagster-dbt echoes Spark's): without -v
        # they go to the run's log file.
        with (
            _progress() as progress,
            log.open("w") if log else contextlib.nullcontext(sys.stdout) as out,
            contextlib.redirect_stdout(out),
        ):
            task = progress.add_task("Materializing assets", total=None)
            summary = run_pipeline(
                settings,
                as_of=_date(as_of, "--as-of"),
                start=_date(from_, "--from"),
                end=_date(to, "--to") or _date(as_of, "--as-of"),
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                log_level="INFO" if verbose else "CRITICAL",
                full_refresh=full_refresh,
            )
    except (SourcesError, RunFailed, ValueError, OSError) as e:
        _fail(f"{e}" + (f" (dbt's output: {log})" if log and log.stat().st_size else ""))
    finally:
        if log and log.exists() and not log.stat().st_size:
            log.unlink()  # the run stopped before dbt
    as_of = f", as of {summary.as_of}" if summary.as_of else ""
    table = Table(title=f"Run {summary.run_id[:8]}: partitions {summary.start}..{summary.end}{as_of}")
    for col in ("asset", "rows", "quarantined", "dupes", "superseded", "checks"):
        table.add_column(col, justify="left" if col == "asset" else "right", no_wrap=True)
    for asset, meta in summary.materialized.items():
        checks = [ok for name, ok in summary.checks.items() if name.startswith(asset + ":")]
        rows = meta.get("rows_loaded", meta.get("dagster/row_count", "not built" if meta.get("built") is False else ""))
        table.add_row(
            asset,
            f"{rows}",
            f"{meta.get('rows_quarantined', '')}",
            f"{meta.get('duplicates_skipped', '')}",
            f"{meta.get('rows_superseded', '')}",
            f"{sum(checks)}/{len(checks)} passed" if checks else "",
        )
    Console(width=max(120, Console().width)).print(table)
    for note in summary.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    identity = summary.materialized.get("marts/customer_identity_map", {})
    if "identity/identifiers_guarded" in identity:
        console.print(
            f"identity: {identity['identity/customers']:,} customers; "
            f"{identity['identity/identifiers_guarded']:,} contact values guarded as shared "
            "(intermediate.int_identifier_quality); largest customer "
            f"{identity['identity/largest_customer_records']:,} records",
            highlight=False,
            soft_wrap=True,
        )
    if log and log.exists():
        console.print(f"dbt's output: {log}", highlight=False, soft_wrap=True)


RUN_LOGS_KEPT = 10


def _run_log(settings: Settings) -> Path:
    """A new log file for this run's dbt output in logs/ beside the warehouse; the newest few are kept."""
    folder = settings.warehouse.parent / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob("crm-run-*.log"))[: -(RUN_LOGS_KEPT - 1)]:
        old.unlink(missing_ok=True)
    return folder / f"crm-run-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{os.getpid()}.log"


@app.command()
def dev() -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on this deployment's Dagster instance."""
    hand_to_processes(Settings.load())  # the instance's dagster.yaml and Dagster's switches, as `crm run` has them
    os.execv(sys.executable, [sys.executable, "-m", "dagster", "dev", "-m", "orchestration.definitions"])


@app.command()
def contracts(
    write: Annotated[
        Path | None, typer.Option(help="Write the Markdown reference to this file instead of printing it.")
    ] = None,
) -> None:
    """Print (or write) the source contracts of every channel as Markdown."""
    from ingestion.contracts import contracts_markdown

    text = contracts_markdown()
    if write:
        write.write_text(text + "\n")
    else:
        print(text)


def _manifest() -> Path:
    """The dbt manifest, where personal and identifier columns are tagged (parsed if stale)."""
    from orchestration.dbt_assets import dbt_project, prepare_manifest

    prepare_manifest()
    return dbt_project().manifest_path


def _personal_columns() -> dict[str, set[str]]:
    from serving.masking import personal_columns

    return personal_columns(_manifest())


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="SQL to run; leave out for an interactive shell.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Run the SQL in this file (e.g. warehouse/queries/*.sql).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
    warehouse: Annotated[Path | None, WAREHOUSE_OPTION] = None,
) -> None:
    """Query the published warehouse read-only (never the file a run is writing)."""
    import duckdb

    from serving import publish
    from serving.query import render, shell

    env = Settings.load(warehouse=warehouse)
    if file:
        query = file.read_text()
    try:
        con = publish.connect(env.published_dir)
    except (publish.NothingPublished, duckdb.Error) as e:
        _fail(e)
    with con:
        if query is None:
            version = con.execute("SELECT version, as_of_date FROM serving.publication").fetchall()[0]
            console.print(
                f"published version {version[0]} (as of {version[1]}), read-only; end statements with ;  .quit leaves"
            )
            shell(con, input, print, fmt)
            return
        try:
            print(render(con, query, fmt))
        except (duckdb.Error, ValueError) as e:
            _fail(e)


@app.command()
def export(
    region: Annotated[
        str | None, typer.Option(help="Only this region's customers and their rows (exports_region/<R>/).")
    ] = None,
    unmasked: Annotated[
        bool, typer.Option("--unmasked", help="Export personal data in clear (logged in the audit log).")
    ] = False,
    rewrite: Annotated[
        bool,
        typer.Option(
            "--rewrite",
            help="Write every file again, with current customer keys (customer_key_changes, row_changes then empty).",
        ),
    ] = False,
    warehouse: Annotated[Path | None, WAREHOUSE_OPTION] = None,
) -> None:
    """Export every mart and ML table of the published version as Parquet for BI tools."""
    from serving.export import ExportSpec

    _write_export(ExportSpec(region=region, masked=not unmasked), warehouse, reuse=not rewrite)


@app.command()
def audience(
    segment: Annotated[str | None, typer.Option(help="RFM segment, e.g. Champions (see ml.rfm_segments).")] = None,
    trigger: Annotated[
        str | None,
        typer.Option(help="Instead of a segment: browse_abandonment or cart_abandonment (follow-ups due now)."),
    ] = None,
    within: Annotated[
        int | None, typer.Option(help="The trigger's window: no order within this many hours (default 24).")
    ] = None,
    channel: Annotated[str, typer.Option(help="email, sms or phone.")] = "email",
    region: Annotated[str | None, typer.Option(help="Only this region's customers.")] = None,
    unmasked: Annotated[
        bool, typer.Option("--unmasked", help="Contact points in clear, for the campaign tool (logged).")
    ] = False,
    warehouse: Annotated[Path | None, WAREHOUSE_OPTION] = None,
) -> None:
    """Export a marketing audience: a segment's customers, or those a follow-up is due for, whose
    consent as of the as-of date allows contact on the channel."""
    from ml.config import TriggerConfig
    from serving.export import ExportSpec

    if (segment is None) == (trigger is None):
        _fail("give one of --segment or --trigger")
    if within is not None and (trigger is None or within <= 0):
        _fail("--within takes a positive number of hours, with --trigger")
    spec = ExportSpec(
        kind="audience",
        segment=segment,
        channel=channel,
        region=region,
        masked=not unmasked,
        trigger=trigger,
        within_hours=within or (TriggerConfig().within_hours if trigger else None),
    )
    _write_export(spec, warehouse)


def _audit_unmasked(env: Settings, event: str, warning: str, spec: dict) -> None:
    """Say it, and write who asked for personal data in clear, and what, to the audit log."""
    import getpass

    from serving.erasure import write_audit

    console.print(f"[yellow]warning:[/yellow] {warning}; recorded in the audit log")
    spec = {k: v if isinstance(v, str | int | bool | None) else str(v) for k, v in spec.items()}
    write_audit(
        env.governance_dir,
        {"event": event, "at": dt.datetime.now(dt.UTC).isoformat(), "by": getpass.getuser(), "spec": spec},
    )


def _write_export(spec, warehouse: Path | None, reuse: bool = True) -> None:

    import duckdb

    from serving.export import write_export
    from serving.identifier_leaks import IdentifierLeak, identifier_columns
    from serving.publish import NothingPublished

    env = Settings.load(warehouse=warehouse)
    if not spec.masked:
        _audit_unmasked(env, "unmasked_export", "exporting personal data unmasked", vars(spec))
    try:
        done = write_export(
            env.published_dir,
            env.warehouse.parent,
            spec,
            _personal_columns(),
            env.masking_key(),
            env.duckdb_config,
            identifier_columns(_manifest()),
            reuse,
        )
    except (NothingPublished, ValueError, FileExistsError, duckdb.Error, IdentifierLeak) as e:
        _fail(e)
    tables = done.manifest["tables"]
    console.print(
        f"exported {len(tables)} table(s), {sum(t['rows'] for t in tables.values()):,} rows, of published version "
        f"{done.manifest['version']} to {done.path} ({'masked' if spec.masked else 'UNMASKED'})"
    )


@app.command()
def report(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Report as of this date (default: the published version's).")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Only this region's customers and their facts.")] = None,
    lang: Annotated[
        str | None, typer.Option(help="en or zh (default: the sources file's report.lang, else en).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write into this folder instead of reports/<as_of>/.")] = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="Also print report.pdf with headless Chromium.")] = False,
    unmasked: Annotated[
        bool, typer.Option("--unmasked", help="Names of at-risk customers in clear (logged in the audit log).")
    ] = False,
    sources: Annotated[Path | None, SOURCES_OPTION] = None,
    warehouse: Annotated[Path | None, WAREHOUSE_OPTION] = None,
) -> None:
    """Write the insight report (self-contained HTML, optionally PDF) of the published warehouse."""

    import duckdb

    from ingestion.sources import SourcesError, load_sources
    from orchestration.serving_assets import checks_of_run
    from serving.publish import NothingPublished
    from serving.report.pdf import BrowserMissing
    from serving.report.write import ReportSpec, published_run_id, write_report

    env = Settings.load(sources, warehouse)
    try:
        default = load_sources(env.sources_file).report_lang if env.sources_file.exists() else "en"
        spec = ReportSpec(_date(as_of, "--as-of"), region, lang or default, default, pdf, not unmasked, out)
        if unmasked:
            _audit_unmasked(env, "unmasked_report", "at-risk customers' names in clear", vars(spec))
        hand_to_processes(env)  # the Dagster instance that holds the publishing run's checks
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            checks = checks_of_run(instance, published_run_id(env.published_dir))
        done = write_report(env.published_dir, env.reports_dir, spec, env.masking_key(), checks)
    except (NothingPublished, ValueError, SourcesError, BrowserMissing, RuntimeError, duckdb.Error) as e:
        _fail(e)
    console.print(
        f"report of published version {done.version} as of {done.as_of}: {done.html}"
        + (f" and {done.pdf}" if done.pdf else "")
        + f" ({done.size_bytes / 2**20:.1f} MiB, {sum(done.seconds.values()):.1f} s)",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def simulate(
    target: Annotated[
        str,
        typer.Option(
            help="Who: key=value joined by 'and'; keys segment (RFM), churn_band, stage (lifecycle), kmeans, "
            'region, clv (LOW..HIGH), e.g. "segment=At Risk and clv=200..".'
        ),
    ],
    offer_cost: Annotated[float, typer.Option("--offer-cost", help="Cost of the offer per customer contacted.")],
    margin: Annotated[float, typer.Option(help="Share of revenue kept as profit (0 to 1].")],
    response_lift: Annotated[
        float | None,
        typer.Option("--response-lift", help="Assumed relative lift of the conversion rate, e.g. 0.2 for +20 %."),
    ] = None,
    response_from: Annotated[
        str | None,
        typer.Option(
            "--response-from",
            help="CAMPAIGN or CAMPAIGN:ARM: use the conversion difference measured on this randomized campaign.",
        ),
    ] = None,
    horizon: Annotated[int, typer.Option(help="Days the offer has to convert (a repurchase horizon: 30 or 90).")] = 30,
    channel: Annotated[str, typer.Option(help="email, sms or phone: whose consent counts.")] = "email",
    region: Annotated[str | None, typer.Option(help="Only this region's customers.")] = None,
    warehouse: Annotated[Path | None, WAREHOUSE_OPTION] = None,
) -> None:
    """What-if of a promotion before launch: audience, incremental conversions, revenue, profit and ROI
    with an interval, revenue at risk, and the holdout needed to measure it (a model-based scenario)."""
    import duckdb

    from serving import publish
    from serving.simulate import Scenario, ScenarioError, simulate, store

    env = Settings.load(warehouse=warehouse)
    scenario = Scenario(target, offer_cost, margin, response_lift, response_from, horizon, channel, region)
    try:
        with publish.connect(env.published_dir) as con:
            result = simulate(con, scenario)
        with duckdb.connect(str(env.warehouse)) as build:
            store(build, scenario, result)
    except duckdb.IOException as e:
        _fail(f"the scenario was computed but not stored: the warehouse is being written (a run holds it): {e}")
    except (ScenarioError, publish.NothingPublished, duckdb.Error) as e:
        _fail(e)
    roi = f"{result.roi:.2f}" if result.roi is not None else "n/a (no cost)"
    console.print(
        f"scenario {result.scenario_id} as of {result.as_of_date} (response: {result.response_source}"
        f"{f', {response_lift:+.0%} assumed' if response_lift is not None else ''}):\n"
        f"  audience {result.audience:,} customers consenting to {channel}; baseline conversions "
        f"{result.baseline_conversions:,.1f} in {horizon} days\n"
        f"  incremental conversions {result.incremental_conversions:,.1f}; revenue {result.incremental_revenue:,.0f} "
        f"(95 % {result.incremental_revenue_lo:,.0f} to {result.incremental_revenue_hi:,.0f})\n"
        f"  cost {result.cost:,.0f}; profit {result.profit:,.0f} (95 % {result.profit_lo:,.0f} to "
        f"{result.profit_hi:,.0f}); ROI {roi}\n"
        f"  revenue at risk from churn in the audience {result.revenue_at_risk:,.0f}; a holdout of "
        f"{result.holdout_needed:,} customers measures the lift at 80 % power\n"
        f"  stored in ml.promotion_scenarios",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def forget(
    email: Annotated[str | None, typer.Option(help="The person's email.")] = None,
    phone: Annotated[str | None, typer.Option(help="The person's phone, any format.")] = None,
    customer_key: Annotated[str | None, typer.Option("--customer-key", help="The person's customer key.")] = None,
    by: Annotated[str | None, typer.Option(help="Who asks (for the audit log; default: the login name).")] = None,
    sources: Annotated[Path | None, SOURCES_OPTION] = None,
    warehouse: Annotated[Path | None, WAREHOUSE_OPTION] = None,
) -> None:
    """Erase one person everywhere (raw to exports), keep them out of re-loads, and audit it."""
    import getpass

    from ingestion.sources import SourcesError, load_sources
    from serving.erasure import ErasureRequest, PersonNotFound
    from serving.erasure import forget as erase_person

    env = Settings.load(sources, warehouse)
    try:
        request = ErasureRequest(email, phone, customer_key, by or getpass.getuser())
        request.identifier()
        done = erase_person(
            request,
            env.warehouse,
            env.published_dir,
            env.governance_dir,
            load_sources(env.sources_file).sources,
            env.masking_key(),
            _personal_columns(),
            env.duckdb_config,
        )
    except (PersonNotFound, ValueError, RuntimeError, SourcesError) as e:
        _fail(e)
    console.print(
        f"erasure {done.erasure_id}: {len(done.customer_keys)} customer(s), "
        f"{sum(done.removed.values()):,} rows removed from {len(done.removed)} tables, "
        f"{done.suppressed:,} row hashes on the suppression list; published version {done.published_version}, "
        f"{len(done.versions_deleted)} older version(s) deleted, {len(done.exports_rewritten)} export(s) rewritten, "
        f"{len(done.reports_deleted)} report(s) naming them deleted"
    )


if __name__ == "__main__":
    app()
