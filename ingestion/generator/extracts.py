"""Write a simulated day as the files the source systems would export, adding the planted mess,
and record the ground truth (true person of every record, clean order lines) apart from them."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import polars as pl

from ingestion.generator.campaigns import Campaign, write_campaign
from ingestion.generator.config import CURRENCY, GeneratorConfig, coded
from ingestion.generator.messy import email_variants, name_typo, phone_variants
from ingestion.generator.population import REGIONS, TIERS, Catalog, Persons, store_codes
from ingestion.generator.shared_contacts import landline
from ingestion.generator.simulate import USER_AGENTS, UTM, Day

MISSING = np.array(None, dtype=object)  # an empty cell for np.where, whose stubs take arrays only
PAYMENTS = np.asarray(
    coded(["card", "cash", "wechat_pay", "alipay", "wechat_pay", "alipay"], "payment_method", "store"), dtype=object
)


def set_mtime(path: Path, date: dt.date, delay_hours: float) -> None:
    """Deterministic delivery time: the end of the file's day plus a delay."""
    ts = dt.datetime.combine(date, dt.time(23, 0), tzinfo=dt.UTC).timestamp() + delay_hours * 3600
    os.utime(path, (ts, ts))


def _write_text(path: Path, text: str, date: dt.date, delay_hours: float, encoding: str = "utf-8") -> None:
    path.write_bytes(text.encode(encoding, "surrogateescape"))  # surrogates: bytes invalid in UTF-8, planted
    set_mtime(path, date, delay_hours)


def _write_csv(frame: pl.DataFrame, path: Path, date: dt.date, delay_hours: float) -> None:
    frame.write_csv(path)
    set_mtime(path, date, delay_hours)


def _write_workbook(
    frame: pl.DataFrame, path: Path, date: dt.date, delay_hours: float, sheet: str = "receipts"
) -> None:
    import xlsxwriter

    with xlsxwriter.Workbook(path) as book:  # created at the file's day, not now: the same bytes for a seed
        book.set_properties({"created": dt.datetime.combine(date, dt.time(23, 0))})
        frame.write_excel(book, worksheet=sheet, autofit=False)
    set_mtime(path, date, delay_hours)


class _Files:
    """Writes files on one background thread, in the order they are queued, while the main thread
    simulates on: a year at 10,000 customers is 5,000 small files.
    Everything random about a file is drawn before it is queued, so the output stays the same for a
    seed. A bounded backlog keeps memory to a few days' files; a failed write raises on close()."""

    def __init__(self, backlog: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-files")
        self._pending: deque[Future] = deque()
        self._backlog = backlog

    def write(self, fn: Callable[..., None], *args: object) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._backlog or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)


def _frame(columns: dict) -> pl.DataFrame:
    """DataFrame whose numpy object columns (strings with None) become String columns."""
    return pl.DataFrame(
        {
            k: pl.Series(k, v.tolist(), dtype=pl.String) if isinstance(v, np.ndarray) and v.dtype == object else v
            for k, v in columns.items()
        }
    )


def _csv_text(frame: pl.DataFrame) -> list[str]:
    return frame.write_csv().splitlines()


@dataclass
class Truth:
    """Ground truth and mess counters; written to truth/ (the pipeline never reads it)."""

    root: Path
    writer: _Files
    mess: dict[str, list[int]] = field(default_factory=dict)  # kind -> [planted, out of]
    files: dict[str, TextIO] = field(default_factory=dict)  # name -> open handle (kept open: opens are slow)

    def count(self, kind: str, planted: int, total: int) -> None:
        acc = self.mess.setdefault(kind, [0, 0])
        acc[0] += int(planted)
        acc[1] += int(total)

    def append(self, name: str, frame: pl.DataFrame) -> None:
        self.writer.write(self._append, name, frame)

    def _append(self, name: str, frame: pl.DataFrame) -> None:
        f = self.files.get(name)
        if f is None:
            f = self.files[name] = (self.root / f"{name}.csv").open("w", encoding="utf-8")
            frame.write_csv(f)
        else:
            frame.write_csv(f, include_header=False)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class ExtractWriter:
    """Turns simulated days into extract files; keeps the few cross-day queues (returns, late receipts)."""

    def __init__(self, cfg: GeneratorConfig, persons: Persons, catalog: Catalog, rng: np.random.Generator):
        self.cfg, self.p, self.c, self.rng = cfg, persons, catalog, rng
        self.m = cfg.mess
        self.files = _Files()
        self.truth = Truth(cfg.truth, self.files)
        self.pending_returns: dict[int, list[pl.DataFrame]] = {}
        self.late_receipts: dict[tuple[int, int], list[pl.DataFrame]] = {}
        self.stores = store_codes(cfg)
        for sub in ("web", "store", "call_center", "social", "customers", "campaigns"):
            (cfg.extracts / sub).mkdir(parents=True, exist_ok=True)
        cfg.truth.mkdir(parents=True, exist_ok=True)
        self.tier = np.asarray(TIERS, object)[np.minimum((persons.purchase_rate * 365 / 3).astype(int), 3)]
        self.consent = persons.consent.copy()
        # String columns to gather from by person / product index.
        self.cookie_s = pl.Series(persons.cookie.tolist(), dtype=pl.String)
        self.member_s = pl.Series(persons.member_id.tolist(), dtype=pl.String)
        self.sku_s = pl.Series(catalog.sku.tolist(), dtype=pl.String)
        self.region = persons.region_idx.copy()
        store_regions = [REGIONS[(s // 3) % len(REGIONS)][2] for s in range(cfg.stores)]  # home_store = region * 3 + k
        self.shop_phone = np.asarray([landline(rng, area) for area in store_regions], dtype=object)
        self.types_shop_phone = rng.random(cfg.stores) < self.m.shop_phone_store_share
        self.shop_phone_receipts = np.zeros(cfg.stores, dtype=np.int64)

    # ---- customers -------------------------------------------------------------------------
    def _profiles(
        self, idx: np.ndarray, updated: np.ndarray, member: np.ndarray | None = None, names: np.ndarray | None = None
    ) -> pl.DataFrame:
        p, rng = self.p, self.rng
        n = len(idx)
        region = self.region[idx]
        phones = phone_variants(p.given_phone[idx], rng, self.m.phone_other_format)
        emails = email_variants(p.given_email[idx], rng, self.m.email_case_or_space, self.m.email_domain_typo)
        self.truth.count("phone_other_format", int((phones != p.given_phone[idx]).sum()), n)
        signup = np.datetime64(self.cfg.start) + p.signup_day[idx].astype("timedelta64[D]")
        return _frame(
            {
                "member_id": member if member is not None else p.member_id[idx],
                "updated": pl.Series(updated).dt.strftime("%Y-%m-%d %H:%M:%S"),
                "name": names if names is not None else p.name[idx],
                "gender": p.gender[idx],
                "birthday": pl.Series(p.birth_date[idx]).dt.strftime("%Y-%m-%d"),
                "email": np.where(rng.random(n) < 0.08, MISSING, emails),
                "mobile": phones,
                "province": np.asarray([REGIONS[r][0] for r in region], object),
                "city": np.asarray([REGIONS[r][1] for r in region], object),
                "card_no": p.card[idx],
                "tier": self.tier[idx],
                "signup_channel": p.signup_channel[idx],
                "signup_date": pl.Series(signup).dt.strftime("%Y-%m-%d"),
                "marketing_opt_in": np.where(self.consent[idx], "Y", "N"),
                # Consent of the initial export was last set a month before the window.
                "opt_in_changed": f"{self.cfg.start - dt.timedelta(days=30)} 09:00:00",
            }
        )

    def customers(self, day: Day) -> None:
        p, rng, d = self.p, self.rng, day.index

        def at(n: int, hour: int) -> np.ndarray:
            seconds = hour * 3600 + rng.integers(0, 3600, n)
            return (np.datetime64(day.date, "s") + seconds.astype("timedelta64[s]")).astype("datetime64[ms]")

        frames = []
        if d == 0:  # initial export of everyone who signed up before the window
            old = np.flatnonzero(p.signup_day < 0)
            frames.append(self._profiles(old, at(len(old), 6)))
        new = np.flatnonzero(p.signup_day == d)
        frames.append(self._profiles(new, at(len(new), 12)))
        # Changes that SCD2 history must keep: moves, tier changes, consent given or withdrawn.
        members = np.flatnonzero(p.signup_day < d)
        movers = members[rng.random(len(members)) < 0.0005]
        self.region[movers] = (self.region[movers] + 1 + rng.integers(0, len(REGIONS) - 1, len(movers))) % len(REGIONS)
        tiers = members[rng.random(len(members)) < 0.0005]
        self.tier[tiers] = np.asarray(TIERS, object)[rng.integers(0, len(TIERS), len(tiers))]
        consent = members[rng.random(len(members)) < 0.0005]
        self.consent[consent] = ~self.consent[consent]
        changed = np.unique(np.concatenate([movers, tiers, consent]))
        if len(changed):
            f = self._profiles(changed, at(len(changed), 18))
            f = f.with_columns(
                opt_in_changed=pl.when(pl.Series(np.isin(changed, consent)))
                .then(pl.col("updated"))
                .otherwise(pl.col("opt_in_changed"))
            )
            frames.append(f)
        # Duplicate registrations: the same person signs up again, name typo and all.
        dup_day = (np.arange(p.n) * 7919) % max(self.cfg.days, 1)
        dups = np.flatnonzero((p.dup_member_id != "") & (dup_day == d) & (p.signup_day <= d))
        if len(dups):
            names = np.asarray([name_typo(n, rng) if rng.random() < 0.7 else n for n in p.name[dups]], object)
            dup = self._profiles(dups, at(len(dups), 15), member=p.dup_member_id[dups], names=names)
            # Some sign up again with a new number and card and no email: only name, birthday and city link them.
            unlinked = pl.Series(rng.random(len(dups)) < self.m.duplicate_unlinked)
            self.truth.count("duplicate_unlinked", int(unlinked.sum()), len(dups))
            new_phone = pl.Series([f"1{x}" for x in rng.integers(3 * 10**9, 10**10, len(dups))], dtype=pl.String)
            frames.append(
                dup.with_columns(
                    mobile=pl.when(unlinked).then(new_phone).otherwise(pl.col("mobile")),
                    card_no=pl.when(unlinked)
                    .then(pl.lit("9") + pl.col("card_no").str.slice(1))
                    .otherwise(pl.col("card_no")),
                    email=pl.when(unlinked).then(None).otherwise(pl.col("email")),
                )
            )
        out = pl.concat(frames, how="vertical_relaxed")  # an empty frame may type a column Null
        if len(out):
            path = self.cfg.extracts / "customers" / f"customers_{day.date}.csv"
            self.files.write(_write_text, path, out.write_csv(), day.date, 1, self.cfg.registry_encoding)

    # ---- store -----------------------------------------------------------------------------
    def store(self, day: Day) -> None:
        p, c, rng, m = self.p, self.c, self.rng, self.m
        ymd = f"{day.date:%Y%m%d}"
        self._coupon_receipts(day, day.lines.filter(pl.col("coupon")))
        lines = day.lines.filter(~pl.col("is_web") & ~pl.col("coupon"))
        orders = lines.select("order_seq", "person", "store").unique("order_seq", maintain_order=True)
        n_o = len(orders)
        ident = rng.random(n_o)
        person = orders["person"].to_numpy()
        store = orders["store"].to_numpy()
        # Staff at some stores type the shop's own phone when a customer gives none.
        shop_typed = self.types_shop_phone[store] & (rng.random(n_o) < m.shop_phone_receipt)
        self.shop_phone_receipts += np.bincount(store[(ident >= 0.85) & shop_typed], minlength=len(self.stores))
        orders = orders.with_columns(
            order_id=pl.Series(
                [f"{self.stores[s]}-{ymd}-{i + 1:05d}" for i, s in enumerate(orders["store"].to_numpy())],
                dtype=pl.String,
            ),
            member_card=pl.Series(np.where(ident < 0.70, p.card[person], MISSING).tolist(), dtype=pl.String),
            member_phone=pl.Series(
                np.where(
                    (ident >= 0.70) & (ident < 0.85),
                    phone_variants(p.given_phone[person], rng, m.phone_other_format),
                    np.where((ident >= 0.85) & shop_typed, self.shop_phone[store], None),
                ).tolist(),
                dtype=pl.String,
            ),
            payment=pl.Series(PAYMENTS[rng.integers(0, len(PAYMENTS), n_o)].tolist(), dtype=pl.String),
        )
        lines = lines.join(
            orders.select("order_seq", "order_id", "member_card", "member_phone", "payment"),
            on="order_seq",
            maintain_order="left",
        )
        lines = lines.with_columns(line_no=pl.int_range(1, pl.len() + 1).over("order_id"))
        # Returns decided now, rung up 1-20 days later as negative lines on a return receipt.
        ret = lines.filter(pl.Series(rng.random(len(lines)) < 0.03))
        for delay, grp in ret.with_columns(delay=pl.Series(rng.integers(1, 21, len(ret)))).group_by(
            "delay", maintain_order=True
        ):
            self.pending_returns.setdefault(day.index + int(delay[0]), []).append(grp.drop("delay"))
        todays_returns = self.pending_returns.pop(day.index, [])
        if todays_returns:
            r = pl.concat(todays_returns)
            r = r.with_columns(
                order_id=pl.lit(f"R-{ymd}-") + pl.col("order_id"),
                quantity=-pl.col("quantity"),
                discount=-pl.col("discount"),
                ts=pl.col("ts").dt.replace(year=day.date.year, month=day.date.month, day=day.date.day),
            ).with_columns(line_no=pl.int_range(1, pl.len() + 1).over("order_id"))
            lines = pl.concat([lines, r.select(lines.columns)])
        n = len(lines)
        prod = lines["product"].to_numpy()
        sku = c.sku[prod].copy()
        unknown = rng.random(n) < m.unknown_sku
        sku[unknown] = [f"SKU-9{rng.integers(1000, 9999)}" for _ in range(int(unknown.sum()))]
        self.truth.count("unknown_sku", int(unknown.sum()), n)
        name = np.where(rng.random(n) < m.missing_product_name, None, c.name[prod])
        self.truth.count("missing_product_name", int(sum(x is None for x in name)), n)
        clean = lines.select(
            order_id="order_id",
            line_no="line_no",
            person="person",
            sku=pl.Series(c.sku[prod].tolist(), dtype=pl.String),  # the true SKU, before any mess
            quantity="quantity",
            unit_price="unit_price",
            discount="discount",
        )
        self.truth.append("order_lines", clean.with_columns(channel=pl.lit("store"), ordered_at=lines["ts"]))
        self.truth.append("store_orders", lines.select("order_id", person_id="person").unique(maintain_order=True))
        sold_at = lines["ts"].dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy().astype(object)
        bad_ts = rng.random(n) < m.bad_timestamp
        sold_at[bad_ts] = np.where(rng.random(int(bad_ts.sum())) < 0.5, "N/A", f"{day.date:%Y-%m}-30 25:61:00")
        self.truth.count("bad_timestamp_store", int(bad_ts.sum()), n)
        price = np.char.mod("%.2f", lines["unit_price"].to_numpy()).astype(object)
        bad_amount = rng.random(n) < m.non_numeric_amount
        price[bad_amount] = [s.replace("0", "O").replace("5", "S") + "元" for s in price[bad_amount]]
        self.truth.count("non_numeric_amount", int(bad_amount.sum()), n)
        out = _frame(
            {
                "receipt_no": lines["order_id"],
                "line_no": lines["line_no"],
                "sold_at": sold_at,
                "store_code": pl.Series(np.asarray(self.stores, object)[lines["store"].to_numpy()]),
                "sku": sku,
                "item_name": name,
                "category": c.category[prod],
                "qty": lines["quantity"],
                "unit_price": price,
                "discount": np.char.mod("%.2f", lines["discount"].to_numpy()),
                "currency": CURRENCY,
                "payment": lines["payment"],
                "member_card": lines["member_card"],
                "member_phone": lines["member_phone"],
                "_store": lines["store"],
            }
        )
        # Tills that sync late: some receipts land in the file of a day 1-3 days later.
        late_orders = (
            out["receipt_no"]
            .unique(maintain_order=True)
            .filter(pl.Series(rng.random(out["receipt_no"].n_unique()) < m.store_late_receipt))
        )
        late = out.filter(pl.col("receipt_no").is_in(late_orders.implode()))
        self.truth.count("store_late_receipt", len(late), n)
        out = out.filter(~pl.col("receipt_no").is_in(late_orders.implode()))
        for (s, delay), grp in late.with_columns(delay=pl.Series(rng.integers(1, 4, len(late)))).group_by(
            "_store", "delay", maintain_order=True
        ):
            self.late_receipts.setdefault((day.index + int(delay), int(s)), []).append(grp.drop("delay"))
        by_store = out.partition_by("_store", as_dict=True)
        for s, code in enumerate(self.stores):
            parts = [by_store[(s,)]] if (s,) in by_store else []
            parts += self.late_receipts.pop((day.index, s), [])
            if parts:
                self._write_store_file(code, day, pl.concat(parts).drop("_store"))

    def _coupon_receipts(self, day: Day, lines: pl.DataFrame) -> None:
        """Campaign responses (campaigns.py): the coupon till exports its own clean receipt file per
        store and day, each receipt rung up against the member card, none returned. It draws nothing
        at random, so the other files are what they would be without campaigns."""
        if lines.is_empty():
            return
        ymd = f"{day.date:%Y%m%d}"
        lines = lines.with_columns(
            order_id=pl.format(
                "{}-{}-C{}",
                pl.col("store").replace_strict(dict(enumerate(self.stores)), return_dtype=pl.String),
                pl.lit(ymd),
                pl.col("order_seq").cast(pl.String).str.zfill(5),
            )
        ).with_columns(line_no=pl.int_range(1, pl.len() + 1).over("order_id"))
        prod, person = lines["product"].to_numpy(), lines["person"].to_numpy()
        self.truth.append(
            "order_lines",
            lines.select(
                "order_id",
                "line_no",
                "person",
                "quantity",
                "unit_price",
                "discount",
                sku=pl.Series(self.c.sku[prod].tolist(), dtype=pl.String),
                channel=pl.lit("store"),
                ordered_at="ts",
            ).select(
                "order_id", "line_no", "person", "sku", "quantity", "unit_price", "discount", "channel", "ordered_at"
            ),
        )
        self.truth.append("store_orders", lines.select("order_id", person_id="person").unique(maintain_order=True))
        out = _frame(
            {
                "receipt_no": lines["order_id"],
                "line_no": lines["line_no"],
                "sold_at": lines["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"),
                "store_code": pl.Series(np.asarray(self.stores, object)[lines["store"].to_numpy()]),
                "sku": self.c.sku[prod],
                "item_name": self.c.name[prod],
                "category": self.c.category[prod],
                "qty": lines["quantity"],
                "unit_price": np.char.mod("%.2f", lines["unit_price"].to_numpy()),
                "discount": np.char.mod("%.2f", lines["discount"].to_numpy()),
                "currency": CURRENCY,
                "payment": "card",
                "member_card": self.p.card[person],
                "member_phone": None,
                "_store": lines["store"],
            }
        )
        for (s,), part in out.partition_by("_store", as_dict=True, maintain_order=True).items():
            code = self.stores[int(s)]
            folder = self.cfg.extracts / "store" / code
            folder.mkdir(exist_ok=True)
            path = folder / f"pos_{code}_{day.date}_coupons.csv"
            self.files.write(_write_csv, part.drop("_store"), path, day.date, 1)

    def _write_store_file(self, code: str, day: Day, part: pl.DataFrame) -> None:
        rng, m = self.rng, self.m
        folder = self.cfg.extracts / "store" / code
        folder.mkdir(exist_ok=True)
        path = folder / f"pos_{code}_{day.date}.csv"
        corrected = rng.random() < m.store_corrected_file
        redelivered = rng.random() < m.store_redelivered_file
        self.truth.count("store_corrected_file", int(corrected), 1)
        self.truth.count("store_redelivered_file", int(redelivered), 1)
        if code in self.stores[len(self.stores) - self.cfg.excel_stores :]:
            self._write_store_workbook(path.with_suffix(".xlsx"), day, part, corrected, redelivered)
            return
        text = _csv_text(part)
        bad_quote, open_quote = rng.random(2) < (m.csv_bad_quote_file, m.csv_open_quote_file)
        self.truth.count("csv_bad_quote_file", int(bad_quote), 1)
        self.truth.count("csv_open_quote_file", int(open_quote), 1)
        name = part.columns.index("item_name")
        if bad_quote and len(text) > 2:  # an exporter that quotes a name and then appends to it
            cells = text[1].split(",")
            cells[name] = f'"{cells[name]}" (gift)'
            text[1] = ",".join(cells)
        if open_quote and len(text) > 2:  # a quote opened on the last record, never closed
            cells = text[-1].split(",")
            cells[name] = f'"{cells[name]}'
            text[-1] = ",".join(cells)
        broken = np.flatnonzero(rng.random(len(text) - 1) < m.csv_broken_row) + 1
        self.truth.count("csv_broken_row", len(broken), len(text) - 1)
        for i in broken:  # a till that forgot to quote a comma in a field
            text[i] = text[i] + ",EXTRA"
        if corrected:  # first delivery has wrong prices on a few lines; v2 fixes them
            wrong = list(text)
            for i in rng.choice(np.arange(1, len(text)), min(2, len(text) - 1), replace=False):
                cells = wrong[i].split(",")
                if len(cells) > 8 and cells[8].replace(".", "").isdigit():
                    cells[8] = f"{float(cells[8]) * 10:.2f}"
                    wrong[i] = ",".join(cells)
            first = "\n".join(wrong) + "\n"
            self.files.write(
                _write_text, folder / f"pos_{code}_{day.date}.v2.csv", "\n".join(text) + "\n", day.date, 49
            )
        else:
            first = "\n".join(text) + "\n"
        self.files.write(_write_text, path, first, day.date, 1)
        if redelivered:  # the first delivery again, byte for byte
            self.files.write(_write_text, folder / f"pos_{code}_{day.date}.resend.csv", first, day.date, 25)

    def _write_store_workbook(
        self, path: Path, day: Day, part: pl.DataFrame, corrected: bool, redelivered: bool
    ) -> None:
        """A franchise's till exports Excel: sale times as date cells (an unparsable one left empty),
        the rest as text; the same re-deliveries as the CSV stores (v2 fixes two prices)."""
        book = part.with_columns(sold_at=pl.col("sold_at").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False))
        first = book
        if corrected:
            wrong = pl.Series(
                np.isin(np.arange(len(book)), self.rng.choice(len(book), min(2, len(book)), replace=False))
            )
            first = book.with_columns(
                unit_price=pl.when(wrong & pl.col("unit_price").str.contains(r"^[0-9.]+$"))
                .then((pl.col("unit_price").cast(pl.Float64, strict=False) * 10).round(2).cast(pl.String))
                .otherwise(pl.col("unit_price"))
            )
            self.files.write(_write_workbook, book, path.with_name(path.stem + ".v2.xlsx"), day.date, 49)
        self.files.write(_write_workbook, first, path, day.date, 1)
        if redelivered:
            self.files.write(_write_workbook, first, path.with_name(path.stem + ".resend.xlsx"), day.date, 25)

    # ---- campaigns -------------------------------------------------------------------------
    def campaign(self, c: Campaign, day: Day, rng: np.random.Generator) -> pl.DataFrame:
        """Queue a campaign's export on its day; return who each of its rows is (the truth)."""
        path, content, truth = write_campaign(
            c, self.cfg.extracts / "campaigns", self.p, rng, day.date, self.m.phone_other_format
        )
        if isinstance(content, str):
            self.files.write(_write_text, path, content, day.date, 2)
        else:
            self.files.write(_write_workbook, content, path, day.date, 2, "contacts")
        return truth

    # ---- web -------------------------------------------------------------------------------
    def web(self, day: Day) -> None:
        ev, p, rng, m = day.sessions, self.p, self.rng, self.m
        if not len(ev):
            return
        ymd = f"{day.date:%Y%m%d}"
        n = len(ev)
        person = ev["person"].to_numpy()
        known = person >= 0
        idx = np.maximum(person, 0)
        etype = ev["event_type"].to_numpy()
        after_login = ev["logged_in"].to_numpy() & (ev["seq"].to_numpy() >= 1) & known
        shown = np.flatnonzero(known & ((etype == "login") | ((etype == "purchase") & after_login)))
        email = pl.Series("email", [None] * n, dtype=pl.String).scatter(
            shown, email_variants(p.email[idx[shown]], rng, m.email_case_or_space, m.email_domain_typo).tolist()
        )
        zulu = rng.random(n) < 0.1  # one tracker sends UTC with Z, the other local time with offset
        no_ua = rng.random(n) < m.missing_user_agent
        utm = ev["utm"].to_numpy()
        col = pl.col
        frame = ev.select(
            event_id=pl.format("ev-{}-{}", pl.lit(ymd), pl.int_range(pl.len()).cast(pl.String).str.zfill(7)),
            ts=pl.when(pl.Series(zulu))
            .then((col("ts") - pl.duration(hours=8)).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
            .otherwise(col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.3f+08:00")),
            type=col("event_type"),
            cookie=pl.when(col("new_cookie") | (col("person") < 0))
            .then(pl.format("c{}{}", pl.lit(ymd), col("session").cast(pl.String).str.zfill(6)))
            .otherwise(self.cookie_s.gather(idx)),
            session=pl.format("s-{}-{}", pl.lit(ymd), col("session")),
            user_id=pl.when(pl.Series(after_login)).then(self.member_s.gather(idx)),
            email=email,
            url=pl.when(col("event_type").is_in(["product_view", "add_to_cart", "purchase"]))
            .then(pl.format("/p/{}", self.sku_s.gather(ev["product"].to_numpy())))
            .when(col("event_type") == "search")
            .then(pl.lit("/search"))
            .when(col("event_type") == "checkout")
            .then(pl.lit("/checkout"))
            .otherwise(pl.lit("/")),
            sku=pl.when(col("event_type").is_in(["product_view", "add_to_cart", "purchase"])).then(
                self.sku_s.gather(ev["product"].to_numpy())
            ),
            qty=col("quantity"),
            price=col("unit_price"),
            currency=pl.when(col("event_type") == "purchase").then(pl.lit(CURRENCY)),
            order_id=pl.when(col("order_seq").is_not_null()).then(
                pl.format("W-{}-{}", pl.lit(ymd), col("order_seq").cast(pl.String).str.zfill(5))
            ),
            q=pl.when(col("event_type") == "search").then(pl.lit("tea gift set")),
            utm=pl.struct(
                source=pl.Series([u[0] for u in UTM], dtype=pl.String).gather(utm),
                medium=pl.Series([u[1] for u in UTM], dtype=pl.String).gather(utm),
                campaign=pl.Series([u[2] for u in UTM], dtype=pl.String).gather(utm),
            ),
            ua=pl.when(~pl.Series(no_ua)).then(pl.Series(USER_AGENTS, dtype=pl.String).gather(ev["ua"].to_numpy())),
        )
        self.truth.count("missing_user_agent", int(frame["ua"].is_null().sum()), n)
        purchases = frame.filter(pl.col("type") == "purchase")
        if len(purchases):
            lines = purchases.select(
                order_id="order_id",
                line_no=pl.int_range(1, pl.len() + 1).over("order_id"),
                person=pl.Series(person[etype == "purchase"]),
                sku="sku",
                quantity="qty",
                unit_price="price",
                discount=pl.lit(0.0),
                channel=pl.lit("web"),
                ordered_at=pl.Series(ev["ts"].to_numpy()[etype == "purchase"]),
            )
            self.truth.append("order_lines", lines)
        cookies = frame.select("cookie", person_id=pl.Series(np.where(known, person, -1))).unique(maintain_order=True)
        self.truth.append("web_cookies", cookies)
        self._write_json_lines(
            frame,
            self.cfg.extracts / "web" / f"events_{day.date}.jsonl",
            day,
            2,
            ("web_duplicate_event", m.web_duplicate_event),
            ("web_broken_json", m.web_broken_json),
        )

    def _write_json_lines(
        self,
        frame: pl.DataFrame,
        path: Path,
        day: Day,
        delay_hours: float,
        duplicate: tuple[str, float],
        broken: tuple[str, float],
    ) -> None:
        """Write JSON lines as an exporter would: some lines twice (retries), some cut short."""
        rows = frame.write_ndjson().splitlines()
        n = len(rows)
        dup = self.rng.random(n) < duplicate[1]
        cut = self.rng.random(n) < broken[1]
        self.truth.count(duplicate[0], int(dup.sum()), n)
        if broken[1]:
            self.truth.count(broken[0], int(cut.sum()), n)
        # A tracker that once wrote a byte no UTF-8 has: one line of a few files.
        garbled = np.zeros(n, dtype=bool)
        if duplicate[0].startswith("web"):
            hit = self.rng.random() < self.m.json_invalid_utf8_file
            self.truth.count("json_invalid_utf8_file", int(hit), 1)
            garbled[int(self.rng.integers(0, n))] = hit
        out: list[str] = []
        for line, twice, short, bad in zip(rows, dup, cut, garbled):
            line = line.replace('"type"', '"ty\udcffpe"', 1) if bad else line  # one byte no UTF-8 has: 0xFF
            out.append(line[: len(line) // 2] if short else line)
            if twice:
                out.append(line)
        self.files.write(_write_text, path, "\n".join(out) + "\n", day.date, delay_hours)

    # ---- call center -----------------------------------------------------------------------
    def calls(self, day: Day) -> None:
        calls, p, rng, m = day.calls, self.p, self.rng, self.m
        if not len(calls):
            return
        n = len(calls)
        ymd = f"{day.date:%Y%m%d}"
        person = calls["person"].to_numpy()
        ids = [f"CALL-{ymd}-{i:05d}" for i in range(n)]
        started = calls["started"].dt.strftime("%Y/%m/%d %H:%M:%S").to_numpy().astype(object)
        bad = rng.random(n) < m.bad_timestamp
        started[bad] = "unknown"
        self.truth.count("bad_timestamp_calls", int(bad.sum()), n)
        angry = calls["angry"].to_numpy()
        names = [name_typo(x, rng) if rng.random() < m.name_typo else x for x in p.name[person]]
        notes = [
            (f"Customer {nm} upset, wants refund.\nEscalated to supervisor" if a else f"Helped {nm}, all good")
            for nm, a in zip(names, angry)
        ]
        frame = _frame(
            {
                "call_id": ids,
                "start_time": started,
                "end_time": calls["ended"].dt.strftime("%Y/%m/%d %H:%M:%S"),
                "caller_number": phone_variants(p.phone[person], rng, m.phone_other_format),
                "cust_id": np.where(rng.random(n) < 0.4, p.member_id[person], None),
                "queue": np.where(angry, "complaints", "general"),
                "agent": [f"A{int(x):03d}" for x in rng.integers(1, 40, n)],
                "reason": calls["reason"],
                "resolution": np.where(
                    angry,
                    np.asarray(["escalated", "unresolved", "callback", "resolved"], object)[rng.integers(0, 4, n)],
                    "resolved",
                ),
                "csat": np.where(calls["answered_survey"].to_numpy(), calls["csat"].to_numpy().astype(str), MISSING),
                "notes": notes,
            }
        )
        path = self.cfg.extracts / "call_center" / f"calls_{day.date}.csv"
        mixed = rng.random() < m.csv_mixed_line_endings
        self.truth.count("csv_mixed_line_endings", int(mixed), 1)
        if mixed:  # a Windows export (CRLF) that one line, appended by another tool, ends with LF
            lines = frame.write_csv().split("\n")[:-1]
            self.files.write(_write_text, path, "\r\n".join(lines[:-1]) + "\n" + lines[-1] + "\r\n", day.date, 3)
        else:
            self.files.write(_write_csv, frame, path, day.date, 3)
        self.truth.append("calls", pl.DataFrame({"call_id": ids, "person_id": person}))

    # ---- social ----------------------------------------------------------------------------
    def social(self, day: Day) -> None:
        s, p, rng, m = day.social, self.p, self.rng, self.m
        if not len(s):
            return
        n = len(s)
        ymd = f"{day.date:%Y%m%d}"
        person = s["person"].to_numpy()
        ids = [f"so-{ymd}-{i:05d}" for i in range(n)]
        typ = s["type"].to_numpy()
        shares = (typ == "dm") & (rng.random(n) < 0.5)
        contact = [
            {
                "phone": phone_variants(np.asarray([p.phone[x]], object), rng, m.phone_other_format)[0]
                if sh and rng.random() < 0.6
                else None,
                "email": p.email[x] if sh else None,
            }
            if sh
            else None
            for x, sh in zip(person, shares)
        ]
        frame = _frame(
            {
                "id": ids,
                "platform": p.platform[person],
                "handle": p.handles[person],
                "type": typ,
                "text": np.where(typ == "like", MISSING, s["text"].to_numpy()),
                "created_at": s["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S+08:00"),
                "parent": None,
                "contact": contact,
            }
        )
        self._write_json_lines(
            frame,
            self.cfg.extracts / "social" / f"social_{day.date}.jsonl",
            day,
            4,
            ("social_duplicate", m.social_duplicate),
            ("social_broken_json", 0.0),
        )
        self.truth.append(
            "social", pl.DataFrame({"interaction_id": ids, "person_id": person, "sentiment": s["sentiment"]})
        )

    def finish(self, rule_counts: np.ndarray, baskets: int) -> None:
        """Write the planted rules with their realized lift, the mess counts and the persons."""
        c, t = self.c, self.truth
        self.files.close()
        t.close()
        rules = []
        for (a, b, prob), (na, nb, nab) in zip(c.rules, rule_counts):
            support_a, support_b, support_ab = na / baskets, nb / baskets, nab / baskets
            rules.append(
                {
                    "antecedent": c.sku[a],
                    "consequent": c.sku[b],
                    "add_probability": prob,
                    "baskets": int(baskets),
                    "support": support_ab,
                    "confidence": nab / na if na else None,
                    "lift": support_ab / (support_a * support_b) if na and nb else None,
                }
            )
        (t.root / "planted_rules.json").write_text(json.dumps(rules, indent=2))
        mess = {
            k: {"planted": v[0], "out_of": v[1], "rate": v[0] / v[1] if v[1] else 0.0}
            for k, v in sorted(t.mess.items())
        }
        (t.root / "mess.json").write_text(json.dumps(mess, indent=2))
        shops = pl.DataFrame(
            {
                "kind": "shop_phone",
                "value": self.shop_phone.astype(str),
                "persons": None,
                "receipts": self.shop_phone_receipts,
            }
        ).filter(pl.col("receipts") > 0)
        pl.concat(
            [self.p.shared_contacts.with_columns(receipts=pl.lit(None, pl.Int64)), shops], how="vertical_relaxed"
        ).write_csv(t.root / "shared_contacts.csv")
        persons = self.p.frame(self.cfg.start).with_columns(
            cookie=pl.Series(self.p.cookie), handle=pl.Series(self.p.handles)
        )
        persons.write_parquet(t.root / "persons.parquet")
        self._identity_truth(persons).write_csv(t.root / "identity.csv")

    def _identity_truth(self, persons: pl.DataFrame) -> pl.DataFrame:
        """The true person of every record identity resolution sees, keyed as the records' own systems key them."""
        root = self.truth.root

        def read(name: str, record_type: str, id_column: str) -> pl.DataFrame:
            path = root / f"{name}.csv"
            if not path.exists():
                return pl.DataFrame(
                    schema={"record_type": pl.String, "source_record_id": pl.String, "person_id": pl.Int64}
                )
            frame = pl.read_csv(path, columns=[id_column, "person_id"], schema_overrides={id_column: pl.String})
            return frame.filter(pl.col("person_id") >= 0).select(
                record_type=pl.lit(record_type), source_record_id=id_column, person_id="person_id"
            )

        members = pl.concat(
            [
                persons.select("person_id", source_record_id="member_id"),
                persons.select("person_id", source_record_id="duplicate_member_id"),
            ]
        )
        social = persons.with_columns(platform=pl.Series(self.p.platform)).filter(pl.col("handle") != "")
        return pl.concat(
            [
                members.filter(pl.col("source_record_id") != "").select(
                    record_type=pl.lit("profile"), source_record_id="source_record_id", person_id="person_id"
                ),
                read("store_orders", "order", "order_id"),
                read("web_cookies", "web_cookie", "cookie"),
                read("calls", "call", "call_id"),
                social.select(
                    record_type=pl.lit("social_account"),
                    source_record_id=pl.concat_str(
                        pl.col("platform").str.to_lowercase(), pl.lit(":"), pl.col("handle").str.to_lowercase()
                    ),
                    person_id="person_id",
                ),
            ]
        ).unique(maintain_order=True)
