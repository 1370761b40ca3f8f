"""The canonical contract of every channel: the one place that ingestion, the generator,
validation and the docs derive their field names, types and rules from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Contract type -> DuckDB column type of the raw table.
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "decimal": "DECIMAL(18,4)",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
    "boolean": "BOOLEAN",
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    required: bool
    description: str
    pii: bool = False
    # Allowed values (after lower-casing and trimming) or numeric range; None = free.
    values: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    # A required field the loader can derive when a source does not map it.
    derivable: bool = False

    def __post_init__(self) -> None:
        if self.type not in DUCKDB_TYPES:
            raise ValueError(f"field {self.name}: unknown contract type {self.type!r}")

    @property
    def duckdb_type(self) -> str:
        return DUCKDB_TYPES[self.type]


@dataclass(frozen=True)
class Contract:
    channel: str
    description: str
    event_time: str  # the timestamp/date field whose local date is the partition key
    key: tuple[str, ...]  # business key: a later delivery of the same key supersedes
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(names) != len(set(names)):
            raise ValueError(f"contract {self.channel}: duplicate field names")
        for name in (self.event_time, *self.key):
            if not self.field(name).required:
                raise ValueError(f"contract {self.channel}: {name} is a key, it must be required")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"contract {self.channel} has no field {name!r}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    @property
    def must_map(self) -> list[str]:
        """Required fields a source has to map (the rest the loader can derive)."""
        return [f.name for f in self.fields if f.required and not f.derivable]


def _f(name: str, type_: str, required: bool, description: str, **kw: Any) -> Field:
    return Field(name, type_, required, description, **kw)


PAYMENT_METHODS = ("card", "cash", "wechat_pay", "alipay", "voucher", "other")
WEB_EVENT_TYPES = ("page_view", "product_view", "search", "add_to_cart", "checkout", "purchase", "login")
SOCIAL_TYPES = ("post", "comment", "like", "share", "mention", "dm")
SOCIAL_PLATFORMS = ("weibo", "wechat", "douyin", "xiaohongshu", "instagram", "facebook", "x")
GENDERS = ("f", "m", "x")
CHANNELS = ("web", "store", "call_center", "social", "app", "referral")
CONTACT_CHANNELS = ("email", "sms", "phone", "app", "mail", "other")

CONTRACTS: dict[str, Contract] = {
    c.channel: c
    for c in (
        Contract(
            channel="web",
            description="Clickstream events from the web shop: one row per event.",
            event_time="event_at",
            key=("event_id",),
            fields=(
                _f("event_id", "string", True, "Unique id of the event from the tracker."),
                _f("event_at", "timestamp", True, "When the event happened (ISO 8601, with zone)."),
                _f("event_type", "string", True, "Kind of event.", values=WEB_EVENT_TYPES),
                _f("cookie_id", "string", True, "Anonymous browser cookie id."),
                _f("session_id", "string", False, "Tracker's session id, if it sends one."),
                _f("customer_ref", "string", False, "Shop account id once the visitor logged in."),
                _f("email", "string", False, "Login email seen on the event.", pii=True),
                _f("page_url", "string", False, "URL of the page."),
                _f("sku", "string", False, "Product SKU for product, cart and purchase events."),
                _f("quantity", "integer", False, "Units for cart and purchase events."),
                _f("unit_price", "decimal", False, "Unit price for cart and purchase events."),
                _f("currency", "string", False, "ISO 4217 currency of unit_price."),
                _f("order_id", "string", False, "Order id on checkout and purchase events."),
                _f("search_query", "string", False, "Search terms on search events."),
                _f("utm_source", "string", False, "Campaign source."),
                _f("utm_medium", "string", False, "Campaign medium."),
                _f("utm_campaign", "string", False, "Campaign name."),
                _f("user_agent", "string", False, "Browser user agent."),
            ),
        ),
        Contract(
            channel="store",
            description="Point-of-sale receipt lines from the store tills: one row per line; returns are negative quantities.",
            event_time="ordered_at",
            key=("order_id", "line_number"),
            fields=(
                _f("order_id", "string", True, "Receipt / invoice number."),
                _f(
                    "line_number",
                    "integer",
                    True,
                    "Line on the receipt; numbered in file order within the receipt when the source has none.",
                    derivable=True,
                ),
                _f("ordered_at", "timestamp", True, "Time of sale (store local time unless the value has a zone)."),
                _f("sku", "string", True, "Stock code of the item."),
                _f("product_name", "string", False, "Item description as printed."),
                _f("category", "string", False, "Product category."),
                _f("quantity", "integer", True, "Units; negative for returns and cancellations."),
                _f("unit_price", "decimal", True, "Price of one unit."),
                _f("discount", "decimal", False, "Discount on the line (money, positive)."),
                _f("currency", "string", False, "ISO 4217 currency."),
                _f("store_id", "string", False, "Store code."),
                _f("customer_ref", "string", False, "Customer id of the retailer's system."),
                _f("loyalty_card", "string", False, "Loyalty card number shown at the till.", pii=True),
                _f("phone", "string", False, "Phone given at the till.", pii=True),
                _f("payment_method", "string", False, "How the receipt was paid.", values=PAYMENT_METHODS),
                _f("country", "string", False, "Customer country, where the source gives one."),
            ),
        ),
        Contract(
            channel="call_center",
            description="Call-center contacts: one row per call.",
            event_time="started_at",
            key=("call_id",),
            fields=(
                _f("call_id", "string", True, "Unique id of the call."),
                _f("started_at", "timestamp", True, "Call start."),
                _f("ended_at", "timestamp", False, "Call end."),
                _f("phone", "string", False, "Caller's phone as captured (any format).", pii=True),
                _f("customer_ref", "string", False, "Customer id if the agent looked the caller up."),
                _f("queue", "string", False, "Queue the call went to."),
                _f("agent_id", "string", False, "Agent who answered."),
                _f("reason", "string", False, "Contact reason."),
                _f("resolution", "string", False, "Outcome of the call."),
                _f(
                    "csat",
                    "integer",
                    False,
                    "Satisfaction score 1-5 from the post-call survey.",
                    min_value=1,
                    max_value=5,
                ),
                _f("notes", "string", False, "Agent's free-text notes.", pii=True),
            ),
        ),
        Contract(
            channel="social",
            description="Social-media interactions with the brand: posts, comments, likes, shares, mentions and DMs.",
            event_time="occurred_at",
            key=("interaction_id",),
            fields=(
                _f("interaction_id", "string", True, "Unique id from the platform export."),
                _f("occurred_at", "timestamp", True, "When it happened."),
                _f("platform", "string", True, "Social platform.", values=SOCIAL_PLATFORMS),
                _f("handle", "string", True, "User's handle on the platform.", pii=True),
                _f("interaction_type", "string", True, "Kind of interaction.", values=SOCIAL_TYPES),
                _f("text", "string", False, "Text of the post, comment or message.", pii=True),
                _f("parent_id", "string", False, "Interaction this one replies to."),
                _f("linked_phone", "string", False, "Phone the user shared (e.g. in a DM).", pii=True),
                _f("linked_email", "string", False, "Email the user shared.", pii=True),
            ),
        ),
        Contract(
            channel="customers",
            description="Customer profile / loyalty registry: one row per profile version.",
            event_time="updated_at",
            key=("customer_ref", "updated_at"),
            fields=(
                _f("customer_ref", "string", True, "Customer id of the registry."),
                _f("updated_at", "timestamp", True, "When this version of the profile was written."),
                _f("full_name", "string", False, "Name as registered.", pii=True),
                _f("gender", "string", False, "f, m or x.", values=GENDERS),
                _f("birth_date", "date", False, "Date of birth.", pii=True),
                _f("email", "string", False, "Email as registered.", pii=True),
                _f("phone", "string", False, "Phone as registered (any format).", pii=True),
                _f("region", "string", False, "Region / province."),
                _f("city", "string", False, "City."),
                _f("loyalty_card", "string", False, "Loyalty card number.", pii=True),
                _f("tier", "string", False, "Loyalty tier."),
                _f("signup_channel", "string", False, "Channel of sign-up.", values=CHANNELS),
                _f("signup_date", "date", False, "Date of sign-up."),
                _f("marketing_consent", "boolean", False, "May we contact for marketing?"),
                _f("consent_updated_at", "timestamp", False, "When consent was last given or withdrawn."),
            ),
        ),
        Contract(
            channel="campaigns",
            description=(
                "Marketing campaign contacts: one row per customer contacted or held out, with the arm "
                "(offer or message variant) they were assigned to. The customer is named by any identifier "
                "the identity graph knows; the records link nobody (docs/decision_support.md)."
            ),
            event_time="assigned_at",
            key=("campaign_id", "contact_id"),
            fields=(
                _f("campaign_id", "string", True, "Id of the campaign (one experiment or send)."),
                _f(
                    "contact_id",
                    "string",
                    True,
                    "The campaign tool's id of the contact, one per customer in a campaign (a subscriber key; "
                    "map it to the same column as the customer identifier when the tool has none).",
                ),
                _f("arm", "string", True, "Offer or message variant; the source's control_arms name the holdout."),
                _f(
                    "assigned_at",
                    "timestamp",
                    True,
                    "When the customer was assigned (and, unless held out, contacted).",
                ),
                _f("customer_ref", "string", False, "Customer id of the registry or shop."),
                _f("loyalty_card", "string", False, "Loyalty card number.", pii=True),
                _f("email", "string", False, "Email the message went to.", pii=True),
                _f("phone", "string", False, "Phone the message or call went to (any format).", pii=True),
                _f("channel", "string", False, "How the customer was contacted.", values=CONTACT_CHANNELS),
                _f(
                    "offer_cost",
                    "decimal",
                    False,
                    "Cost of this contact (message plus offer), in money.",
                    min_value=0,
                    max_value=1e9,
                ),
                _f("campaign_name", "string", False, "Name of the campaign."),
                _f("offer", "string", False, "What the arm offered."),
            ),
        ),
    )
}

# Lineage columns every raw table carries after the contract fields.
LINEAGE_COLUMNS: dict[str, str] = {
    "_source": "VARCHAR",
    "_file": "VARCHAR",
    "_row_number": "BIGINT",
    "_row_hash": "VARCHAR",
    "_partition_date": "DATE",
    "_batch_id": "VARCHAR",
    "_loaded_at": "TIMESTAMPTZ",
}


def contract_for(channel: str) -> Contract:
    try:
        return CONTRACTS[channel]
    except KeyError:
        raise ValueError(f"unknown channel {channel!r}; known: {', '.join(CONTRACTS)}") from None


def contracts_markdown() -> str:
    """The contract reference, rendered for docs/contracts.md (kept in sync by a test)."""
    out = [
        "# Source contracts",
        "",
        "Generated from `ingestion/contracts.py` by `crm contracts`; do not edit by hand.",
        "",
    ]
    out += ["Every raw table also carries lineage: " + ", ".join(f"`{c}`" for c in LINEAGE_COLUMNS) + ".", ""]
    for c in CONTRACTS.values():
        out += [f"## `{c.channel}`", "", c.description, ""]
        out += [
            f"Partition date: local date of `{c.event_time}`. Business key: {', '.join(f'`{k}`' for k in c.key)}.",
            "",
        ]
        out += ["| field | type | required | PII | meaning |", "|---|---|---|---|---|"]
        for f in c.fields:
            rule = ""
            if f.values:
                rule = " One of: " + ", ".join(f"`{v}`" for v in f.values) + "."
            if f.min_value is not None:
                rule = f" Between {f.min_value:g} and {f.max_value:g}."
            out.append(
                f"| `{f.name}` | {f.type} | {'yes' if f.required else 'no'} | {'yes' if f.pii else ''} | {f.description}{rule} |"
            )
        out.append("")
    return "\n".join(out)
