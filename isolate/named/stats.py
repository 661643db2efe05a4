"""What a named container uses, from its cgroup (``isolate stats``), in
docker stats' terms: CPU %, memory usage against a limit, processes and
block I/O.

A Sample is one reading of the container's cgroup, with the time it was
taken; CPU % needs two (cpu_percent()): the CPU time the cgroup used
between them over the time that passed, 100% being one CPU busy
throughout, as docker counts it.  Memory usage leaves out the page cache
the kernel can drop at once (inactive file pages), as docker does; the
limit is the container's memory limit, else the host's memory.

A container started without limits has no cgroup: its Sample has no
stats, and freezer.NO_CGROUP says how to get them.
"""
from __future__ import annotations

import os
import time

import attrs

from isolate.cgroups import files, interface
from isolate.cgroups.stats import Stats
from isolate.cgroups.v1 import CgroupV1
from isolate.cgroups.v2 import CgroupV2
from isolate.named.cgroup import cgroup_directories
from isolate.named.state import RUNNING, StateDir

__all__ = ["Sample", "cpu_percent", "host_memory", "sample"]


@attrs.frozen
class Sample:
    """One reading of a named container's cgroup.

    name: the container.  running: whether it runs.  stats: the cgroup's
    counters (None: the container has no cgroup).  memory_usage: bytes in
    use less inactive file pages.  memory_limit: its memory limit, or the
    host's memory.  taken: when (time.monotonic_ns()).
    """

    name: str
    running: bool
    stats: Stats | None
    memory_usage: int | None
    memory_limit: int
    taken: int

    @property
    def memory_percent(self) -> float | None:
        """Memory usage as a percentage of the limit."""
        if self.memory_usage is None or not self.memory_limit:
            return None
        return 100.0 * self.memory_usage / self.memory_limit


def sample(states: StateDir, name: str) -> Sample:
    """A reading of the cgroup of the container `name` now."""
    record = states.load(name)
    running = record.status() == RUNNING
    directories = cgroup_directories(record)
    limit = (record.config.get("limits") or {}).get("memory") or host_memory()
    if not directories:
        return Sample(name, running, None, None, limit, time.monotonic_ns())
    cgroup = interface.from_directories(directories)
    stats = cgroup.stats()
    taken = time.monotonic_ns()
    usage = stats.memory_current
    if usage is not None:
        usage = max(0, usage - _inactive_file(cgroup))
    return Sample(name, running, stats, usage, limit, taken)


def cpu_percent(before: Sample, after: Sample) -> float | None:
    """The CPU the container used between two samples, in percent of one
    CPU (200.0: two CPUs busy throughout); None when either has no figure."""
    if before.stats is None or after.stats is None:
        return None
    used_before, used_after = before.stats.cpu_usage_ns, after.stats.cpu_usage_ns
    elapsed = after.taken - before.taken
    if used_before is None or used_after is None or elapsed <= 0:
        return None
    return 100.0 * max(0, used_after - used_before) / elapsed


def host_memory() -> int:
    """The host's memory in bytes (MemTotal)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _inactive_file(cgroup: CgroupV1 | CgroupV2) -> int:
    """The inactive file pages in the cgroup's memory (memory.stat): page
    cache the kernel reclaims first, which docker does not count as use."""
    if isinstance(cgroup, CgroupV2):
        return files.keyed(os.path.join(cgroup.path, "memory.stat")).get("inactive_file", 0)
    directory = cgroup.dirs.get("memory")
    if directory is None:
        return 0
    return files.keyed(os.path.join(directory, "memory.stat")).get("total_inactive_file", 0)
