"""Keyed hashes of personal data, computed inside DuckDB, and which columns hold personal data.

A keyed hash is HMAC-SHA256 with the deployment's secret: the same email gives the same hash in every
table and every export (so joins still work), but without the secret nobody can test a guess.
Which columns are personal is declared once, in dbt (`meta: {pii: true}` on the column).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

MASK_MACRO = "crm_mask"
_BLOCK = 64  # SHA-256 block size


class MaskingKeyMissing(RuntimeError):
    """Masked output was asked for without a secret."""


def define_mask(con: duckdb.DuckDBPyConnection, key: str) -> None:
    """Create the session macro `crm_mask(value)` = hex HMAC-SHA256(key, value as text); NULL stays NULL.

    A TEMP macro: it lives in this connection only, so the key is never written to a database file.
    """
    if not key:
        raise MaskingKeyMissing("no masking key: set CRM_MASKING_KEY (or let `crm` create one)")
    secret = key.encode()
    if len(secret) > _BLOCK:
        import hashlib

        secret = hashlib.sha256(secret).digest()
    secret = secret.ljust(_BLOCK, b"\0")
    inner = bytes(b ^ 0x36 for b in secret).hex()
    outer = bytes(b ^ 0x5C for b in secret).hex()
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO {MASK_MACRO}(v) AS "
        f"CASE WHEN v IS NULL THEN NULL ELSE sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}') || encode(CAST(v AS VARCHAR))))) END"
    )


def personal_columns(manifest: Path) -> dict[str, set[str]]:
    """ "schema.table" -> columns tagged `meta: {pii: true}` in the dbt project, from its manifest."""
    return tagged_columns(manifest, "pii")


def tagged_columns(manifest: Path, meta_key: str) -> dict[str, set[str]]:
    """ "schema.table" -> columns whose dbt `meta` (or `config.meta`) sets `meta_key`, from the manifest."""
    found: dict[str, set[str]] = {}
    for node in json.loads(manifest.read_text())["nodes"].values():
        if node["resource_type"] not in ("model", "seed", "snapshot"):
            continue
        columns = {
            name
            for name, col in node["columns"].items()
            if (col.get("meta") or {}).get(meta_key) or (col.get("config", {}).get("meta") or {}).get(meta_key)
        }
        if columns:
            found[f"{node['schema']}.{node.get('alias') or node['name']}"] = columns
    return found


@dataclass(frozen=True)
class MaskedSelect:
    relation: str
    items: str  # every column of the relation, the personal ones through `crm_mask` when masked
    masked_columns: list[str]

    @property
    def query(self) -> str:
        return f"SELECT {self.items} FROM {self.relation}"

    @property
    def plain(self) -> str:
        """The same rows unmasked: what an export fingerprints (a mask depends on value and key only)."""
        return f"SELECT * FROM {self.relation}"

    def where(self, condition: str) -> str:
        """The masked rows whose unmasked columns (qualified `_row.`) meet `condition`: only those are masked."""
        return f"SELECT {self.items} FROM {self.relation} AS _row WHERE {condition}"


def masked_select(con: duckdb.DuckDBPyConnection, relation: str, personal: set[str], masked: bool) -> MaskedSelect:
    """SELECT of every column of `relation`, the personal ones through `crm_mask` when `masked`."""
    columns = [r[0] for r in con.execute(f"DESCRIBE {relation}").fetchall()]
    masked_here = [c for c in columns if masked and c in personal]
    items = [f'{MASK_MACRO}("{c}") AS "{c}"' if c in masked_here else f'"{c}"' for c in columns]
    return MaskedSelect(relation, ", ".join(items), masked_here)


def keyed_hash(key: str, value: str) -> str:
    """The same HMAC-SHA256 as `crm_mask`, in Python (audit entries)."""
    import hashlib
    import hmac

    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
