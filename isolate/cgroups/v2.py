"""The cgroup v2 (unified hierarchy) backend.

One directory per container.  Its controllers must be enabled in the
parent's cgroup.subtree_control, which v2 allows only in a cgroup without
processes of its own (the "no internal processes" rule): when the default
parent, the caller's own cgroup, holds the caller, that is refused with an
error saying what to do (name a `cgroup_parent` without processes, such as
a delegated subtree, or run the caller in a leaf cgroup of its own).
"""
from __future__ import annotations

import errno
import os
import time

from isolate.cgroups import files
from isolate.cgroups.stats import Stats
from isolate.errors import CgroupError
from isolate.cgroups.limits import CgroupLimit

ROOT = "/sys/fs/cgroup"


class CgroupV2:
    """A container's cgroup in the unified hierarchy."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<CgroupV2 {self.path}>"

    @classmethod
    def create(cls, limits: CgroupLimit, parent: str | None, name: str) -> CgroupV2:
        """Make `name` under `parent` (default: our own cgroup), with limits."""
        base = os.path.normpath(ROOT + (parent if parent is not None else files.own_path()))
        _enable(base, limits.controllers())
        files.make_dir(os.path.join(base, name))
        group = cls(os.path.join(base, name))
        try:
            group.apply(limits)
        except BaseException:
            group.remove()
            raise
        return group

    def procs_paths(self) -> list[str]:
        return [self._file("cgroup.procs")]

    def directories(self) -> list[str]:
        return [self.path]

    def apply(self, limits: CgroupLimit) -> None:
        """Write every limit that is set (a live update leaves the rest)."""
        for name, value in _settings(limits):
            files.write(self._file(name), value)

    def stats(self) -> Stats:
        cpu = files.keyed(self._file("cpu.stat"))
        io = [files.keyed_line(line) for line in _lines(self._file("io.stat"))]
        return Stats(
            memory_current=files.read_int(self._file("memory.current")),
            memory_peak=files.read_int(self._file("memory.peak")),
            cpu_usage_ns=cpu["usage_usec"] * 1000 if "usage_usec" in cpu else None,
            pids_current=files.read_int(self._file("pids.current")),
            io_read_bytes=sum(d.get("rbytes", 0) for d in io) if io else None,
            io_write_bytes=sum(d.get("wbytes", 0) for d in io) if io else None,
            oom_kills=files.keyed(self._file("memory.events")).get("oom_kill"),
        )

    def oom_killed(self) -> bool:
        return bool(files.keyed(self._file("memory.events")).get("oom_kill"))

    def freeze(self) -> None:
        files.write(self._file("cgroup.freeze"), 1)
        self._wait_frozen(1)

    def thaw(self) -> None:
        files.write(self._file("cgroup.freeze"), 0)
        self._wait_frozen(0)

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (cgroup.kill, Linux 5.14+)."""
        if os.path.exists(self._file("cgroup.kill")):
            files.write(self._file("cgroup.kill"), 1)
            return
        # Frozen, nothing forks; a frozen task still dies of SIGKILL on v2.
        self.freeze()
        files.kill_all(self.path)
        self.thaw()

    def remove(self) -> None:
        """Kill what is left, then remove the directory."""
        if not os.path.isdir(self.path):
            return
        if files.procs(self.path):
            self.kill()
        files.remove_dir(self.path)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _wait_frozen(self, state: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while files.keyed(self._file("cgroup.events")).get("frozen") != state:
            if time.monotonic() > deadline:
                raise CgroupError(errno.ETIMEDOUT, f"{self.path} did not {'freeze' if state else 'thaw'}")
            time.sleep(0.001)


def _enable(base: str, controllers: frozenset[str]) -> None:
    """Enable `controllers` for the children of `base`."""
    available = set(files.read(os.path.join(base, "cgroup.controllers")).split())
    missing = controllers - available
    if missing:
        raise CgroupError(errno.ENOTSUP, f"controller(s) {', '.join(sorted(missing))} are not "
                          f"available in {base} (cgroup.controllers: {' '.join(sorted(available)) or 'none'})")
    if not controllers:
        return
    # Checked here rather than left to the kernel, which refuses domain
    # controllers (memory, cpu, io) when they are enabled but threaded
    # ones (pids, cpuset) only when the child is joined.
    if base != ROOT and files.procs(base):
        raise _internal_processes(base, controllers)
    enabled = set(files.read(os.path.join(base, "cgroup.subtree_control")).split())
    wanted = controllers - enabled
    if not wanted:
        return
    try:
        files.write(os.path.join(base, "cgroup.subtree_control"),
                    " ".join(f"+{c}" for c in sorted(wanted)))
    except CgroupError as exc:
        if exc.errno != errno.EBUSY:
            raise
        raise _internal_processes(base, wanted) from None


def _internal_processes(base: str, controllers: set[str] | frozenset[str]) -> CgroupError:
    return CgroupError(errno.EBUSY, f"cannot enable {', '.join(sorted(controllers))} for the children "
                       f"of {base}: it holds processes, and cgroup v2 lets only a cgroup without "
                       f"processes give controllers to its children. Pass cgroup_parent= a "
                       f"cgroup without processes (a delegated subtree), or run the caller in a "
                       f"leaf cgroup of its own")


def _settings(limits: CgroupLimit) -> list[tuple[str, str]]:
    """(file, value) for each limit that is set, in a valid order."""
    out: list[tuple[str, str]] = []
    if limits.cpuset is not None:
        out.append(("cpuset.cpus", limits.cpuset))
    if limits.cpuset_mems is not None:
        out.append(("cpuset.mems", limits.cpuset_mems))
    if limits.memory is not None:
        out.append(("memory.max", str(limits.memory)))
    if limits.memory_high is not None:
        out.append(("memory.high", str(limits.memory_high)))
    if limits.memory_swap is not None:
        out.append(("memory.swap.max", str(limits.memory_swap - limits.memory)))
    if limits.cpu is not None:
        out.append(("cpu.max", f"{limits.cpu_quota()} {limits.cpu_period}"))
    if limits.cpu_weight is not None:
        out.append(("cpu.weight", str(limits.cpu_weight)))
    if limits.pids is not None:
        out.append(("pids.max", str(limits.pids)))
    if limits.io_weight is not None:
        out.append(("io.weight", f"default {limits.io_weight}"))
    for device, items in limits.io_max:
        out.append(("io.max", device + " " + " ".join(f"{k}={v}" for k, v in items)))
    return out


def _lines(path: str) -> list[str]:
    try:
        return files.read(path).splitlines()
    except OSError:
        return []

