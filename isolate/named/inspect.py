"""A named container described as ``docker inspect`` describes one
(``isolate inspect``): one JSON-ready dict of what its record keeps and
the kernel says now.

Docker's names are used where isolate has the same thing (Path, Args,
State, Config, HostConfig, Mounts, GraphDriver, LogPath), with its
conventions: times in RFC 3339 (UTC, "0001-01-01T00:00:00Z" for never),
ExitCode the shell's status (137 for SIGKILL), Pid 0 once stopped.  What
isolate has and docker has not is added under names of its own
(HostConfig.Capabilities, HostConfig.Seccomp, HostConfig.Cgroups,
Config.Namespaces).  Docker's Id is a random 64-hex id; isolate keeps
none, so Id is derived from the name and the time it was first given,
which a restart keeps, as docker's Id stays.

Everything comes from the record (what the container may have written is
in it: print the document escaped) and, for a running container, /proc
(its id maps) and its cgroup (paused, OOM-killed).
"""
from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from isolate.cgroups import interface
from isolate.cgroups.limits import CgroupLimit
from isolate.config import DEFAULT_HOSTNAME
from isolate.named import exits, rootfs
from isolate.named.cgroup import cgroup_directories, is_paused
from isolate.named.state import RUNNING, ContainerState, StateDir

if TYPE_CHECKING:
    from isolate.images.store import Image

__all__ = ["ZERO_TIME", "inspect", "rfc3339"]

#: Docker's time for "never" (Go's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"


def inspect(states: StateDir, name: str) -> dict[str, Any]:
    """The container `name` as docker inspect shows a container;
    ContainerNotFound if there is none."""
    record = states.load(name)
    running = record.status() == RUNNING
    if not running:
        record = exits.settle(states, record)
    saved = record.config
    image = rootfs.image_of(record)
    argv = list(record.argv)
    return {
        "Id": hashlib.sha256(f"{record.name}\0{record.created!r}".encode()).hexdigest(),
        "Created": rfc3339(record.created),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": _state(record, running),
        "Image": image.id if image is not None else "",
        "ImageName": image.names[0] if image is not None and image.names else "",
        "LogPath": os.path.join(states.root, f"{record.name}.log") if record.detached else "",
        "Name": record.name,
        "Driver": "overlay" if rootfs.overlay_of(record) is not None else "bind",
        "Platform": "linux",
        "Config": _config(record, image),
        "HostConfig": _host_config(record, running),
        "Mounts": [_mount(mount) for mount in saved.get("mounts", [])],
        "GraphDriver": _graph_driver(saved.get("rootfs")),
    }


def rfc3339(when: float | None) -> str:
    """`when` (seconds since the epoch) as docker writes times, in UTC with
    nanoseconds ("2024-05-01T12:00:00.123456000Z"); ZERO_TIME for None."""
    if when is None:
        return ZERO_TIME
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _state(record: ContainerState, running: bool) -> dict[str, Any]:
    directories = cgroup_directories(record)
    paused = running and is_paused(record)
    status = "paused" if paused else "running" if running else "exited"
    return {
        "Status": status,
        "Running": running,
        "Paused": paused,
        "OOMKilled": bool(directories) and interface.from_directories(directories).oom_killed(),
        "Pid": record.pid if running else 0,
        # None: how it ended is unknown (isolate.named.exits says when).
        "ExitCode": 0 if running else record.exit_status,
        "StartedAt": rfc3339(record.up_since),
        "FinishedAt": ZERO_TIME if running else rfc3339(record.finished),
    }


def _config(record: ContainerState, image: Image | None) -> dict[str, Any]:
    saved = record.config
    namespaces = saved.get("namespaces", [])
    if "uts" not in namespaces:
        hostname = os.uname().nodename   # the host's: the container shares it
    else:
        hostname = saved.get("hostname") or DEFAULT_HOSTNAME
    return {
        "Hostname": hostname,
        "User": f"{saved.get('user', 0)}:{saved.get('group', 0)}",
        "Env": [f"{key}={value}" for key, value in saved.get("env", {}).items()],
        "Cmd": list(record.argv),
        "Image": image.names[0] if image is not None and image.names else
        (image.id if image is not None else ""),
        "WorkingDir": saved.get("cwd", "/"),
        "Namespaces": list(namespaces),
    }


def _host_config(record: ContainerState, running: bool) -> dict[str, Any]:
    saved = record.config
    limits = saved.get("limits") or {}
    quota = CgroupLimit(**limits).cpu_quota() if limits else None
    seccomp = saved.get("seccomp")
    seccomp_kind = ("unconfined" if seccomp is None else "default" if seccomp == "default"
                    else "custom")
    cpu = limits.get("cpu")
    security = [f"seccomp={seccomp_kind}"]
    if saved.get("no_new_privs", True):
        security.append("no-new-privileges")
    return {
        "Memory": limits.get("memory") or 0,
        "MemoryReservation": limits.get("memory_high") or 0,
        "MemorySwap": limits.get("memory_swap") or 0,
        "NanoCpus": round(cpu * 1e9) if cpu else 0,
        "CpuPeriod": limits["cpu_period"] if cpu else 0,
        "CpuQuota": quota or 0,
        "CpuWeight": limits.get("cpu_weight") or 0,
        "CpusetCpus": limits.get("cpuset") or "",
        "CpusetMems": limits.get("cpuset_mems") or "",
        "PidsLimit": limits.get("pids"),
        "IoWeight": limits.get("io_weight") or 0,
        "IoMax": limits.get("io_max") or {},
        "CgroupParent": saved.get("cgroup_parent") or "",
        "Cgroups": cgroup_directories(record),
        "Capabilities": list(saved.get("capabilities", [])),
        "Seccomp": seccomp_kind,
        "SecurityOpt": security,
        "ReadonlyRootfs": saved.get("rootfs_readonly", True),
        "MaskedPaths": list(saved.get("masked_paths", [])),
        "ReadonlyPaths": list(saved.get("readonly_paths", [])),
        # Docker writes -1 for unlimited.
        "Ulimits": [{"Name": name, "Soft": -1 if soft is None else soft,
                     "Hard": -1 if hard is None else hard}
                    for name, (soft, hard) in saved.get("rlimits", {}).items()],
        "Init": saved.get("init", True),
        "AutoRemove": record.auto_remove,
        "IDMappings": _id_mappings(record, running),
    }


def _id_mappings(record: ContainerState, running: bool) -> dict[str, list[str]] | None:
    """The container's uid and gid maps ("INSIDE:HOST:COUNT", as podman
    shows them): the kernel's while it runs, else those it was given
    (None: isolate's default, or no user namespace)."""
    if running:
        try:
            proc = os.open(f"/proc/{record.pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:   # it ended since status() said it runs
            proc = None
        if proc is not None:
            try:
                # Checked again once /proc/PID is open: the maps are then its.
                if record.status() == RUNNING:
                    return {key: _map_lines(proc, f"{kind}_map")
                            for key, kind in (("UidMap", "uid"), ("GidMap", "gid"))}
            except ProcessLookupError:
                pass
            finally:
                os.close(proc)
    uid_map, gid_map = record.config.get("uid_map"), record.config.get("gid_map")
    if uid_map is None and gid_map is None:
        return None
    return {"UidMap": [":".join(map(str, entry)) for entry in uid_map or []],
            "GidMap": [":".join(map(str, entry)) for entry in gid_map or []]}


def _map_lines(proc: int, name: str) -> list[str]:
    """An id map file of an open /proc/PID, one "INSIDE:HOST:COUNT" per range."""
    with open(os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)) as f:
        return [":".join(line.split()) for line in f]


def _mount(mount: Mapping[str, Any]) -> dict[str, Any]:
    """A record's mount (a Bind or a Tmpfs, attrs.asdict'ed) as docker lists mounts."""
    if mount.get("kind") == "bind":
        rw = not mount.get("readonly", True)
        return {"Type": "bind", "Source": mount.get("source", ""),
                "Destination": mount.get("target", ""), "Mode": "rw" if rw else "ro", "RW": rw,
                "Propagation": "rprivate"}
    return {"Type": "tmpfs", "Source": "", "Destination": mount.get("target", ""),
            "Mode": f"{mount.get('mode', 0o755):o}", "RW": True, "Propagation": "",
            "Size": mount.get("size")}


def _graph_driver(saved: Any) -> dict[str, Any]:
    """How the root is made: an overlay's layers (docker lists the top one
    first), a directory bound, or the host's own root."""
    if isinstance(saved, Mapping):
        upper = saved.get("upper")
        return {"Name": "overlay", "Data": {
            "LowerDir": ":".join(reversed(saved.get("lower") or [])),
            # None: a tmpfs in the container's own mount namespace.
            "UpperDir": upper, "WorkDir": saved.get("work") if upper else None}}
    return {"Name": "bind", "Data": {"RootDir": saved or "/"}}
