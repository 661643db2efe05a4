"""Pausing and resuming a named container (``isolate pause``, ``unpause``)
with the cgroup freezer, as docker does: every process in the container's
cgroup stops where it is, without a signal it could see or catch, until it
is thawed.

Only a container started with limits has a cgroup (its record keeps the
directories); one without cannot be paused, and the error says how to
get one.  A paused container still reads "running" in its record (its
processes live), and is shown as paused (isolate.named.cgroup.is_paused:
inspect's State.Paused, "Up 3 minutes (Paused)" in ps).  A signal sent to
it through kill_named or stop_named thaws it, as docker's kill and stop do
(isolate.named.containers).
"""
from __future__ import annotations

from isolate.cgroups import interface
from isolate.named.cgroup import cgroup_directories
from isolate.named.containers import running
from isolate.named.state import ContainerState, StateDir, StateError

__all__ = ["NO_CGROUP", "pause_named", "unpause_named"]

#: Why a container without a cgroup cannot be paused or measured, and what to do.
NO_CGROUP = ("it was started without limits, so it has no cgroup; start it with a limit "
             "(--memory, --cpus, --pids-limit; limits=CgroupLimit(...) in Python) to have one")


def pause_named(states: StateDir, name: str) -> None:
    """Freeze every process of the running container `name`."""
    record = running(states, name)
    directories = _directories(record, "pause")
    if interface.frozen(directories):
        raise StateError(f"container {name!r} is already paused")
    interface.from_directories(directories).freeze()


def unpause_named(states: StateDir, name: str) -> None:
    """Thaw the paused container `name`."""
    record = running(states, name)
    directories = _directories(record, "unpause")
    if not interface.frozen(directories):
        raise StateError(f"container {name!r} is not paused")
    interface.from_directories(directories).thaw()


def _directories(record: ContainerState, verb: str) -> list[str]:
    """The record's cgroup directories; StateError saying why there are none."""
    directories = cgroup_directories(record)
    if not directories:
        raise StateError(f"cannot {verb} container {record.name!r}: {NO_CGROUP}")
    return directories
