"""Stats: what a container's cgroup reports, the same for v1 and v2."""
from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from isolate.cgroups.limits import CgroupLimit


@attrs.frozen
class Stats:
    """A snapshot of a container's cgroup (None: not available here)."""

    memory_current: int | None = None   #: bytes in use now
    memory_peak: int | None = None      #: the most bytes used at once
    cpu_usage_ns: int | None = None     #: CPU time used, all CPUs
    pids_current: int | None = None     #: processes and threads now
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    oom_kills: int | None = None        #: processes the OOM killer killed
    #: The container's limits, to read the usage against (Container.stats()).
    limits: CgroupLimit | None = None
