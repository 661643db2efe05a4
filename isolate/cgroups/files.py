"""Reading and writing cgroup files, with errors that name the file.

Shared by both backends (v1.py, v2.py): every write that the
kernel refuses becomes a CgroupError naming the path, the value and the
errno, instead of a bare OSError from somewhere deep in a spawn.  Also
the kill both use where the kernel has no cgroup.kill (kill_all).
"""
from __future__ import annotations

import errno
import os
import signal
import time

from isolate.errors import CgroupError


def write(path: str, value: str | int) -> None:
    """Write `value` to the cgroup file `path` in one write(2)."""
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupError(exc.errno, f"open {path}: {exc.strerror}") from None
    try:
        os.write(fd, data)
    except OSError as exc:
        raise CgroupError(exc.errno, f"write {value!r} to {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def read(path: str) -> str:
    """The whole text of a cgroup file."""
    with open(path) as f:
        return f.read()


def read_int(path: str) -> int | None:
    """A file holding one number ("max" and missing files give None)."""
    try:
        text = read(path).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def keyed(path: str) -> dict[str, int]:
    """A flat-keyed file ("key value" per line), e.g. memory.events."""
    try:
        lines = read(path).splitlines()
    except OSError:
        return {}
    pairs = (line.split() for line in lines)
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def keyed_line(line: str) -> dict[str, int]:
    """The "key=value" pairs of a nested-keyed line, e.g. of io.stat."""
    pairs = (token.partition("=") for token in line.split())
    return {k: int(v) for k, sep, v in pairs if sep and v.isdigit()}


def make_dir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except OSError as exc:
        raise CgroupError(exc.errno, f"create cgroup {path}: {exc.strerror}") from None


def remove_dir(path: str, timeout: float = 5.0) -> None:
    """rmdir a cgroup, waiting while the kernel still counts dying tasks in it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(exc.errno, f"remove cgroup {path}: {exc.strerror}") from None
            time.sleep(0.001)


def procs(directory: str) -> list[int]:
    """The pids in a cgroup (its cgroup.procs)."""
    try:
        return [int(line) for line in read(os.path.join(directory, "cgroup.procs")).split()]
    except OSError:
        return []


def kill_all(directory: str, timeout: float = 5.0, rounds: int = 100) -> None:
    """SIGKILL every process in a cgroup until it is empty (processes may
    fork meanwhile), for `rounds` passes or `timeout` seconds at most."""
    deadline = time.monotonic() + timeout
    for _ in range(rounds):
        if not kill_listed(directory) or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def kill_listed(directory: str) -> list[int]:
    """SIGKILL the processes in a cgroup once; the pids it found there.

    A pid read from cgroup.procs may be reused before it is signalled, so
    each is pinned by a pidfd first, and signalled only if cgroup.procs,
    read again after that, still lists it: the pidfd then names that
    process, the one in the cgroup.
    """
    pidfds: dict[int, int] = {}
    for pid in procs(directory):
        try:
            pidfds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:   # gone already
            pass
    try:
        listed = procs(directory)
        for pid in set(listed) & set(pidfds):
            try:
                signal.pidfd_send_signal(pidfds[pid], signal.SIGKILL)
            except ProcessLookupError:   # exited since: its pid is another's now
                pass
    finally:
        for pidfd in pidfds.values():
            os.close(pidfd)
    return listed


def own_path(controller: str | None = None) -> str:
    """This process's cgroup path: v2's ("0::/x"), or a v1 controller's."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            names = controllers.split(",") if controllers else []
            if (controller is None and not controllers) or controller in names:
                return path
    raise CgroupError(errno.ENOENT, f"this process has no {controller or 'cgroup v2'} cgroup "
                         f"in /proc/self/cgroup")
