"""The cgroup v1 backend (also for hybrid systems, whose controllers are on v1).

v1 has one hierarchy per controller (or group of co-mounted controllers),
so a container's cgroup is one directory in each hierarchy it uses: those
its limits need, plus freezer (freeze, and a kill that misses nothing),
and memory, cpuacct, pids and blkio for statistics when present.  Limits
are given on v2's scale (limits.py) and converted here.
"""
from __future__ import annotations

import errno
import os
import time

from isolate.cgroups import files
from isolate._util import mountinfo
from isolate.cgroups.stats import Stats
from isolate.errors import CgroupError
from isolate.cgroups.limits import CgroupLimit

#: v2 controller names and the v1 controller that does the job.
V1_NAME = {"memory": "memory", "cpu": "cpu", "pids": "pids", "io": "blkio", "cpuset": "cpuset"}
#: Hierarchies joined whether or not a limit needs them.
ALWAYS = ("freezer", "memory", "cpuacct", "pids", "blkio")


def hierarchies() -> dict[str, str]:
    """Mount point of each mounted v1 controller ("memory" -> /sys/fs/cgroup/memory)."""
    found: dict[str, str] = {}
    for mount in mountinfo.mounts():
        if mount.fstype == "cgroup":
            for option in mount.super_options.split(","):
                found.setdefault(option, mount.point)
    return found


class CgroupV1:
    """A container's cgroup: one directory per v1 hierarchy it uses."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs   # controller -> directory (co-mounted ones share one)

    def __repr__(self) -> str:
        return f"<CgroupV1 {sorted(set(self.dirs.values()))}>"

    @classmethod
    def create(cls, limits: CgroupLimit, parent: str | None, name: str) -> CgroupV1:
        mounts = hierarchies()
        needed = {V1_NAME[c] for c in limits.controllers()}
        missing = needed - set(mounts)
        if missing:
            raise CgroupError(errno.ENOTSUP, f"cgroup v1 controller(s) {', '.join(sorted(missing))} "
                              f"are not mounted (see /proc/self/mountinfo)")
        group = cls({})
        try:
            for controller in sorted(needed | {c for c in ALWAYS if c in mounts}):
                group._make(controller, mounts[controller], parent, name)
            group.apply(limits)
        except BaseException:
            group.remove()
            raise
        return group

    def _make(self, controller: str, mount: str, parent: str | None, name: str) -> None:
        for directory in self.dirs.values():   # co-mounted with one made already
            if directory.startswith(mount + "/"):
                self.dirs[controller] = directory
                return
        base = mount + (parent if parent is not None else files.own_path(controller))
        directory = os.path.join(base, name)
        files.make_dir(directory)
        self.dirs[controller] = directory
        if controller == "cpuset":
            # A new v1 cpuset is empty, and no task may join it so: start
            # from the parent's CPUs and memory nodes.
            for key in ("cpuset.cpus", "cpuset.mems"):
                files.write(os.path.join(directory, key), files.read(os.path.join(base, key)).strip() or "\n")

    def procs_paths(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.directories()]

    def directories(self) -> list[str]:
        return sorted(set(self.dirs.values()))

    def apply(self, limits: CgroupLimit) -> None:
        for controller, name, value in _settings(limits):
            files.write(os.path.join(self.dirs[controller], name), value)

    def stats(self) -> Stats:
        return Stats(
            memory_current=self._int("memory", "memory.usage_in_bytes"),
            memory_peak=self._int("memory", "memory.max_usage_in_bytes"),
            cpu_usage_ns=self._int("cpuacct", "cpuacct.usage"),
            pids_current=self._int("pids", "pids.current"),
            io_read_bytes=self._io("Read"),
            io_write_bytes=self._io("Write"),
            oom_kills=self._oom_control().get("oom_kill"),
        )

    def oom_killed(self) -> bool:
        control = self._oom_control()
        if "oom_kill" in control:       # Linux 4.13+
            return control["oom_kill"] > 0
        return bool(self._int("memory", "memory.failcnt"))

    def freeze(self) -> None:
        self._freezer("FROZEN")

    def thaw(self) -> None:
        self._freezer("THAWED")

    def kill(self) -> None:
        """SIGKILL every task: under the freezer if mounted (nothing forks or
        exits meanwhile; killed tasks die when thawed), else pass after pass
        until the cgroup is empty."""
        if "freezer" in self.dirs:
            self.freeze()
            files.kill_listed(self.dirs["freezer"])
            self.thaw()
        elif self.dirs:
            files.kill_all(next(iter(self.dirs.values())))

    def remove(self) -> None:
        """Kill what is left, then remove every directory."""
        if any(files.procs(d) for d in set(self.dirs.values()) if os.path.isdir(d)):
            self.kill()
        for directory in sorted(set(self.dirs.values())):
            files.remove_dir(directory)
        self.dirs = {}

    def _int(self, controller: str, name: str) -> int | None:
        if controller not in self.dirs:
            return None
        return files.read_int(os.path.join(self.dirs[controller], name))

    def _oom_control(self) -> dict[str, int]:
        if "memory" not in self.dirs:
            return {}
        return files.keyed(os.path.join(self.dirs["memory"], "memory.oom_control"))

    def _io(self, op: str) -> int | None:
        if "blkio" not in self.dirs:
            return None
        try:
            lines = files.read(os.path.join(self.dirs["blkio"], "blkio.throttle.io_service_bytes")).splitlines()
        except OSError:
            return None
        return sum(int(p[2]) for p in (line.split() for line in lines) if len(p) == 3 and p[1] == op)

    def _freezer(self, state: str, timeout: float = 5.0) -> None:
        if "freezer" not in self.dirs:
            raise CgroupError(errno.ENOTSUP, "the v1 freezer controller is not mounted")
        path = os.path.join(self.dirs["freezer"], "freezer.state")
        files.write(path, state)
        deadline = time.monotonic() + timeout
        while files.read(path).strip() != state:
            if time.monotonic() > deadline:
                raise CgroupError(errno.ETIMEDOUT, f"{path} did not reach {state}")
            time.sleep(0.001)


def cpu_shares(weight: int) -> int:
    """v2's cpu.weight (1..10000) as v1's cpu.shares (2..262144)."""
    return 2 + (weight - 1) * 262142 // 9999


def blkio_weight(weight: int) -> int:
    """v2's io.weight (1..10000) as v1's blkio.weight (10..1000)."""
    return 10 + (weight - 1) * 990 // 9999


def _settings(limits: CgroupLimit) -> list[tuple[str, str, str]]:
    """(controller, file, value) for each limit that is set, in a valid order."""
    out: list[tuple[str, str, str]] = []
    if limits.cpuset is not None:
        out.append(("cpuset", "cpuset.cpus", limits.cpuset))
    if limits.cpuset_mems is not None:
        out.append(("cpuset", "cpuset.mems", limits.cpuset_mems))
    if limits.memory is not None:
        out.append(("memory", "memory.limit_in_bytes", str(limits.memory)))
    if limits.memory_swap is not None:   # memory + swap; after memory, which it may not undercut
        out.append(("memory", "memory.memsw.limit_in_bytes", str(limits.memory_swap)))
    if limits.memory_high is not None:   # v1 has no throttling limit: the soft limit is closest
        out.append(("memory", "memory.soft_limit_in_bytes", str(limits.memory_high)))
    if limits.cpu is not None:
        out.append(("cpu", "cpu.cfs_period_us", str(limits.cpu_period)))
        out.append(("cpu", "cpu.cfs_quota_us", str(limits.cpu_quota())))
    if limits.cpu_weight is not None:
        out.append(("cpu", "cpu.shares", str(cpu_shares(limits.cpu_weight))))
    if limits.pids is not None:
        out.append(("pids", "pids.max", str(limits.pids)))
    if limits.io_weight is not None:
        out.append(("blkio", "blkio.weight", str(blkio_weight(limits.io_weight))))
    names = {"rbps": "read_bps", "wbps": "write_bps", "riops": "read_iops", "wiops": "write_iops"}
    for device, items in limits.io_max:
        for key, value in items:
            out.append(("blkio", f"blkio.throttle.{names[key]}_device", f"{device} {value}"))
    return out
