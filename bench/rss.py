"""Peak resident memory of a process tree (this process, dbt and any other child), sampled from
/proc by a separate sampler process.

A sampler thread would hold the GIL while it parses /proc and stall the measured process: with a
thread at 10 Hz, the BG/NBD fit (thousands of short NumPy calls) took 36 s instead of 1.3 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


class TreeRSS:
    """`with TreeRSS() as rss: ...; rss.peak(start, end)`: peak tree RSS in bytes between two times."""

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

    def read(self) -> list[tuple[float, int]]:
        """The samples so far (the sampler appends one line a tick)."""
        lines = Path(self._log.name).read_text().splitlines()
        self.samples = [(float(t), int(r)) for t, r in (line.split() for line in lines if line.count(" ") == 1)]
        return self.samples

    def peak(self, start: float, end: float) -> int:
        """The highest sample in [start, end]; for a stage shorter than a tick, the last one before it."""
        samples = self.read() if self._sampler.poll() is None else self.samples
        inside = [r for t, r in samples if start <= t <= end]
        return max(inside) if inside else next((r for t, r in reversed(samples) if t <= end), 0)


def tree_rss(root: int, exclude: int) -> int:
    """RSS in bytes of `root` and all its descendants except `exclude` (the sampler)."""
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
    total, frontier = 0, [root]
    while frontier:
        pid = frontier.pop()
        if pid == exclude:
            continue
        frontier.extend(children.get(pid, []))
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


if __name__ == "__main__":  # the sampler: `python rss.py ROOT_PID SECONDS` prints "time rss" lines
    root, every, me = int(sys.argv[1]), float(sys.argv[2]), os.getpid()
    while Path(f"/proc/{root}").exists():  # a killed benchmark leaves no sampler behind
        print(f"{time.time():.3f} {tree_rss(root, me)}", flush=True)
        time.sleep(every)
