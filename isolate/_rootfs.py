"""Steps that assemble the container's filesystem, in its own mount namespace.

The layout, for a root at STAGE (the rootfs directory, or /tmp in the new
mount namespace when the root is the host's "/"):

1. make every mount private, so nothing propagates back to the host;
2. bind the root onto STAGE recursively, then make it read-only;
3. a fresh /proc (new PID namespace), /sys (new net namespace), a minimal
   /dev, a private /tmp, then the caller's extra mounts;
4. pivot_root into STAGE and detach the old root.

All of this happens after clone, in the child, so the host never sees any of
these mounts and nothing needs unmounting when the container ends.
"""
from __future__ import annotations

import os

from . import _sys
from ._native import lib
from ._plan import Plan
from .config import Config
from .mounts import Bind, Tmpfs

#: Where the host's "/" is bound in the new mount namespace before pivot_root.
#: Mounting over it there changes nothing on the host.
HOST_ROOT_STAGE = "/tmp"

#: Device nodes bound from the host into the container's /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}

NOSUID_NODEV = _sys.MS_NOSUID | _sys.MS_NODEV
NOSUID_NODEV_NOEXEC = NOSUID_NODEV | _sys.MS_NOEXEC


def stage_of(config: Config) -> str:
    """The directory that becomes the container's "/"."""
    return config.rootfs if config.rootfs is not None else HOST_ROOT_STAGE


def fresh_proc(config: Config) -> bool:
    """Whether the container gets a /proc of its own pid namespace.

    Mounting proc needs CAP_SYS_ADMIN over the pid namespace's owner: a new
    pid namespace, or a joined one unless a new user namespace (which would
    not own it) is created; otherwise the host's /proc stays, read-only."""
    return config.has("pid") or (config.joins("pid") and not config.has("user"))


def mount_targets(config: Config) -> list[str]:
    """Paths inside the container that are covered by a fresh mount."""
    targets = ["/dev", "/tmp"]
    if fresh_proc(config):
        targets.append("/proc")
    if config.has("net"):
        targets.append("/sys")
    return targets + [m.target for m in config.mounts]


def add_rootfs_steps(plan: Plan, config: Config) -> None:
    """Append every mount step, ending with pivot_root."""
    stage = stage_of(config)
    source = config.rootfs if config.rootfs is not None else "/"
    _mount(plan, None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
    slots = _open_bind_sources(plan, config)
    _mount(plan, source, stage, None, _sys.MS_BIND | _sys.MS_REC)
    _make_mountpoints(plan, config, stage)
    if config.rootfs_readonly:
        _setattr(plan, stage, _sys.MOUNT_ATTR_RDONLY, recursive=True)
    if fresh_proc(config):
        _mount(plan, "proc", stage + "/proc", "proc", NOSUID_NODEV_NOEXEC)
    if config.has("net"):
        _mount(plan, "sysfs", stage + "/sys", "sysfs", NOSUID_NODEV_NOEXEC | _sys.MS_RDONLY)
    _add_dev(plan, stage)
    _mount(plan, "tmpfs", stage + "/tmp", "tmpfs", NOSUID_NODEV, "mode=1777")
    for index, mount in enumerate(config.mounts):
        _add_mount(plan, stage, mount, slots.get(index))
    plan.add(lib.ISO_OP_PIVOT, f"pivot_root({stage!r}, {stage!r})", b=stage)


def _make_mountpoints(plan: Plan, config: Config, stage: str) -> None:
    """Create missing mount points in a user rootfs (as runc does)."""
    if config.rootfs is None:
        return
    for target in ("/proc", "/sys", "/dev", "/tmp"):
        if not os.path.isdir(stage + target):
            plan.add(lib.ISO_OP_MKDIR, f"mkdir({stage + target!r})", b=stage + target, num=0o755)


def _add_dev(plan: Plan, stage: str) -> None:
    dev = stage + "/dev"
    _mount(plan, "tmpfs", dev, "tmpfs", _sys.MS_NOSUID | _sys.MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        node = f"{dev}/{name}"
        plan.add(lib.ISO_OP_MKFILE, f"create {node!r}", b=node, num=0o666)
        _mount(plan, f"/dev/{name}", node, None, _sys.MS_BIND)
    for name, target in DEV_LINKS.items():
        link = f"{dev}/{name}"
        plan.add(lib.ISO_OP_SYMLINK, f"symlink({target!r}, {link!r})", a=target, b=link)
    for sub, fstype, data in (("pts", "devpts", "newinstance,ptmxmode=0666,mode=0620"),
                              ("shm", "tmpfs", "mode=1777")):
        path = f"{dev}/{sub}"
        plan.add(lib.ISO_OP_MKDIR, f"mkdir({path!r})", b=path, num=0o755)
        _mount(plan, fstype, path, fstype, _sys.MS_NOSUID | _sys.MS_NOEXEC, data)


def _open_bind_sources(plan: Plan, config: Config) -> dict[int, int]:
    """Clone each bind source into a detached tree, before the root is
    staged (staging mounts over /tmp, which would hide sources there).
    Returns the slot of each bind, by its index in config.mounts."""
    slots: dict[int, int] = {}
    for index, mount in enumerate(config.mounts):
        if isinstance(mount, Bind):
            slot = slots[index] = len(slots)
            plan.add(lib.ISO_OP_OPEN_TREE, f"open_tree({mount.source!r})", b=mount.source, num=slot)
            attr = _sys.MOUNT_ATTR_NOSUID | _sys.MOUNT_ATTR_NODEV
            if mount.readonly:
                attr |= _sys.MOUNT_ATTR_RDONLY
            plan.add(lib.ISO_OP_TREE_SETATTR, f"mount_setattr({mount.source!r}, attr_set={attr:#x})",
                     num=slot, num2=attr)
    return slots


def _add_mount(plan: Plan, stage: str, mount: Bind | Tmpfs, slot: int | None) -> None:
    target = stage + mount.target
    _add_parents(plan, stage, mount.target)
    if isinstance(mount, Tmpfs):
        plan.add(lib.ISO_OP_MKDIR, f"mkdir({mount.target!r})", b=target, num=0o755)
        data = f"mode={mount.mode:o}" + (f",size={mount.size}" if mount.size else "")
        _mount(plan, "tmpfs", target, "tmpfs", NOSUID_NODEV, data)
        return
    if mount.is_dir:
        plan.add(lib.ISO_OP_MKDIR, f"mkdir({mount.target!r})", b=target, num=0o755)
    else:
        plan.add(lib.ISO_OP_MKFILE, f"create {mount.target!r}", b=target, num=0o644)
    plan.add(lib.ISO_OP_MOVE_MOUNT, f"bind {mount.source!r} on {mount.target!r}", b=target, num=slot)


def _add_parents(plan: Plan, stage: str, target: str) -> None:
    """mkdir -p for the directories above a mount target (EEXIST is fine)."""
    parts = target.strip("/").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        inside = "/" + "/".join(parts[:depth])
        plan.add(lib.ISO_OP_MKDIR, f"mkdir({inside!r})", b=stage + inside, num=0o755)


def _mount(plan: Plan, source: str | None, target: str, fstype: str | None,
           flags: int, data: str | None = None) -> None:
    what = f"mount({source!r}, {target!r}" + (f", {fstype!r})" if fstype else ")")
    plan.add(lib.ISO_OP_MOUNT, what, a=source, b=target, c=fstype, d=data, num=flags)


def _setattr(plan: Plan, target: str, attr_set: int, recursive: bool) -> None:
    plan.add(lib.ISO_OP_SETATTR, f"mount_setattr({target!r}, attr_set={attr_set:#x})",
             b=target, num=attr_set, num2=int(recursive))
