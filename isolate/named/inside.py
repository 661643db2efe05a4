"""Reaching into a running named container from the host: its root
directory, paths resolved inside that root, and its id maps.

The container's root is PID 1's, reached through ``/proc/PID/root``.  A
path inside it is never resolved by the host's rules: an absolute symlink
there (``/etc/shadow``) means the container's file, and ``..`` stops at the
container's "/".  So every lookup is ``openat2(RESOLVE_IN_ROOT |
RESOLVE_NO_MAGICLINKS)`` from a descriptor of that root: the kernel treats
the descriptor as "/" for the whole walk, symlinks and ``..`` included,
and refuses ``/proc/N/root``-style magic links that would jump elsewhere.
Whatever the container does meanwhile (swapping a directory for a symlink)
changes what is found inside it, never makes a lookup leave it.

Everything is reached through a descriptor of PID 1's /proc directory,
opened before the record is checked against the kernel (opened_root()):
it names the recorded process, never a later one that got the same pid.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterator

from isolate._spawn import syscalls
from isolate.errors import ConfigError
from isolate.named.containers import running
from isolate.named.state import RUNNING, ContainerState, StateDir, StateError

__all__ = ["IdMap", "Pinned", "container_id", "container_path", "host_id", "open_in", "opened_root"]

#: (first id inside, first id outside, count) ranges, as /proc/PID/uid_map has them.
IdMap = list[tuple[int, int, int]]

#: How a lookup inside the container resolves: as if the root were "/", and
#: never through a /proc magic link.
_RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS
#: openat2 fails with EAGAIN when a rename raced the lookup; tries at most.
_TRIES = 32
#: What an id without a mapping shows as inside a user namespace.
OVERFLOW_ID = 65534


class Pinned:
    """A running container held for inspection: its `record`, `proc` a
    descriptor of PID 1's /proc directory and `root` an O_PATH descriptor
    of its root directory, both of that very process (see opened_root())."""

    def __init__(self, record: ContainerState, proc: int, root: int) -> None:
        self.record = record
        self.proc = proc
        self.root = root

    def open(self, name: str) -> int:
        """The file `name` of PID 1's /proc directory, opened to read;
        StateError once PID 1 has ended."""
        try:
            return os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.proc)
        except (FileNotFoundError, ProcessLookupError):
            raise StateError(f"container {self.record.name!r} is not running") from None

    def id_map(self, kind: str) -> IdMap:
        """The "uid" or "gid" map of PID 1's user namespace, as this process
        sees it (the identity when the container has no user namespace)."""
        with open(self.open(f"{kind}_map")) as f:
            return [(int(first), int(host), int(count))
                    for first, host, count in (line.split() for line in f)]


@contextlib.contextmanager
def opened_root(states: StateDir, name: str) -> Iterator[Pinned]:
    """The running container `name`, pinned (see Pinned) until the block ends.

    A /proc/PID directory opened once stays that process's: should it end
    and its pid be reused, reads through the descriptor fail (ESRCH)
    rather than reach the newcomer.  It is opened before the record is
    checked against the kernel, so it is the recorded process's."""
    record = running(states, name)
    try:
        proc = os.open(f"/proc/{record.pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StateError(f"container {name!r} is not running") from None
    try:
        if record.status() != RUNNING:
            raise StateError(f"container {name!r} is not running")
        try:
            root = os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc)
        except (FileNotFoundError, ProcessLookupError):
            raise StateError(f"container {name!r} is not running") from None
        try:
            yield Pinned(record, proc, root)
        finally:
            os.close(root)
    finally:
        os.close(proc)


def container_path(path: str) -> str:
    """`path` as a path inside the container: relative ones from its "/",
    normalised as docker cp does, by the text ("a/link/.." is "a"); a
    ConfigError for one that climbs above "/" (``../etc``), which could
    never lead outside the container anyway, but is a mistake."""
    if not path:
        raise ConfigError("path", "an empty path names nothing in the container")
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise ConfigError("path", f"{path!r} leads above the container's root ('..'); "
                                          f"give a path inside the container")
        elif part not in ("", "."):
            depth += 1
    return posixpath.normpath("/" + path)


def open_in(root: int, path: str, flags: int) -> int:
    """openat2 `path` with `flags` inside the container whose root is the
    descriptor `root` (RESOLVE_IN_ROOT: see the module's docstring);
    OSError as open(2) raises it."""
    for _ in range(_TRIES - 1):
        try:
            return syscalls.openat2(root, path.lstrip("/") or ".", flags, 0, _RESOLVE)
        except BlockingIOError:   # EAGAIN: a concurrent rename; the kernel asks to try again
            continue
    return syscalls.openat2(root, path.lstrip("/") or ".", flags, 0, _RESOLVE)


def container_id(ranges: IdMap, host_id: int) -> int:
    """The id inside the namespace of the host id `host_id`, or OVERFLOW_ID."""
    for first, outside_first, count in ranges:
        if outside_first <= host_id < outside_first + count:
            return first + host_id - outside_first
    return OVERFLOW_ID


def host_id(ranges: IdMap, inside_id: int) -> int | None:
    """The host id of the id `inside_id` of the namespace, or None if unmapped."""
    for first, outside_first, count in ranges:
        if first <= inside_id < first + count:
            return outside_first + inside_id - first
    return None

