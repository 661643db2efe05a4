"""A named container's cgroup, as its record names it: the directories
(checked to be isolate's own), whether the container is paused, and
thawing it.

Kept apart from isolate.named.containers so that what reads no more than
a record and the cgroup's files stays cheap: ``isolate ps`` loads this
module (and only when a running container has a cgroup) to show a paused
one as docker does, "Up 3 minutes (Paused)", without the spawn path that
containers.py imports.
"""
from __future__ import annotations

from isolate.cgroups import interface
from isolate.named.state import ContainerState, StateError

__all__ = ["cgroup_directories", "is_paused", "thaw"]


def cgroup_directories(record: ContainerState) -> list[str]:
    """The cgroup directories of a record, checked to be isolate's own: each
    an `isolate-PID-N` directory below /sys/fs/cgroup, so a record can never
    make exec or rm act on another cgroup (the host's, a service's)."""
    directories = record.config.get("cgroups", [])
    for directory in directories:
        if not isinstance(directory, str) or not interface.is_own(directory):
            raise StateError(f"container {record.name!r}: its record names {directory!r} as its "
                             f"cgroup, which is not a cgroup isolate made")
    return list(directories)


def is_paused(record: ContainerState) -> bool:
    """Whether the container of `record` has a cgroup, and it is frozen."""
    directories = cgroup_directories(record)
    return bool(directories) and interface.frozen(directories)


def thaw(record: ContainerState) -> None:
    """Thaw the container's cgroup if it is frozen.

    What a signal sent to a paused container needs, as docker has it (its
    daemon resumes the container after the kill): a frozen process meets
    the signal only once thawed; on cgroup v1 not even SIGKILL ends it
    before.  (v2's freezer lets a fatal signal through, not one that is caught.)
    """
    directories = cgroup_directories(record)
    if directories and interface.frozen(directories):
        interface.from_directories(directories).thaw()
