"""The `crm` command line. Heavy imports (dagster, great-expectations) happen inside commands, so
`crm --help` answers at once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration import environment

app = typer.Typer(
    help="crm-warehouse: multi-channel CRM extracts into a tested DuckDB warehouse, through Dagster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _date(value: Optional[str], flag: str) -> Optional[dt.date]:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=flag) from None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)


def _fail(error: BaseException) -> None:
    console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=1, help="Number of true persons.")] = 10_000,
    days: Annotated[int, typer.Option(min=1, help="Days of activity.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 42,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = "2025-01-01",
    out: Annotated[Path, typer.Option(help="Output folder: extracts/ and truth/ are written in it.")] = environment.DEFAULT_SAMPLE_OUT,
) -> None:
    """Write realistic sample extracts of all five channels, with planted structure, mess and ground truth."""
    from ingestion.generator import GeneratorConfig, generate as run_generator

    try:
        cfg = GeneratorConfig(out=out.resolve(), customers=customers, days=days, seed=seed, start=_date(start, "--start"))
        with _progress() as progress:
            task = progress.add_task("Generating days", total=days)
            summary = run_generator(cfg, on_day=lambda d: progress.update(task, completed=d + 1))
    except (OSError, ValueError) as e:
        _fail(e)
    console.print(
        f"Wrote {summary['files']:,} files ({summary['bytes'] / 2**20:,.0f} MiB) to {cfg.extracts}; "
        f"ground truth in {cfg.truth}"
    )


@app.command()
def run(
    sources: Annotated[Optional[Path], typer.Option(help="Sources file (default: $CRM_SOURCES or the generated sample's).")] = None,
    warehouse: Annotated[Optional[Path], typer.Option(help="DuckDB warehouse file (default: $CRM_WAREHOUSE or warehouse/crm.duckdb).")] = None,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="Load nothing after this date (default: the latest event date in the data).")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="First partition to (re)load (default: the sources file's start_date).")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Last partition to (re)load (default: --as-of, else today).")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild dbt's incremental models from scratch.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Dagster's step logs.")] = False,
) -> None:
    """Materialize every asset through Dagster (in-process) for a range of daily partitions."""
    from ingestion.sources import SourcesError
    from orchestration.run import RunFailed, run_pipeline

    try:
        with _progress() as progress:
            task = progress.add_task("Materializing assets", total=None)
            summary = run_pipeline(
                sources, warehouse, as_of=_date(as_of, "--as-of"), start=_date(from_, "--from"),
                end=_date(to, "--to") or _date(as_of, "--as-of"),
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                log_level="INFO" if verbose else "CRITICAL", full_refresh=full_refresh,
            )
    except (SourcesError, RunFailed, ValueError, OSError) as e:
        _fail(e)
    as_of = f", as of {summary.as_of}" if summary.as_of else ""
    table = Table(title=f"Run {summary.run_id[:8]}: partitions {summary.start}..{summary.end}{as_of}")
    for col in ("asset", "rows", "quarantined", "dupes", "superseded", "checks"):
        table.add_column(col, justify="left" if col == "asset" else "right", no_wrap=True)
    for asset, meta in summary.materialized.items():
        checks = [ok for name, ok in summary.checks.items() if name.startswith(asset + ":")]
        rows = meta.get("rows_loaded", meta.get("dagster/row_count", ""))
        table.add_row(asset, f"{rows}", f"{meta.get('rows_quarantined', '')}", f"{meta.get('duplicates_skipped', '')}",
                      f"{meta.get('rows_superseded', '')}", f"{sum(checks)}/{len(checks)} passed" if checks else "")
    Console(width=max(120, Console().width)).print(table)


@app.command()
def contracts(
    write: Annotated[Optional[Path], typer.Option(help="Write the Markdown reference to this file instead of printing it.")] = None,
) -> None:
    """Print (or write) the source contracts of every channel as Markdown."""
    from ingestion.contracts import contracts_markdown

    text = contracts_markdown()
    if write:
        write.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    app()
