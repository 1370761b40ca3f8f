"""Marketing audiences: the customers of one RFM segment, or those a follow-up is due for (browse
or cart abandonment, ml/triggers.py), that may be contacted on one channel.

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
    _register_who(con, spec, as_of)
    customers = "scoped.dim_customer" if spec.region else "marts.dim_customer"
    contact = CHANNEL_CONTACT[spec.channel]
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW audience AS
        WITH in_force AS (  -- the customer's version at the end of the as-of day
            SELECT * FROM {customers}
            WHERE valid_from < DATE '{as_of}' + INTERVAL 1 DAY
              AND (valid_to IS NULL OR valid_to >= DATE '{as_of}' + INTERVAL 1 DAY)
        )
        SELECT w.*, '{spec.channel}' AS channel, c.{contact} AS contact,
               c.consent_updated_at, c.customer_version_key
        FROM audience_who AS w
        INNER JOIN in_force AS c ON c.customer_key = w.customer_key
        WHERE c.has_marketing_consent AND c.{contact} IS NOT NULL
        ORDER BY w.customer_key
    """)
    return {
        "audience": masked_select(con, "audience", {"contact"} | personal.get("marts.dim_customer", set()), spec.masked)
    }


def _register_who(con: duckdb.DuckDBPyConnection, spec: ExportSpec, as_of: object) -> None:
    """View `audience_who`: customer_key and what put them in the audience (segment, or trigger)."""
    if spec.trigger:
        from ml.config import TriggerConfig
        from ml.data import abandoned_sessions
        from ml.triggers import TRIGGERS, due

        if spec.trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {spec.trigger!r}; triggers: {', '.join(TRIGGERS)}")
        defaults = TriggerConfig()
        sessions = abandoned_sessions(con, as_of, defaults.lookback_days)  # type: ignore[arg-type]
        who = due(sessions.filter(sessions["trigger"] == spec.trigger), spec.within_hours or defaults.within_hours)
        con.register("audience_triggered", who.to_arrow())
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW audience_who AS SELECT *, DATE '{as_of}' AS as_of_date FROM audience_triggered"
        )
        return
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
    segment = (spec.segment or "").replace("'", "''")
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW audience_who AS
        SELECT customer_key, segment, as_of_date FROM ml.rfm_segments
        WHERE as_of_date = (SELECT max(as_of_date) FROM ml.rfm_segments WHERE as_of_date <= DATE '{as_of}')
          AND segment = '{segment}'
    """)
