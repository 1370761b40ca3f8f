"""How people and systems garble identifiers: phone formats, email case and typos, name typos."""

from __future__ import annotations

import numpy as np

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
DOMAIN_TYPOS = {
    "gmail.com": "gmial.com",
    "qq.com": "qq.con",
    "163.com": "163.cm",
    "outlook.com": "outlok.com",
    "126.com": "126.con",
    "sina.com": "sina.cn.com",
    "foxmail.com": "foxmial.com",
}


def _mobile_formats(p: str) -> list[str]:
    return [
        p,
        f"+86 {p[:3]} {p[3:7]} {p[7:]}",
        f"0086-{p}",
        f"86 {p}",
        f"{p[:3]}-{p[3:7]}-{p[7:]}",
        f"{p} ",
        p.translate(FULL_WIDTH),
        f"(+86){p}",
        f"+86{p}",
    ]


def phone_variants(phones: np.ndarray, rng: np.random.Generator, other_format_rate: float) -> np.ndarray:
    """Write each phone as a till, agent or web form would: mostly plain, else one of many shapes."""
    out = phones.copy()
    messy = rng.random(len(phones)) < other_format_rate
    choice = rng.integers(1, 9, len(phones))
    for i in np.flatnonzero(messy):
        p = phones[i]
        if p.isdigit() and len(p) == 11:
            out[i] = _mobile_formats(p)[choice[i]]
        elif p.startswith("0"):  # landline: with or without dash, with +86 and no trunk zero
            area, num = p.split("-")
            out[i] = [f"({area}) {num}", f"+86 {area[1:]} {num}", f"{area}{num}", p][choice[i] % 4]
        else:  # foreign numbers keep their country code, spacing varies
            out[i] = [p.replace(" ", ""), p.replace("+", "00"), p][choice[i] % 3]
    return out


def email_variants(emails: np.ndarray, rng: np.random.Generator, case_rate: float, typo_rate: float) -> np.ndarray:
    out = emails.copy()
    r = rng.random(len(emails))
    for i in np.flatnonzero(r < case_rate):
        e = out[i]
        out[i] = [e.upper(), e.title(), f" {e}", f"{e} ", e[:1].upper() + e[1:]][i % 5]
    for i in np.flatnonzero((r >= case_rate) & (r < case_rate + typo_rate)):
        local, domain = out[i].split("@")
        out[i] = f"{local}@{DOMAIN_TYPOS.get(domain, domain)}"
    return out


def name_typo(name: str, rng: np.random.Generator) -> str:
    """A plausible typo: swapped letters or case for romanized names, a homophone for Chinese ones."""
    if name.isascii():
        if len(name) > 3 and rng.random() < 0.5:
            i = int(rng.integers(1, len(name) - 2))
            return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
        return name.lower() if rng.random() < 0.5 else f"  {name.upper()}"
    homophones = {"伟": "玮", "芳": "方", "静": "靜", "丽": "莉", "明": "铭", "华": "化", "军": "君", "杰": "洁"}
    for a, b in homophones.items():
        if a in name:
            return name.replace(a, b, 1)
    return name + " "
