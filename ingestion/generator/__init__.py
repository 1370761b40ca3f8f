"""`crm generate`: realistic multi-channel extracts with planted structure and mess, plus ground truth."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from ingestion.generator.campaigns import campaign_truth, plan_campaigns, with_responses
from ingestion.generator.config import GeneratorConfig, MessRates
from ingestion.generator.extracts import ExtractWriter, set_mtime
from ingestion.generator.population import make_catalog, make_persons
from ingestion.generator.simulate import promotion_days, simulate_day

__all__ = ["GeneratorConfig", "MessRates", "generate", "sources_file_for"]

SAMPLE_SOURCES = Path(__file__).resolve().parents[1] / "examples" / "sample" / "sources.yml"


def generate(cfg: GeneratorConfig, on_day: Callable[[int], None] | None = None) -> dict:
    """Write `cfg.days` days of extracts under cfg.out/extracts and the truth under cfg.out/truth.

    Deterministic for a seed: one random stream, consumed in a fixed order. Streams day by day,
    so memory holds one day of events (plus one row of attributes per person).
    """
    for sub in (cfg.extracts, cfg.truth):
        if sub.exists():
            shutil.rmtree(sub)
    rng = np.random.default_rng(cfg.seed)
    persons = make_persons(cfg, rng)
    catalog = make_catalog(cfg, rng)
    writer = ExtractWriter(cfg, persons, catalog, rng)
    campaign_rng = np.random.default_rng([cfg.seed, 26])  # its own stream: the other channels stay as they were
    campaigns, listed = plan_campaigns(cfg, persons, campaign_rng), []
    rule_counts = np.zeros((len(catalog.rules), 3), dtype=np.int64)
    baskets = 0
    for d in range(cfg.days):
        day = with_responses(simulate_day(cfg, persons, catalog, rng, d), campaigns, catalog, persons, campaign_rng)
        writer.customers(day)
        writer.store(day)
        writer.web(day)
        writer.calls(day)
        writer.social(day)
        listed += [writer.campaign(c, day, campaign_rng) for c in campaigns if c.day == d]
        rule_counts += day.rule_counts
        baskets += day.baskets
        if on_day:
            on_day(d)
    writer.finish(rule_counts, baskets)
    if campaigns:
        contacts, effects = campaign_truth(campaigns, listed)
        contacts.write_csv(cfg.truth / "campaign_contacts.csv")
        effects.write_csv(cfg.truth / "campaign_effects.csv")
    (cfg.truth / "config.json").write_text(json.dumps(cfg.as_dict(), indent=2))
    write_calendar(cfg)
    files = sorted(p for p in cfg.extracts.rglob("*") if p.is_file())
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files), "baskets": baskets}


CALENDAR_AHEAD_DAYS = 366  # promotions are planned a year ahead: the forecasts' horizon sees them


def write_calendar(cfg: GeneratorConfig) -> Path:
    """extracts/calendar.csv: the planted promotion days, through a year after the data."""
    last = cfg.start + dt.timedelta(days=cfg.days - 1 + CALENDAR_AHEAD_DAYS)
    path = cfg.extracts / "calendar.csv"
    lines = ["date,event", *(f"{d},promotion" for d in promotion_days(cfg.start, last))]
    path.write_text("\n".join(lines) + "\n")
    set_mtime(path, cfg.start, 0.0)  # written before the data, like every delivery: same seed, same files
    return path


def sources_file_for(extracts: Path, dest: Path, start: dt.date) -> Path:
    """Write the sample's sources file with its paths pointing at `extracts` (a generator's output
    folder, whose first day is `start`) and its identity truth beside them, so the generated data
    can be run from anywhere."""
    doc = yaml.safe_load(SAMPLE_SOURCES.read_text())
    doc["partitions"]["start_date"] = start
    for source in doc["sources"]:
        source["path"] = str(extracts / source["path"].split("extracts/", 1)[1])
    doc["identity_truth"] = str(extracts.parent / "truth" / "identity.csv")
    doc["calendar"] = str(extracts / "calendar.csv")
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest
