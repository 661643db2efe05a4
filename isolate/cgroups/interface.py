"""A container's cgroup: one interface over cgroup v2 and v1 (or hybrid).

`create(limits, parent)` makes a fresh cgroup for one container, applies
the limits and returns a Cgroup (CgroupV2 or CgroupV1, chosen by looking at
how this system mounts cgroups); `from_directories(directories)` gives one
for a cgroup made earlier (a detached container's, from its state record).
Both backends offer the same methods:

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
import re
import warnings

from isolate.cgroups import files, v1
from isolate._util import mountinfo
from isolate.cgroups.stats import Stats
from isolate.cgroups.v1 import CgroupV1
from isolate.cgroups.v2 import CgroupV2
from isolate.errors import CgroupError
from isolate.cgroups.limits import CgroupLimit

__all__ = ["Stats", "create", "from_directories", "is_own", "unified"]

CGROUP_ROOT = "/sys/fs/cgroup"
_names = itertools.count()
#: The last part of every cgroup directory new_name() names.
_NAME = re.compile(r"isolate-[0-9]+-[0-9]+")


def unified() -> bool:
    """Whether /sys/fs/cgroup is cgroup v2 alone (not v1, not hybrid)."""
    return _fstype(CGROUP_ROOT) == "cgroup2"


def _fstype(path: str) -> str:
    return next((mount.fstype for mount in mountinfo.mounts() if mount.point == path), "")


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


def is_own(directory: str) -> bool:
    """Whether `directory` is one isolate names (new_name): a normalised
    `isolate-PID-N` path below the cgroup mount, never the host's cgroup
    or a service's."""
    return (os.path.normpath(directory) == directory and directory.startswith(CGROUP_ROOT + "/")
            and _NAME.fullmatch(os.path.basename(directory)) is not None)


def from_directories(directories: list[str]) -> CgroupV1 | CgroupV2:
    """The backend object of a cgroup known only by its directories (its
    directories(), as a detached container's state record keeps them)."""
    if unified():
        return CgroupV2(directories[0])
    mounts = v1.hierarchies()
    return CgroupV1({controller: directory for directory in directories
                     for controller, mount in mounts.items()
                     if directory.startswith(mount + "/")})


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
