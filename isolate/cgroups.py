"""A container's cgroup: one interface over cgroup v2 and v1 (or hybrid).

`create(limits, parent)` makes a fresh cgroup for one container, applies
the limits and returns a Cgroup (CgroupV2 or CgroupV1, chosen by looking at
how this system mounts cgroups).  Both backends offer the same methods:

    procs_paths()      cgroup.procs files the child's pid is written to,
                       while it waits on the sync pipe, before it runs
                       anything the user gave
    apply(limits)      write the limits (also a live update)
    stats()            a Stats snapshot
    oom_killed()       whether the kernel's OOM killer struck in it
    freeze() / thaw() / kill() / remove()

By default the cgroup lives beneath the calling process's own cgroup (so
a caller that is limited stays limited); `parent` names another place,
as a path in the cgroup hierarchy ("/system.slice/x.service").
"""
from __future__ import annotations

import itertools
import os
import warnings

from . import cgroup_files as files
from . import mountinfo
from .cgroup_stats import Stats
from .cgroup_v1 import CgroupV1
from .cgroup_v2 import CgroupV2
from .errors import CgroupError
from .limits import CgroupLimit

__all__ = ["Stats", "create", "unified"]

CGROUP_ROOT = "/sys/fs/cgroup"
_names = itertools.count()


def unified() -> bool:
    """Whether /sys/fs/cgroup is cgroup v2 alone (not v1, not hybrid)."""
    return _fstype(CGROUP_ROOT) == "cgroup2"


def _fstype(path: str) -> str:
    return next((mount.fstype for mount in mountinfo.mounts() if mount.point == path), "")


def remove_directories(directories: list[str]) -> None:
    """Remove a cgroup known only by its directories (a detached container's,
    from its record): SIGKILL what is still in it, then rmdir each."""
    for directory in directories:
        for pid in files.procs(directory):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    for directory in directories:
        files.remove_dir(directory)


def frozen(directories: list[str]) -> bool:
    """Whether a cgroup known by its directories is frozen (or freezing):
    v2's cgroup.freeze, or v1's freezer.state."""
    for directory in directories:
        for name, thawed in (("cgroup.freeze", "0"), ("freezer.state", "THAWED")):
            path = os.path.join(directory, name)
            if os.path.exists(path) and files.read(path).strip() != thawed:
                return True
    return False


def new_name() -> str:
    """A cgroup name unique on this host for as long as we live."""
    return f"isolate-{os.getpid()}-{next(_names)}"


def create(limits: CgroupLimit, parent: str | None = None):
    """A new cgroup with `limits` applied; None if it could not be made and
    limits.on_unavailable is "warn" (a warning says why)."""
    backend = CgroupV2 if unified() else CgroupV1
    try:
        return backend.create(limits, parent, new_name())
    except CgroupError as exc:
        if limits.on_unavailable != "warn":
            raise
        warnings.warn(f"running without cgroup limits: {exc}", RuntimeWarning, stacklevel=3)
        return None
