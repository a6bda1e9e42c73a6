"""CPU time and peak memory of process trees, read from ``/proc`` (Linux; no psutil here).

CPU is user + system time in seconds; a tree is a process and every descendant alive when it
is read. Children that exit are counted through their parent's ``cutime``/``cstime`` once it
has reaped them. Peak memory is ``VmHWM`` (the resident set's high-water mark) in MiB.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    cpu: float  # own user + system seconds
    children_cpu: float  # reaped children's user + system seconds


def stat(pid: int) -> Stat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces or parentheses: fields start after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return Stat(pid, int(fields[1]), (utime + stime) / TICK, (cutime + cstime) / TICK)


def named(name: str) -> list[int]:
    """Pids of every process whose command name is ``name`` (e.g. "postgres")."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if comm == name:
                found.append(int(entry.name))
    return found


def backends(database: str) -> list[int]:
    """PostgreSQL server processes serving connections to ``database`` (on this host)."""
    found = []
    for pid in named("postgres"):
        try:
            cmdline = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if f" {database} ".encode() in cmdline:
            found.append(pid)
    return found


class CpuMeter:
    """CPU used since construction by a changing set of processes, each counted from when it
    was first seen (processes that exit in between are lost: use it for long-lived ones)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.start = self._snapshot()

    def _snapshot(self) -> dict[int, float]:
        found = {}
        for pid in self.pids():
            info = stat(pid)
            if info is not None:
                found[pid] = info.cpu
        return found

    def used(self) -> float:
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self._snapshot().items())


def descendants(root: int) -> list[int]:
    """``root`` and every live descendant (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = stat(int(entry.name))
            if info is not None:
                children.setdefault(info.ppid, []).append(info.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds used so far by the trees under ``roots`` (live processes + reaped ones)."""
    total = 0.0
    for root in roots:
        for pid in descendants(root):
            info = stat(pid)
            if info is not None:
                total += info.cpu + info.children_cpu
    return total


def peak_rss_mib(pid: int) -> float:
    """``VmHWM`` of one process in MiB (0 when it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def worker_peak_rss(roots: list[int]) -> float:
    """The largest peak RSS among the processes that do the work.

    For a Celery worker those are the pool's children (the main process only hands out
    tasks); a root without children is a worker itself.
    """
    peaks: list[float] = []
    for root in roots:
        tree = descendants(root)
        workers = tree[1:] or tree
        peaks.extend(peak_rss_mib(pid) for pid in workers)
    return max(peaks, default=0.0)
