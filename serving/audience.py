"""Marketing audiences: the customers of one RFM segment that may be contacted on one channel.

Consent is read from the SCD2 history in `dim_customer`, as of the published version's as-of date:
the version in force at the end of that day must carry marketing consent and a contact point for
the channel. The registry has one marketing consent for all channels (see docs/contracts.md), so
"allows contact on that channel" means: consent given, and an address on that channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from serving.masking import MaskedSelect, masked_select

if TYPE_CHECKING:
    from serving.export import ExportSpec

CHANNEL_CONTACT = {"email": "email", "sms": "phone_e164", "phone": "phone_e164"}


def audience_query(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, personal: dict[str, set[str]]
) -> dict[str, MaskedSelect]:
    """{"audience": its select} for `write_export`; the contact is masked unless asked not to be."""
    if spec.channel not in CHANNEL_CONTACT:
        raise ValueError(f"unknown channel {spec.channel!r}; channels: {', '.join(CHANNEL_CONTACT)}")
    as_of = con.execute("SELECT as_of_date FROM serving.publication").fetchall()[0][0]
    segments = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT segment FROM ml.rfm_segments WHERE as_of_date = "
            "(SELECT max(as_of_date) FROM ml.rfm_segments WHERE as_of_date <= ?) ORDER BY 1",
            [as_of],
        ).fetchall()
    ]
    if spec.segment not in segments:
        raise ValueError(f"unknown RFM segment {spec.segment!r} as of {as_of}; segments: {', '.join(segments)}")
    customers = "scoped.dim_customer" if spec.region else "marts.dim_customer"
    contact = CHANNEL_CONTACT[spec.channel]
    segment = (spec.segment or "").replace("'", "''")
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW audience AS
        WITH segment AS (
            SELECT customer_key, segment, as_of_date FROM ml.rfm_segments
            WHERE as_of_date = (SELECT max(as_of_date) FROM ml.rfm_segments WHERE as_of_date <= DATE '{as_of}')
              AND segment = '{segment}'
        ),
        in_force AS (  -- the customer's version at the end of the as-of day
            SELECT * FROM {customers}
            WHERE valid_from < DATE '{as_of}' + INTERVAL 1 DAY
              AND (valid_to IS NULL OR valid_to >= DATE '{as_of}' + INTERVAL 1 DAY)
        )
        SELECT s.customer_key, s.segment, '{spec.channel}' AS channel, c.{contact} AS contact,
               c.consent_updated_at, c.customer_version_key, s.as_of_date
        FROM segment AS s
        INNER JOIN in_force AS c ON c.customer_key = s.customer_key
        WHERE c.has_marketing_consent AND c.{contact} IS NOT NULL
        ORDER BY s.customer_key
    """)
    return {
        "audience": masked_select(con, "audience", {"contact"} | personal.get("marts.dim_customer", set()), spec.masked)
    }
