"""Peak resident memory of a process tree (this process, dbt and any other child), sampled from
/proc by a separate sampler process.

A sampler thread would hold the GIL while it parses /proc and stall the measured process: with a
thread at 10 Hz, the BG/NBD fit (thousands of short NumPy calls) took 36 s instead of 1.3 s.

The tree's RSS counts a page shared by several processes (Chromium's renderers and GPU process,
forked children) once per process. Its PSS divides each shared page among its sharers, so the
tree's PSS is the memory the tree holds. Reading PSS walks every page table (smaps_rollup), so it is
read only when the tree's RSS passes PSS_ABOVE; below that the RSS stands for it (PSS ≤ RSS), and the
peak PSS is exact whenever it passes PSS_ABOVE.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
PSS_ABOVE = 3 * 2**30


class TreeRSS:
    """`with TreeRSS() as rss: ...; rss.peaks_mib(start, end)`: peak tree RSS and PSS between two times."""

    def __init__(self, every: float = 0.1) -> None:
        self.every, self.samples = every, []

    def __enter__(self) -> TreeRSS:
        self._log = tempfile.NamedTemporaryFile(prefix="tree-rss-", suffix=".log", delete=False)
        self._sampler = subprocess.Popen(
            [sys.executable, __file__, str(os.getpid()), str(self.every)], stdout=self._log
        )
        return self

    def __exit__(self, *_: object) -> None:
        self._sampler.terminate()
        self._sampler.wait()
        self._log.close()
        self.read()
        Path(self._log.name).unlink(missing_ok=True)

    def read(self) -> list[tuple[float, int, int]]:
        """The samples so far (the sampler appends one line a tick): (time, rss, pss)."""
        lines = Path(self._log.name).read_text().splitlines()
        self.samples = [
            (float(t), int(r), int(p)) for t, r, p in (line.split() for line in lines if line.count(" ") == 2)
        ]
        return self.samples

    def peaks_mib(self, start: float, end: float) -> tuple[float, float]:
        """The highest RSS and PSS samples in [start, end], in MiB; for a stage shorter than a tick,
        the last ones before it."""
        samples = self.read() if self._sampler.poll() is None else self.samples
        inside = [s for s in samples if start <= s[0] <= end] or [s for s in samples if s[0] <= end][-1:]
        return max((s[1] for s in inside), default=0) / 2**20, max((s[2] for s in inside), default=0) / 2**20


def tree_processes(root: int, exclude: int) -> list[int]:
    """`root` and all its descendants except `exclude` (the sampler)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if pid != exclude:
            found.append(pid)
            frontier.extend(children.get(pid, []))
    return found


def tree_memory(root: int, exclude: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of the tree; the PSS is the RSS below PSS_ABOVE (module docstring)."""
    pids = tree_processes(root, exclude)
    rss = sum(_read(f"/proc/{pid}/statm", lambda text: int(text.split()[1]) * PAGE) for pid in pids)
    if rss <= PSS_ABOVE:
        return rss, rss
    return rss, sum(_read(f"/proc/{pid}/smaps_rollup", _pss) for pid in pids)


def _pss(smaps_rollup: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in smaps_rollup.splitlines() if line.startswith("Pss:"))


def _read(path: str, parse) -> int:
    """A process may end between listing and reading: it then holds nothing."""
    try:
        return parse(Path(path).read_text())
    except (OSError, IndexError, ValueError, StopIteration):
        return 0


if __name__ == "__main__":  # the sampler: `python rss.py ROOT_PID SECONDS` prints "time rss pss" lines
    root, every, me = int(sys.argv[1]), float(sys.argv[2]), os.getpid()
    while Path(f"/proc/{root}").exists():  # a killed benchmark leaves no sampler behind
        rss, pss = tree_memory(root, me)
        print(f"{time.time():.3f} {rss} {pss}", flush=True)
        time.sleep(every)
