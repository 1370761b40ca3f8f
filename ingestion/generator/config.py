"""Generator settings and the documented rates of planted mess (docs/generator.md lists them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

TIMEZONE = "Asia/Shanghai"
CURRENCY = "CNY"


def coded(values: list[str], field: str, channel: str) -> list[str]:
    """Codes the generator writes for a contract field, checked against the contract's value set."""
    from ingestion.contracts import contract_for

    allowed = contract_for(channel).field(field).values or ()
    unknown = sorted({v.lower() for v in values} - set(allowed))
    if unknown:
        raise ValueError(f"generator writes {unknown} for {channel}.{field}, not in its contract {allowed}")
    return values


@dataclass(frozen=True)
class MessRates:
    """Share of records (or files) that get each kind of mess. Tests measure them back."""

    duplicate_registration: float = 0.02  # persons registered twice (second member id, name typo, other email case)
    duplicate_unlinked: float = 0.5  # of those, share registered with a new phone and card and no email
    email_case_or_space: float = 0.10  # emails written with upper case or stray spaces
    email_domain_typo: float = 0.01  # gmial.com, qq.con, ...
    phone_other_format: float = 0.60  # phones written in a format other than plain 11 digits
    name_typo: float = 0.05  # call-center / duplicate names with a typo
    web_duplicate_event: float = 0.005  # tracker retries: same event twice in a file
    social_duplicate: float = 0.003  # export repeats an interaction
    store_redelivered_file: float = 0.02  # a store-day file delivered again unchanged
    store_corrected_file: float = 0.01  # a store-day file delivered again with corrected prices
    store_late_receipt: float = 0.01  # receipts synced late: they land in a file 1-3 days later
    web_broken_json: float = 0.001  # truncated JSON lines
    bad_timestamp: float = 0.001  # 'N/A', '2025-02-30 10:00' in store and call-center files
    non_numeric_amount: float = 0.001  # unit price like '12.5O'
    unknown_sku: float = 0.002  # SKUs not in the catalogue
    csv_broken_row: float = 0.0005  # a row with an unquoted delimiter (wrong column count)
    csv_bad_quote_file: float = 0.01  # store files whose first record has text after a closing quote
    csv_open_quote_file: float = 0.005  # store files whose last record opens a quote it never closes
    csv_mixed_line_endings: float = 0.02  # call-center files written with CRLF but one LF line
    json_invalid_utf8_file: float = 0.02  # web event files with one line holding a byte that is not UTF-8
    missing_product_name: float = 0.01
    missing_user_agent: float = 0.02
    # Contacts shared by different people (docs/identity.md: the guard that keeps them from linking).
    placeholder_phone: float = 0.02  # persons who give a dummy mobile (registry and tills): a few values, dozens each
    placeholder_email: float = 0.015  # persons who give a throwaway email to the registry
    household_landline: float = 0.03  # persons sharing a family landline with 1-3 others
    shop_phone_store_share: float = 0.34  # stores whose staff type the shop's phone for anonymous customers
    shop_phone_receipt: float = 0.6  # of anonymous receipts at those stores, share that get it


@dataclass(frozen=True)
class GeneratorConfig:
    out: Path
    customers: int = 10_000
    days: int = 365
    seed: int = 42
    start: dt.date = dt.date(2025, 1, 1)
    stores: int = 12
    products: int = 400
    churn_share: float = 0.20  # of persons active at the start, share who stop buying in the window
    signup_share: float = 0.30  # persons who sign up during the window
    excel_stores: int = 1  # the last stores (franchises) send Excel workbooks instead of CSV
    registry_encoding: str = "gbk"  # the loyalty registry exports GBK, as Chinese CRM systems often do
    mess: MessRates = field(default_factory=MessRates)

    @property
    def extracts(self) -> Path:
        return self.out / "extracts"

    @property
    def truth(self) -> Path:
        return self.out / "truth"

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    def as_dict(self) -> dict:
        d = asdict(self)
        del d["out"]  # where the files are is not part of what they are
        d["start"] = self.start.isoformat()
        return d
