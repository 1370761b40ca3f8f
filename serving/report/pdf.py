"""Print the report page to PDF with headless Chromium (Debian's `chromium`; `make setup` installs
it where missing). Chromium runs with its background networking off and a fresh profile, so it
asks the network for nothing, and waits for the page's scripts (the charts) before printing."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PRINT_TIMEOUT_SECONDS = 120
# Off: every connection Chromium makes on its own (updates, sync, field trials) on a closed network.
QUIET_FLAGS = [
    "--headless",
    "--no-sandbox",  # run as root in containers and CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class BrowserMissing(RuntimeError):
    """No Chromium to print with."""


def find_browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(
        "printing the report to PDF needs Chromium: `apt-get install chromium` (Debian; `make setup` does it "
        "when run as root), or leave out --pdf"
    )


def print_pdf(page: Path, pdf: Path, browser: str | None = None) -> Path:
    """Write `page` (a local HTML file) as `pdf`; raise with Chromium's output when it writes nothing."""
    browser = browser or find_browser()
    pdf.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="crm-report-chromium-") as profile:
        done = subprocess.run(
            [
                browser,
                *QUIET_FLAGS,
                f"--user-data-dir={profile}",
                "--no-pdf-header-footer",
                "--virtual-time-budget=15000",  # lets the page's scripts finish drawing before printing
                f"--print-to-pdf={pdf}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=PRINT_TIMEOUT_SECONDS,
            check=False,
        )
    if not pdf.exists() or pdf.stat().st_size == 0:
        raise RuntimeError(f"{browser} wrote no PDF of {page} (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return pdf
