"""Benchmark: the whole pipeline at a named scale, stage by stage, and what one more day costs.

Generates the sample at scale S (10,000 customers), M (100,000) or L (1,000,000) over a year plus
the days after it, then runs `crm run` through Dagster as of the year's last day (the full build)
and, at M and L (or with --one-more-day), once for each of the next days in turn (the incremental
runs, --more-days of them); one more day costs the median of their times. Stage times come
from Dagster's step events; peak memory is the RSS and the PSS of this process and every child
(dbt, Chromium), sampled by a separate process (bench/rss.py).
Side by side, on the same data in the same run: our dbt layer against its SQL floor (bench/floor.py),
our association rules against mlxtend `fpgrowth` (in a subprocess with a memory cap and a time
limit: it may stop), and our ingestion + RFM against plain pandas. Prints a table, the ratios and
the latest figures of every scale, and writes the figures as JSON to bench/results/.

    make bench [SCALE=S|M|L]    (= python3 -m uv run python bench/pipeline.py --scale S)
    python3 -m uv run python bench/pipeline.py --scale L --no-peers    (the pipeline alone)
    python3 -m uv run python bench/pipeline.py --scale S --one-more-day    (S with its incremental run)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import floor_vs_built  # noqa: E402
from bench.rss import TreeRSS  # noqa: E402

SCALES = {"S": 10_000, "M": 100_000, "L": 1_000_000}
MLXTEND_MEMORY = 12 * 2**30  # address space; mlxtend's one-hot frame is dense: cap it rather than swap the machine
MLXTEND_SECONDS = 600
PEER_MEMORY, PEER_SECONDS = 16 * 2**30, 1200  # the pandas peer's address space and time
# Daily runs timed after the full build: the machine's speed drifts within minutes, and one run is
# one draw of it (docs/benchmark.md, "How to run it").
MORE_DAYS = 3
DAY_STAGE = "one more day (incremental crm run)"  # the median of the daily runs


@dataclass
class Stage:
    name: str
    seconds: float
    rows: int
    peak_rss_mib: float
    peak_pss_mib: float  # shared pages divided among their processes (bench/rss.py)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def step_windows(run_ids: list[str]) -> dict[str, tuple[float, float]]:
    """Step key -> (start, end) wall-clock seconds, from the runs' Dagster events."""
    import dagster as dg

    windows: dict[str, list[float]] = {}
    with dg.DagsterInstance.get() as instance:
        for run_id in run_ids:
            for record in instance.get_records_for_run(
                run_id,
                of_type={
                    dg.DagsterEventType.STEP_START,
                    dg.DagsterEventType.STEP_SUCCESS,
                    dg.DagsterEventType.STEP_FAILURE,
                },
            ).records:
                entry = record.event_log_entry
                windows.setdefault(entry.step_key, []).append(entry.timestamp)
    return {k: (min(v), max(v)) for k, v in windows.items()}


def build_steps() -> list[str]:
    """The steps between ingestion and ML on either engine: the dbt steps and the identity assets,
    with the lake and the copy into DuckDB on Spark (orchestration/dbt_assets.py, identity_assets.py)."""
    from orchestration.dbt_assets import STEPS
    from orchestration.identity_assets import identity_ops

    return ["lake_raw", *STEPS, *identity_ops("duckdb"), *identity_ops("spark"), "spark_tables_copied"]


def pipeline_stages(summary, windows: dict[str, tuple[float, float]], rss: TreeRSS) -> list[Stage]:
    """Group the steps into stages: ingestion, dbt, each ML table, the serving step and its parts."""
    groups: dict[str, list[str]] = {
        "ingestion": [k for k in windows if k.startswith("raw__")],
        "dbt build": build_steps(),
        "ML tables (one step)": ["ml_tables"],
        "publish, export and report (one step, side by side)": ["serving"],
    }
    meta = summary.materialized
    published = meta.get("serving/published_warehouse", {}).get("row_counts", {}) or {}
    rows = {
        "ingestion": sum(m.get("rows_read", 0) for k, m in meta.items() if "rows_read" in m),
        "dbt build": sum(v for k, v in published.items() if k.startswith("marts.")),
        "publish, export and report (one step, side by side)": sum(published.values()),
    }
    # Steps of several assets: each asset's own time (with the reads it was first to need) from its metadata.
    parts = {
        "ml_tables": {f"ml {k[3:]}": m for k, m in meta.items() if k.startswith("ml/") and "seconds" in m},
        "serving": {
            name: meta[key]
            for name, key in (
                ("publish (its copy beside the export and the report)", "serving/published_warehouse"),
                ("export", "serving/bi_exports"),
                ("insight report (HTML + PDF)", "serving/insight_report"),
            )
            if "seconds" in meta.get(key, {})
        },
    }
    stages = []
    for name, keys in groups.items():
        spans = [windows[k] for k in keys if k in windows]
        if not spans:
            continue
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        peak = rss.peaks_mib(start, end)
        assets = parts.get(keys[0], {}) if len(keys) == 1 else {}
        total_rows = rows.get(name, sum(m.get("dagster/row_count", 0) for m in assets.values()))
        stages.append(Stage(name, end - start, int(total_rows or 0), *peak))
        stages += [Stage(n, m["seconds"], m.get("dagster/row_count", 0), *peak) for n, m in assets.items()]
    return stages


def dbt_profile(run_ids: list[str], top: int = 6) -> dict:
    """What the runs' dbt build spent its time on, from its run_results.json: dbt's own elapsed time,
    the models' and tests' execution time summed over dbt's threads, and the slowest nodes."""
    from orchestration.dbt_assets import invocation_targets

    found = [
        t / "run_results.json" for r in run_ids for t in invocation_targets(r) if (t / "run_results.json").exists()
    ]
    if not found:
        return {}
    steps = [json.loads(f.read_text()) for f in found]
    nodes = [
        (r["unique_id"].split(".")[0], r["unique_id"].split(".", 2)[-1], r["execution_time"])
        for results in steps
        for r in results["results"]
    ]
    return {
        "dbt_elapsed_seconds": sum(results["elapsed_time"] for results in steps),
        "models_seconds": sum(t for kind, _, t in nodes if kind == "model"),
        "tests_seconds": sum(t for kind, _, t in nodes if kind != "model"),
        "slowest": [
            {"node": f"{kind.replace('_', ' ')} {name}", "seconds": t}
            for kind, name, t in sorted(nodes, key=lambda n: -n[2])[:top]
        ],
    }


def timed(name: str, rss: TreeRSS, fn, rows=lambda result: 0) -> tuple[object, Stage]:
    start = time.time()
    result = fn()
    end = time.time()
    return result, Stage(name, end - start, rows(result), *rss.peaks_mib(start, end))


def pandas_rfm(extracts: Path, as_of: dt.date) -> pd.DataFrame:
    """The peer: plain pandas reads the store, web and registry extracts as a user would (bad lines
    skipped, a file it cannot parse lost, the registry decoded as GBK, Excel sheets read through
    polars, duplicates dropped, store loyalty cards looked up in the registry) and scores RFM by
    registry id. No quarantine, lineage, checks or identity resolution beyond the card lookup."""

    def csvs(folder: Path, encoding: str = "utf-8") -> pd.DataFrame:
        frames = []
        for p in sorted(folder.rglob("*.csv")):
            try:  # a file pandas cannot parse (a quote left open) is lost, as in a plain script
                frames.append(
                    pd.read_csv(p, dtype=str, on_bad_lines="skip", encoding=encoding, encoding_errors="replace")
                )
            except pd.errors.ParserError:
                continue
        return pd.concat(frames, ignore_index=True)

    def workbooks(folder: Path) -> list[pd.DataFrame]:
        return [pl.read_excel(p).cast(pl.String).to_pandas() for p in sorted(folder.rglob("*.xlsx"))]

    cards = csvs(extracts / "customers", "gbk").dropna(subset=["card_no"]).drop_duplicates("card_no", keep="last")
    store = pd.concat([csvs(extracts / "store"), *workbooks(extracts / "store")], ignore_index=True)
    store = store.drop_duplicates(["receipt_no", "line_no"], keep="last")
    store = store.merge(cards[["card_no", "member_id"]], left_on="member_card", right_on="card_no", how="inner")
    store["amount"] = pd.to_numeric(store["qty"], errors="coerce") * pd.to_numeric(store["unit_price"], errors="coerce")
    store["day"] = pd.to_datetime(store["sold_at"], errors="coerce", format="mixed", utc=True).dt.date
    web = pd.DataFrame(_json_lines(sorted((extracts / "web").glob("*.jsonl")))).astype({"qty": str, "price": str})
    web = (
        web[web["type"] == "purchase"].drop_duplicates("event_id", keep="last").rename(columns={"user_id": "member_id"})
    )
    web["amount"] = pd.to_numeric(web["qty"], errors="coerce") * pd.to_numeric(web["price"], errors="coerce")
    web["day"] = pd.to_datetime(web["ts"], errors="coerce", format="mixed", utc=True).dt.date
    columns = ["member_id", "order", "day", "amount"]
    lines = pd.concat(
        [store.rename(columns={"receipt_no": "order"})[columns], web.rename(columns={"order_id": "order"})[columns]]
    )
    lines = lines.dropna(subset=["member_id", "day"])
    lines = lines[lines["day"] <= as_of]
    rfm = lines.groupby("member_id").agg(
        last=("day", "max"), frequency=("order", "nunique"), monetary=("amount", "sum")
    )
    rfm["recency_days"] = [(as_of - d).days for d in rfm["last"]]
    for col, ascending in (("recency_days", False), ("frequency", True), ("monetary", True)):
        rfm[col[0] + "_score"] = pd.qcut(rfm[col].rank(method="first", ascending=ascending), 5, labels=False) + 1
    return rfm


def run_capped(code: str, memory: int, seconds: int) -> tuple[str | None, str | None]:
    """Run Python `code` in a subprocess with its address space and time capped, as a peer may run
    out of either: (stdout, None), or (None, where it stopped)."""
    capped = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n{code}"
    try:
        done = subprocess.run([sys.executable, "-c", capped], capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return None, f"no result within {seconds} s"
    if done.returncode != 0:
        return None, f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return done.stdout, None


def pandas_peer(extracts: Path, as_of: dt.date) -> dict:
    """`pandas_rfm` in a capped subprocess: pandas holds every extract in memory at once (10 GiB
    at M), and at L it may stop; the report says where."""
    out, stopped = run_capped(
        f"import sys, json, datetime as dt; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path\n"
        f"from bench.pipeline import pandas_rfm\n"
        f"print(json.dumps({{'customers': len(pandas_rfm(Path({str(extracts)!r}), dt.date.fromisoformat({as_of.isoformat()!r})))}}))",
        PEER_MEMORY,
        PEER_SECONDS,
    )
    return {"stopped": stopped} if stopped else json.loads(out.strip().splitlines()[-1])


def _json_lines(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # broken lines skipped, as a plain script would
                continue
    return records


def mlxtend_vs_ours(warehouse: Path, min_support: float) -> dict:
    """Baskets of the marts' order lines, mined by us in-process and by mlxtend in a capped
    subprocess; every itemset's support and every rule's confidence and lift compared."""

    from ml.baskets import association_rules, encode, frequent_itemsets

    with duckdb.connect(str(warehouse), read_only=True) as con:
        lines = con.sql(
            "SELECT DISTINCT order_key AS basket, sku AS item FROM marts.fct_order_lines "
            "WHERE NOT is_return AND sku IS NOT NULL"
        ).pl()
    start = time.perf_counter()  # both sides timed from the same (basket, item) rows to the rules
    baskets, items, names, n = encode(lines)
    itemsets = frequent_itemsets(baskets, items, names, n, min_support)
    rules = association_rules(itemsets, 0.0)
    ours_s = time.perf_counter() - start
    out = {
        "baskets": n,
        "items": len(names),
        "min_support": min_support,
        "ours_seconds": ours_s,
        "ours_itemsets": len(itemsets.sets),
        "ours_rules": rules.height,
    }
    ours = {
        "itemsets": {tuple(sorted(names[i] for i in s)): c / n for s, c in zip(itemsets.sets, itemsets.counts)},
        "rules": {
            (tuple(sorted(r["antecedents"])), tuple(sorted(r["consequents"]))): (r["confidence"], r["lift"])
            for r in rules.iter_rows(named=True)
        },
    }
    path, result = warehouse.parent / "baskets.parquet", warehouse.parent / "mlxtend.json"
    lines.write_parquet(path)
    code = f"""
import json, time, pandas as pd, polars as pl
from mlxtend.frequent_patterns import association_rules, fpgrowth
from mlxtend.preprocessing import TransactionEncoder
lines = pl.read_parquet({str(path)!r})
start = time.perf_counter()
transactions = lines.group_by('basket').agg('item').get_column('item').to_list()
encoder = TransactionEncoder()  # mlxtend's own one-hot encoder (dense bool), as its docs do it
onehot = pd.DataFrame(encoder.fit(transactions).transform(transactions), columns=encoder.columns_)
sets = fpgrowth(onehot, min_support={min_support}, use_colnames=True)
rules = association_rules(sets, num_itemsets=len(onehot), metric='confidence', min_threshold=0.0)
seconds = time.perf_counter() - start
with open({str(result)!r}, 'w') as f:
    # VmHWM starts afresh at exec; ru_maxrss would carry the forking parent's peak over.
    peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024
    json.dump({{'seconds': seconds, 'peak_rss_mib': peak,
               'itemsets': [[sorted(s), v] for s, v in zip(sets['itemsets'], sets['support'])],
               'rules': [[sorted(a), sorted(c), f, l] for a, c, f, l in zip(rules['antecedents'], rules['consequents'],
                                                                         rules['confidence'], rules['lift'])]}}, f)
"""
    try:
        _, stopped = run_capped(code, MLXTEND_MEMORY, MLXTEND_SECONDS)
        if stopped:
            out["mlxtend_stopped"] = stopped
        else:
            theirs = json.loads(result.read_text())
            out.update(
                {
                    "mlxtend_seconds": theirs["seconds"],
                    "mlxtend_peak_rss_mib": theirs["peak_rss_mib"],
                    "mlxtend_itemsets": len(theirs["itemsets"]),
                    "mlxtend_rules": len(theirs["rules"]),
                }
            )
            out["equal"] = _same_rules(ours, theirs)
            out["ratio"] = theirs["seconds"] / ours_s
    finally:
        path.unlink(missing_ok=True)
        result.unlink(missing_ok=True)
    return out


def _same_rules(ours: dict, theirs: dict, rel: float = 1e-9) -> bool:
    """Same itemsets with the same support, same rules with the same confidence and lift."""

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)

    sets = {tuple(s): v for s, v in theirs["itemsets"]}
    rules = {(tuple(a), tuple(c)): (f, lift) for a, c, f, lift in theirs["rules"]}
    return (
        sets.keys() == ours["itemsets"].keys()
        and rules.keys() == ours["rules"].keys()
        and all(close(v, ours["itemsets"][k]) for k, v in sets.items())
        and all(close(f, ours["rules"][k][0]) and close(lift, ours["rules"][k][1]) for k, (f, lift) in rules.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="S")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results", help="where data and results go")
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="skip the SQL floor, pandas and mlxtend (at L they take as long again as the pipeline)",
    )
    parser.add_argument(
        "--one-more-day",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the full build, land the next days one at a time and time each incremental run (default: at M "
        "and L; its target is set at M, and S leaves it out to stay a one-minute check)",
    )
    parser.add_argument(
        "--more-days",
        type=int,
        default=MORE_DAYS,
        help="how many daily runs follow the full build; one more day costs the median of their times",
    )
    parser.add_argument(
        "--engine",
        choices=["duckdb", "spark"],
        default="duckdb",
        help="where dbt builds (docs/spark.md); spark runs without peers, at S and M",
    )
    args = parser.parse_args()
    if args.engine == "spark":
        args.no_peers = True  # the peers measure the DuckDB build's layers
    one_more_day = args.one_more_day if args.one_more_day is not None else args.scale != "S"
    if args.more_days < 1:
        parser.error(f"--more-days is {args.more_days}: at least one daily run follows the full build")

    from ingestion.generator import GeneratorConfig, generate, sources_file_for
    from ml.config import load_config
    from orchestration.dbt_assets import invocation_targets
    from orchestration.run import run_pipeline
    from orchestration.settings import Settings

    engine = "" if args.engine == "duckdb" else f"-{args.engine}"
    work = args.work / f"work-{args.scale}{engine}"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    start_day = dt.date(2025, 1, 1)
    full_as_of = start_day + dt.timedelta(days=args.days - 1)
    later_days = [full_as_of + dt.timedelta(days=k) for k in range(1, args.more_days + 1)]
    cfg = GeneratorConfig(
        out=work / "sample", customers=SCALES[args.scale], days=args.days + len(later_days), seed=42, start=start_day
    )
    sources, warehouse = sources_file_for(cfg.extracts, work / "sources.yml", cfg.start), work / "crm.duckdb"
    # The day measured is a daily run, whatever the weekday: no run tests every row as the weekly day does.
    sources.write_text(sources.read_text() + yaml.safe_dump({"tests": {"full_tests_weekday": 0}}))
    # The runs' Dagster instance and ML artifacts stay with their data.
    settings = replace(
        Settings.load(sources, warehouse, engine=args.engine), dagster_home=work / "dagster", models_dir=work / "models"
    )

    stages: list[Stage] = []
    with TreeRSS() as rss:
        # The extracts reach the disk within generation's time: a user's files are on disk before a
        # load, and the kernel writing back gigabytes of them (L: 15 GB) would slow the ingestion.
        _, gen = timed("generation", rss, lambda: (generate(cfg), os.sync()))
        full, total = timed("full build (crm run)", rss, lambda: run_pipeline(settings, as_of=full_as_of))
        run_stages = pipeline_stages(full, step_windows(full.run_ids), rss)
        gen.rows = next((s.rows for s in run_stages if s.name == "ingestion"), 0)
        total.rows = gen.rows
        stages += [gen, *run_stages, total]
        dbt_stage = next(s for s in run_stages if s.name == "dbt build")
        if not args.no_peers:
            # The steps' manifests, code compiled against the empty warehouse, where dbt wrote them
            # (a --full-refresh build does; else the floor compiles the project itself).
            first_build = [m for t in invocation_targets(full.run_ids[-1]) if (m := t / "manifest.json").exists()]
            floor, floor_stage = timed(
                "SQL floor of the dbt layer", rss, lambda: floor_vs_built(warehouse, work / "floor", first_build)
            )
            floor_stage.seconds = floor["floor_seconds"]  # the script's own run, without copying inputs or compiling
            floor_stage.rows = dbt_stage.rows
            stages.append(floor_stage)
        incremental, inc, day_stages = None, None, {}
        daily: list[tuple[object, Stage]] = []
        if one_more_day:
            for k, day in enumerate(later_days, 1):
                result, stage = timed(
                    f"one more day {k} of {len(later_days)} ({day})",
                    rss,
                    lambda day=day: run_pipeline(settings, as_of=day, start=day),
                )
                stage.rows = sum(m.get("rows_read", 0) for m in result.materialized.values())
                daily.append((result, stage))
            stages += [stage for _, stage in daily]
            # The median run stands for the day: its steps, dbt nodes and export bytes are reported.
            incremental, median = sorted(daily, key=lambda d: d[1].seconds)[(len(daily) - 1) // 2]
            inc = replace(
                median,
                name=DAY_STAGE,
                peak_rss_mib=max(s.peak_rss_mib for _, s in daily),
                peak_pss_mib=max(s.peak_pss_mib for _, s in daily),
            )
            stages.append(inc)
            day_stages = {s.name: s for s in pipeline_stages(incremental, step_windows(incremental.run_ids), rss)}
        rfm_ours = sum(s.seconds for s in run_stages if s.name in ("ingestion", "ml rfm_segments"))
        if not args.no_peers:
            peer, peer_stage = timed(
                "pandas peer: read extracts + RFM",
                rss,
                lambda: pandas_peer(cfg.extracts, full_as_of),
                rows=lambda r: r.get("customers", 0),
            )
            stages.append(peer_stage)
    ratios: dict = {"incremental_share_of_full_build": inc.seconds / total.seconds} if inc else {}
    if incremental:
        full_export, day_export = (r.materialized["serving/bi_exports"] for r in (full, incremental))
        ratios["daily_runs"] = [
            {
                "as_of": str(day),
                "seconds": stage.seconds,
                "share_of_full_build": stage.seconds / total.seconds,
                "export_bytes_written": result.materialized["serving/bi_exports"]["bytes_written"],
            }
            for day, (result, stage) in zip(later_days, daily)
        ]
        ratios["export_bytes"] = {
            "full": full_export["bytes_written"],
            "one_more_day": day_export["bytes_written"],
            "share": day_export["bytes_written"] / full_export["bytes_written"],
        }
    if not args.no_peers:
        rules = mlxtend_vs_ours(warehouse, load_config().baskets.min_support)
        ratios.update(
            {
                "ingestion_plus_rfm_vs_pandas": {
                    "ours_seconds": rfm_ours,
                    "pandas_seconds": peer_stage.seconds,
                    "pandas_over_ours": peer_stage.seconds / rfm_ours,
                    "pandas_customers": peer_stage.rows,
                    **({"pandas_stopped": peer["stopped"]} if "stopped" in peer else {}),
                },
                "association_rules_vs_mlxtend": rules,
                "dbt_layer_vs_sql_floor": {
                    "dbt_seconds": dbt_stage.seconds,
                    "floor_seconds": floor_stage.seconds,
                    "dbt_over_floor": dbt_stage.seconds / floor_stage.seconds,
                    **floor,
                },
            }
        )

    report = {
        "scale": args.scale,
        "engine": args.engine,
        "customers": cfg.customers,
        "days": args.days,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": dt.datetime.now(dt.UTC).isoformat(),
        "stages": [{**asdict(s), "rows_per_second": s.rows_per_second} for s in stages],
        "one_more_day_stages": [asdict(s) for s in day_stages.values()],
        "dbt_nodes": {
            "full_build": dbt_profile(full.run_ids),
            "one_more_day": dbt_profile(incremental.run_ids) if incremental else {},
        },
        "peak_rss_mib": max(s.peak_rss_mib for s in stages),
        "peak_pss_mib": max(s.peak_pss_mib for s in stages),
        "ratios": ratios,
    }
    out = args.work / f"{args.scale}{engine}-{dt.datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    runs = f" (+{len(daily)} daily runs)" if inc else ""
    print(
        f"\nScale {args.scale} on {args.engine}: {cfg.customers:,} customers × {args.days} days{runs}, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'stage':<40}{'seconds':>10}{'rows':>14}{'rows/s':>12}{'peak RSS MiB':>14}{'peak PSS MiB':>14}{'one more day s':>16}"
    )
    for s in stages:
        day = f"{day_stages[s.name].seconds:>16.1f}" if s.name in day_stages else ""
        label = f"  {s.name}" if s.name.startswith("ml ") else s.name  # a table inside the ML step
        print(
            f"{label:<40}{s.seconds:>10.1f}{s.rows:>14,}{s.rows_per_second:>12,.0f}"
            f"{s.peak_rss_mib:>14,.0f}{s.peak_pss_mib:>14,.0f}{day}"
        )
    print(
        f"\none more day costs {100 * inc.seconds / total.seconds:.1f} % of the full build (the median of "
        f"{len(daily)} daily runs: {', '.join(f'{s.seconds:.1f} s' for _, s in daily)})"
        if inc
        else "\none more day not run (--one-more-day runs it; it is measured at M and L by default)"
    )
    if "export_bytes" in ratios:
        b = ratios["export_bytes"]
        print(
            f"the day's export wrote {b['one_more_day'] / 2**20:,.1f} MiB of the full export's {b['full'] / 2**20:,.1f} MiB "
            f"({100 * b['share']:.1f} %; the rest hard-linked)"
        )
    for run, profile in report["dbt_nodes"].items():
        if profile:
            slowest = ", ".join(f"{n['node']} {n['seconds']:.1f} s" for n in profile["slowest"])
            print(
                f"dbt build ({run.replace('_', ' ')}): dbt {profile['dbt_elapsed_seconds']:.1f} s of its Dagster step; models "
                f"{profile['models_seconds']:.1f} s and tests {profile['tests_seconds']:.1f} s over dbt's threads; slowest: {slowest}"
            )
    if args.no_peers:
        print("peers (SQL floor, pandas, mlxtend) not run: --no-peers")
    else:
        print_peers(ratios)
    print(f"figures written to {out}\n")
    print_scaling(args.work)


def print_peers(ratios: dict) -> None:
    """The three side-by-side ratios of the run."""
    pandas, rules, floor = (
        ratios[k] for k in ("ingestion_plus_rfm_vs_pandas", "association_rules_vs_mlxtend", "dbt_layer_vs_sql_floor")
    )
    if "pandas_stopped" in pandas:
        print(
            f"ingestion + RFM: ours {pandas['ours_seconds']:.1f} s; the pandas peer stopped after "
            f"{pandas['pandas_seconds']:.0f} s: {pandas['pandas_stopped']}"
        )
    else:
        print(
            f"ingestion + RFM: ours {pandas['ours_seconds']:.1f} s, pandas {pandas['pandas_seconds']:.1f} s "
            f"({pandas['pandas_over_ours']:.2f}× ours; "
            f"pandas scores {pandas['pandas_customers']:,} registry ids, no identity resolution, quarantine or checks)"
        )
    if "ratio" in rules:
        print(
            f"association rules ({rules['baskets']:,} baskets × {rules['items']:,} items, support {rules['min_support']}): ours "
            f"{rules['ours_seconds']:.2f} s, mlxtend {rules['mlxtend_seconds']:.2f} s ({rules['mlxtend_peak_rss_mib']:,.0f} MiB peak) "
            f"= {rules['ratio']:.1f}×, "
            f"{'identical' if rules['equal'] else 'DIFFERENT'} ({rules['ours_itemsets']} itemsets, {rules['ours_rules']} rules)"
        )
    else:
        print(f"association rules: ours {rules['ours_seconds']:.2f} s; mlxtend stopped: {rules['mlxtend_stopped']}")
    print(
        f"dbt layer (dbt build in Dagster, {len(floor['marts'])} marts, tests included): {floor['dbt_seconds']:.1f} s, SQL floor "
        f"{floor['floor_seconds']:.1f} s = {floor['dbt_over_floor']:.2f}× the floor; marts "
        f"{'identical' if floor['equal'] else 'DIFFERENT'} (script: {floor['script']})"
    )


def print_scaling(results: Path) -> None:
    """The latest DuckDB run of each scale side by side: is cost linear in rows?"""
    latest = {}
    for path in sorted(results.glob("[SML]-[0-9]*.json")):
        latest[path.name[0]] = json.loads(path.read_text())
    print(
        f"{'scale':<7}{'rows':>13}{'full build s':>14}{'µs per row':>12}{'one more day s':>16}"
        f"{'pipeline peak RSS MiB':>23}{'peak PSS MiB':>14}"
    )
    for scale in (s for s in SCALES if s in latest):
        stages = {s["name"]: s for s in latest[scale]["stages"]}
        full, day = stages["full build (crm run)"], stages.get(DAY_STAGE)
        measured = [full, day] if day else [full]
        peak = max(s["peak_rss_mib"] for s in measured)
        pss = max(s.get("peak_pss_mib", s["peak_rss_mib"]) for s in measured)  # results before PSS: the RSS
        day_seconds = f"{day['seconds']:.1f}" if day else "-"
        print(
            f"{scale:<7}{full['rows']:>13,}{full['seconds']:>14.1f}{1e6 * full['seconds'] / max(full['rows'], 1):>12.1f}"
            f"{day_seconds:>16}{peak:>23,.0f}{pss:>14,.0f}"
        )


if __name__ == "__main__":
    main()
