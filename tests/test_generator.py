"""The sample-data generator: deterministic, with planted structure and mess at the documented rates,
measured back from the extract files themselves (not from the generator's own counters)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import polars as pl
import pytest

from ingestion.generator import GeneratorConfig, MessRates, generate

RATES = MessRates()
FULL_WIDTH = str.maketrans("０１２３４５６７８９", "0123456789")


def within(measured: float, rate: float, n: int, what: str) -> None:
    """Binomial tolerance: four standard deviations (plus one event) around the documented rate."""
    tolerance = 4 * math.sqrt(rate * (1 - rate) / n) + 1 / n
    assert abs(measured - rate) <= tolerance, (
        f"{what}: measured {measured:.5f} over {n}, documented {rate} ± {tolerance:.5f}"
    )


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> GeneratorConfig:
    cfg = GeneratorConfig(out=tmp_path_factory.mktemp("medium"), customers=3000, days=60, seed=11)
    generate(cfg)
    return cfg


def digest(root: Path) -> dict[str, tuple[str, int]]:
    """Content of every file, and delivery time (mtime) of the extracts, which the loader orders by."""
    return {
        str(p.relative_to(root)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns if "extracts" in p.parts else 0,
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cfg = GeneratorConfig(out=tmp_path / name, customers=300, days=15, seed=seed)
        generate(cfg)
        runs[name] = digest(cfg.out)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_every_channel_in_its_export_format(medium: GeneratorConfig) -> None:
    x = medium.extracts
    assert len(list((x / "web").glob("events_*.jsonl"))) == 60
    tills = [p for p in (x / "store").glob("*/pos_*.csv") if not p.stem.endswith("_coupons")]  # coupons: any store
    assert len({p.parent.name for p in tills}) == medium.stores - medium.excel_stores
    workbooks = sorted((x / "store").glob("*/pos_*.xlsx"))
    assert {p.parent.name for p in workbooks} == {f"S{medium.stores:02d}"}
    book = pl.read_excel(workbooks[0], sheet_name="receipts")
    assert book.schema["sold_at"] == pl.Datetime  # Excel date cells, as a franchise's till writes them
    profiles = (x / "customers" / f"customers_{medium.start}.csv").read_bytes()
    assert any(ord(c) > 127 for c in profiles.decode("gbk")) and not _is_utf8(profiles)  # the registry exports GBK
    assert len(list((x / "call_center").glob("calls_*.csv"))) >= 55
    assert len(list((x / "social").glob("social_*.jsonl"))) >= 55
    assert (x / "customers" / f"customers_{medium.start}.csv").exists()
    event = json.loads((x / "web" / f"events_{medium.start}.jsonl").read_text().splitlines()[0])
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(\+08:00|Z)$", event["ts"])
    assert set(event["utm"]) == {"source", "medium", "campaign"}
    store = pl.read_csv(next((x / "store").glob("*/pos_*.csv")), infer_schema=False)
    assert store.columns[:4] == ["receipt_no", "line_no", "sold_at", "store_code"]
    payments = pl.concat(
        [
            pl.read_csv(p, infer_schema=False, truncate_ragged_lines=True, quote_char=None)
            for p in (x / "store").glob("S01/*.csv")
        ]
    )["payment"]
    assert {"card", "cash", "wechat_pay", "alipay"} <= set(payments.drop_nulls())
    # Returns are negative quantities on return receipts.
    qty = pl.concat(
        [
            pl.read_csv(p, infer_schema=False, truncate_ragged_lines=True, quote_char=None)
            for p in (x / "store").glob("*/*.csv")
        ]
    )
    assert qty.filter(pl.col("receipt_no").str.starts_with("R-"))["qty"].cast(pl.Int64).max() < 0
    # Ground truth is written apart from the extracts.
    assert {p.name for p in medium.truth.iterdir()} >= {
        "persons.parquet",
        "planted_rules.json",
        "mess.json",
        "order_lines.csv",
    }
    assert not any("truth" in str(p) for p in x.rglob("*"))


def test_mess_rates_match_the_documentation(medium: GeneratorConfig) -> None:
    x = medium.extracts
    # Web: broken JSON lines and tracker retries (same event twice).
    web_files = [p.read_bytes() for p in sorted((x / "web").glob("*.jsonl"))]
    lines = [line for data in web_files for line in data.decode("utf-8", "replace").splitlines()]
    garbled = sum(b"\xff" in data for data in web_files)
    within(garbled / len(web_files), RATES.json_invalid_utf8_file, len(web_files), "JSON files with invalid UTF-8")
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line)["event_id"])
        except json.JSONDecodeError:
            pass
    within((len(lines) - len(parsed)) / len(lines), RATES.web_broken_json, len(lines), "broken JSON")
    within(
        (len(parsed) - len(set(parsed))) / len(set(parsed)),
        RATES.web_duplicate_event,
        len(set(parsed)),
        "duplicate events",
    )

    # Store: unknown SKUs, unparsable times and amounts, broken rows, re-deliveries.
    # The coupon till's files (campaign responses) are clean by design: the mess is the tills'.
    base = [p for p in (x / "store").glob("*/*.csv") if p.name.count(".") == 1 and not p.stem.endswith("_coupons")]
    texts = [line for p in base for line in p.read_text().splitlines()[1:]]
    broken = [t for t in texts if t.endswith(",EXTRA")]
    within(len(broken) / len(texts), RATES.csv_broken_row, len(texts), "broken CSV rows")
    rows = pl.concat([pl.read_csv(p, infer_schema=False, truncate_ragged_lines=True, quote_char=None) for p in base])
    n = len(rows)
    known = {f"SKU-{10001 + i}" for i in range(medium.products)}
    within(rows.filter(~pl.col("sku").is_in(known)).height / n, RATES.unknown_sku, n, "unknown SKUs")
    bad_ts = rows.filter(pl.col("sold_at").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False).is_null()).height
    within(bad_ts / n, RATES.bad_timestamp, n, "bad timestamps")
    bad_amount = rows.filter(pl.col("unit_price").cast(pl.Float64, strict=False).is_null()).height
    within(bad_amount / n, RATES.non_numeric_amount, n, "non-numeric amounts")
    # Receipt numbers carry the sale date; late receipts sit in the file of a later day.
    in_later_file = sum(
        1
        for p in base
        for r in p.read_text().splitlines()[1:]
        if not r.startswith("R-") and r.split(",")[0][4:12] != p.stem.split("_")[-1].replace("-", "")
    )
    within(in_later_file / n, RATES.store_late_receipt, n // 3, "late receipts")  # receipts of ~3 lines move together
    resend = len(list((x / "store").glob("*/*.resend.csv")))
    corrected = len(list((x / "store").glob("*/*.v2.csv")))
    within(resend / len(base), RATES.store_redelivered_file, len(base), "re-delivered files")
    within(corrected / len(base), RATES.store_corrected_file, len(base), "corrected files")
    bad_quote = sum('" (gift)' in p.read_text().split("\n")[1] for p in base)
    open_quote = sum(p.read_text().rstrip("\n").split("\n")[-1].count('"') % 2 for p in base)
    within(bad_quote / len(base), RATES.csv_bad_quote_file, len(base), "files with text after a closing quote")
    within(open_quote / len(base), RATES.csv_open_quote_file, len(base), "files with a quote left open")
    calls = [p.read_bytes() for p in (x / "call_center").glob("*.csv")]
    mixed = sum(b"\r\n" in c and c.count(b"\n") != c.count(b"\r\n") for c in calls)
    within(mixed / len(calls), RATES.csv_mixed_line_endings, len(calls), "call files with mixed line endings")

    # Registry: phone formats, email case and typos, duplicate registrations.
    profiles = pl.concat(
        [pl.read_csv(p, infer_schema=False, encoding="gbk") for p in sorted((x / "customers").glob("*.csv"))]
    )
    mobiles = profiles["mobile"].to_list()
    digits = [re.sub(r"\D", "", m.translate(FULL_WIDTH)) for m in mobiles]
    is_mobile = [
        len(d[-11:]) == 11 and d[-11] == "1" and (len(d) == 11 or d.startswith("86") or d.startswith("0086"))
        for d in digits
    ]
    other = sum(1 for m, ok in zip(mobiles, is_mobile) if ok and not re.fullmatch(r"1\d{10}", m))
    within(other / sum(is_mobile), RATES.phone_other_format, sum(is_mobile), "phone formats")
    emails = profiles["email"].drop_nulls().to_list()
    cased = sum(1 for e in emails if e != e.strip() or e != e.lower())
    within(cased / len(emails), RATES.email_case_or_space, len(emails), "email case/spaces")
    typos = sum(
        1
        for e in emails
        if e.strip().lower().split("@")[1]
        not in {"qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com", "foxmail.com"}
    )
    within(typos / len(emails), RATES.email_domain_typo, len(emails), "email domain typos")
    members = profiles["member_id"].unique()
    duplicates = members.filter(members.str.slice(1).cast(pl.Int64) > medium.customers).len()
    within(duplicates / medium.customers, RATES.duplicate_registration, medium.customers, "duplicate registrations")
    unlinked = profiles.filter(pl.col("card_no").str.starts_with("9"))["member_id"].n_unique()
    within(unlinked / duplicates, RATES.duplicate_unlinked, duplicates, "unlinked duplicate registrations")


def test_planted_rules_have_their_recorded_lift(medium: GeneratorConfig) -> None:
    rules = json.loads((medium.truth / "planted_rules.json").read_text())
    lines = pl.read_csv(medium.truth / "order_lines.csv", infer_schema_length=None).filter(pl.col("quantity") > 0)
    baskets = lines.group_by("order_id").agg(pl.col("sku"))
    n = len(baskets)
    for rule in rules:
        a, b = rule["antecedent"], rule["consequent"]
        has_a = baskets.filter(pl.col("sku").list.contains(a)).height
        has_b = baskets.filter(pl.col("sku").list.contains(b)).height
        both = baskets.filter(pl.col("sku").list.contains(a) & pl.col("sku").list.contains(b)).height
        assert rule["baskets"] == n
        assert rule["lift"] == pytest.approx((both / n) / ((has_a / n) * (has_b / n)), rel=1e-9)
        assert rule["lift"] > 3, rule


def test_churners_stop_buying_after_warning_signs(medium: GeneratorConfig) -> None:
    persons = pl.read_parquet(medium.truth / "persons.parquet")
    lines = pl.read_csv(medium.truth / "order_lines.csv", infer_schema_length=None)
    day = pl.col("order_id").str.extract(r"(\d{8})").str.to_date("%Y%m%d")
    orders = (
        lines.filter(pl.col("quantity") > 0).with_columns(day=day).join(persons, left_on="person", right_on="person_id")
    )
    churned = orders.filter(pl.col("is_churner") & (pl.col("day") >= pl.col("churn_date")))
    assert churned.height == 0
    calls = pl.read_csv(medium.truth / "calls.csv").with_columns(
        day=pl.col("call_id").str.extract(r"(\d{8})").str.to_date("%Y%m%d")
    )
    calls = calls.join(persons, left_on="person_id", right_on="person_id")
    warning = calls.filter(
        pl.col("is_churner")
        & (pl.col("day") < pl.col("churn_date"))
        & (pl.col("day") >= pl.col("churn_date") - pl.duration(days=60))
    )
    # Warning-window persons call several times as often as the rest, per person-day.
    churner_days = persons.filter(pl.col("is_churner")).height * 60
    other_days = persons.filter(~pl.col("is_churner")).height * medium.days
    others = calls.filter(~pl.col("is_churner")).height
    assert (warning.height / churner_days) > 2 * (others / other_days)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
