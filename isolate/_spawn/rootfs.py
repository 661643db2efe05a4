"""Steps that assemble the container's filesystem, in its own mount namespace.

The layout, for a root at STAGE (the rootfs directory, or /tmp in the new
mount namespace when the root is the host's "/"):

1. make every mount private, so nothing propagates back to the host;
2. bind the root onto STAGE recursively (or, for an Overlay, mount the
   overlay there, its ephemeral upper on a tmpfs at a scratch directory),
   then make it nodev (and read-only if asked; the host's root also nosuid);
3. a fresh /proc (new PID namespace), /sys (new net namespace), a minimal
   /dev, a private /tmp, each on a directory at exactly its path; the
   masked and read-only paths; for the host's root, an empty tmpfs over
   where daemons keep sockets and state and over the homes; then the
   caller's home (expose_home) and extra mounts;
4. pivot_root into STAGE and detach the old root.

All of this happens after clone, in the child, so the host never sees any of
these mounts and nothing needs unmounting when the container ends.
"""
from __future__ import annotations

import functools
import os
import pwd

from isolate._spawn import syscalls
from isolate._native import lib
from isolate._spawn.plan import Plan
from isolate.config import MAX_BINDS, Config
from isolate.errors import ConfigError
from isolate.mounts import Bind, Tmpfs
from isolate.overlay import Overlay
from isolate._util.paths import within, within_any

#: Where the host's "/" is bound in the new mount namespace before pivot_root.
#: Mounting over it there changes nothing on the host.
HOST_ROOT_STAGE = "/tmp"

#: Device nodes bound from the host into the container's /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}

NOSUID_NODEV = syscalls.MS_NOSUID | syscalls.MS_NODEV
NOSUID_NODEV_NOEXEC = NOSUID_NODEV | syscalls.MS_NOEXEC

#: Fresh mounts of every container: nothing of the host is under them.
FRESH_MOUNTS = ("/dev", "/tmp", "/proc", "/sys")

#: Host directories a container of the host's root sees empty: where the
#: host's daemons keep their sockets, FIFOs and state (/var/run is usually
#: a link to /run; /var/lib holds docker's, containerd's, podman's, lxd's
#: and kubelet's, databases and credentials; /var/spool mail and cron
#: queues and postfix's sockets), and the users' homes.  The caller's own
#: home and XDG_RUNTIME_DIR are added wherever they are.
HIDDEN_HOST_DIRS = ("/run", "/var/run", "/var/lib", "/var/spool", "/home", "/root")

#: Never hidden, even if a home is there (system users' homes may be
#: /usr/sbin or /bin): the container needs them to run anything.
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")


#: Where an ephemeral overlay's tmpfs (upper and work) can be mounted in the
#: new mount namespace: the first that holds no lower layer (a mount there
#: would hide it from the overlay).  It goes away with the old root.
SCRATCH_CANDIDATES = ("/dev/shm", "/run", "/mnt", "/media", "/srv", "/opt", "/var")


def stage_of(config: Config) -> str:
    """The directory that becomes the container's "/"."""
    if config.rootfs is None or isinstance(config.rootfs, Overlay):
        return HOST_ROOT_STAGE
    return config.rootfs


def fresh_proc(config: Config) -> bool:
    """Whether the container gets a /proc of its own pid namespace.

    Mounting proc needs CAP_SYS_ADMIN over the pid namespace's owner: a new
    pid namespace, or a joined one unless a new user namespace (which would
    not own it) is created; otherwise the host's /proc stays, read-only."""
    return config.has("pid") or (config.joins("pid") and not config.has("user"))


def mount_targets(config: Config) -> list[str]:
    """Paths inside the container that are covered by a fresh mount (or may
    be: the hidden host directories before they are resolved)."""
    targets = ["/dev", "/tmp"]
    if fresh_proc(config):
        targets.append("/proc")
    if config.has("net"):
        targets.append("/sys")
    return targets + list(_hide_candidates(config)) + [m.target for m in config.mounts]


#: What add_source_steps opened: the extra mounts, and the slot of each bind
#: by its index there.
Sources = tuple[tuple[Bind | Tmpfs, ...], dict[int, int]]


def add_source_steps(plan: Plan, config: Config) -> Sources:
    """Make the new mount namespace private and open every bind source.

    These run before the child switches to its setup ids (compile_plan): a
    source is opened with the caller's own ids and so reaches what the
    caller can reach, even where the container's ids could not."""
    _host_mount(plan, None, "/", syscalls.MS_REC | syscalls.MS_PRIVATE)
    mounts = _mounts(config)
    return mounts, _open_bind_sources(plan, mounts)


def add_rootfs_steps(plan: Plan, config: Config, sources: Sources) -> None:
    """Append every other mount step, ending with pivot_root.

    Once the root is bound on its stage and opened (ISO_OP_OPEN_ROOT), every
    path is relative: the child resolves it inside the root, so a symlink
    in a root filesystem cannot send a mount or a new file outside it."""
    stage = stage_of(config)
    mounts, slots = sources
    if isinstance(config.rootfs, Overlay):
        _mount_overlay(plan, config.rootfs, stage)
    else:
        source = config.rootfs if config.rootfs is not None else "/"
        _host_mount(plan, source, stage, syscalls.MS_BIND | syscalls.MS_REC)
    plan.add(lib.ISO_OP_OPEN_ROOT, f"open the root {stage!r}", b=stage)
    _make_mountpoints(plan, config)
    _setattr(plan, "/", _root_attr(config), recursive=True)
    if fresh_proc(config):
        _mount_dir(plan, "proc", "/proc", "proc", NOSUID_NODEV_NOEXEC)
    if config.has("net"):
        _mount_dir(plan, "sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC | syscalls.MS_RDONLY)
    _add_dev(plan)
    _mount_dir(plan, "tmpfs", "/tmp", "tmpfs", NOSUID_NODEV, "mode=1777")
    _add_masks(plan, config)
    for path in hidden_host_dirs(config):
        _mount_dir(plan, "tmpfs", path, "tmpfs", NOSUID_NODEV_NOEXEC, "mode=0755")
    for index, mount in enumerate(mounts):
        _add_mount(plan, mount, slots.get(index))
    plan.add(lib.ISO_OP_PIVOT, f"pivot_root into {stage!r}")


def _root_attr(config: Config) -> int:
    """The root's mount attributes.  No device node in it ever opens: a
    container without a user namespace keeps CAP_MKNOD, and a root caller's
    container would open the host's disks through nodes it finds or makes.
    The host's root also honours no set-user-ID bit."""
    attr = syscalls.MOUNT_ATTR_NODEV
    if config.rootfs is None:
        attr |= syscalls.MOUNT_ATTR_NOSUID
    if config.rootfs_readonly:
        attr |= syscalls.MOUNT_ATTR_RDONLY
    return attr


def caller_home() -> str | None:
    """The caller's home: its passwd entry's (where ssh finds ~/.ssh), else $HOME."""
    return _passwd_home(os.geteuid()) or os.environ.get("HOME")


@functools.lru_cache(maxsize=8)
def _passwd_home(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None


def _hide_candidates(config: Config) -> tuple[str, ...]:
    """What a container of the host's root must not see, as named (not yet
    resolved): HIDDEN_HOST_DIRS, the caller's home(s) and XDG_RUNTIME_DIR."""
    if config.rootfs is not None:
        return ()
    return _named_hidden(caller_home(), os.environ.get("HOME"), os.environ.get("XDG_RUNTIME_DIR"))


@functools.lru_cache(maxsize=8)
def _named_hidden(*own: str | None) -> tuple[str, ...]:
    """HIDDEN_HOST_DIRS and those of `own` that may be hidden (asked on
    every spawn: kept by value)."""
    return HIDDEN_HOST_DIRS + tuple(p for p in map(os.path.normpath, filter(None, own)) if _hideable(p))


def _hideable(path: str) -> bool:
    """Whether an empty tmpfs may go over `path`: absolute, not "/", not a
    directory the container needs, not under a fresh mount (not the host's)."""
    return (path.startswith("/") and path != "/"
            and not within_any(path, SYSTEM_DIRS + FRESH_MOUNTS)
            and not any(within(system, path) for system in SYSTEM_DIRS))


def hidden_host_dirs(config: Config) -> list[str]:
    """The host directories that get an empty tmpfs: the candidates that
    exist, resolved (the tmpfs goes on the directory itself, which a
    symlink such as /var/run would not be), none beneath another."""
    found = {os.path.realpath(p) for p in _hide_candidates(config)}
    dirs = sorted(p for p in found if _hideable(p) and os.path.isdir(p))
    return [p for i, p in enumerate(dirs) if not within_any(p, dirs[:i])]


def _mounts(config: Config) -> tuple[Bind | Tmpfs, ...]:
    """The extra mounts: the caller's home read-only first (expose_home),
    so that the caller's own mounts can go over it, then config.mounts."""
    if not config.expose_home:
        return config.mounts
    home = caller_home()
    if not home or not os.path.isdir(home):
        raise ConfigError("expose_home", f"the caller's home {home!r} is not a directory")
    if sum(isinstance(m, Bind) for m in config.mounts) >= MAX_BINDS:
        raise ConfigError("mounts", f"at most {MAX_BINDS} bind mounts, with the home (expose_home)")
    return (Bind(home, home, readonly=True),) + config.mounts


def inside(path: str) -> str:
    """A container path as the child's steps take it: relative to the root."""
    return path.lstrip("/") or "."


def _mount_overlay(plan: Plan, overlay: Overlay, stage: str) -> None:
    """Mount `overlay` on `stage`; an ephemeral upper goes on a fresh tmpfs."""
    if overlay.ephemeral:
        scratch = scratch_dir(overlay)
        data = "mode=0755" + (f",size={overlay.size}" if overlay.size else "")
        _host_mount(plan, "tmpfs", scratch, 0, fstype="tmpfs", data=data)
        upper, work = f"{scratch}/upper", f"{scratch}/work"
        plan.add(lib.ISO_OP_MKDIR, f"mkdir({upper!r})", b=upper, num=0o755)
        plan.add(lib.ISO_OP_MKDIR, f"mkdir({work!r})", b=work, num=0o700)
    else:
        upper, work = overlay.upper, overlay.work
    options = overlay.options(upper, work)
    if options is not None:
        _host_mount(plan, "overlay", stage, 0, fstype="overlay", data=options)
        return
    overlay.check_layer_by_layer(upper, work)
    plan.add(lib.ISO_OP_OVERLAY, f"mount overlay ({len(overlay.lower)} layers, one at a time) on {stage!r}",
             a=work, b=stage, c=upper, d="\n".join(reversed(overlay.lower)))


def scratch_dir(overlay: Overlay) -> str:
    """A host directory no lower layer lies beneath, for the ephemeral tmpfs."""
    lowers = [os.path.realpath(lower) for lower in overlay.lower]
    for candidate in SCRATCH_CANDIDATES:
        if os.path.isdir(candidate) and not any(within(lower, candidate) for lower in lowers):
            return candidate
    raise ConfigError("Overlay.lower", f"every place for the ephemeral upper ({', '.join(SCRATCH_CANDIDATES)}) "
                      "holds a lower layer")


def _make_mountpoints(plan: Plan, config: Config) -> None:
    """Create missing mount points in a user rootfs (as runc does); in an
    overlay they go to the upper layer (EEXIST is fine).  The targets of the
    extra mounts too, but those under a mount made later: the root turns
    read-only next, and a read-only root still takes new mounts, not new
    directories."""
    if config.rootfs is None:
        return
    for target in ("/proc", "/sys", "/dev", "/tmp"):
        if isinstance(config.rootfs, Overlay) or not os.path.isdir(config.rootfs + target):
            _mkdir(plan, target, 0o755)
    covered = ["/proc", "/sys", "/dev", "/tmp"]
    for mount in config.mounts:
        if not within_any(mount.target, covered):
            _add_parents(plan, mount.target)
            _add_target(plan, mount)
        covered.append(mount.target)


def _add_masks(plan: Plan, config: Config) -> None:
    """Hide the masked paths and make the read-only paths read-only.

    Paths under /proc and /sys are left out where the root shows no proc
    or sysfs, and where this kernel does not have them (the host's /proc
    shows the same kernel).  Every other path must be there, at exactly
    its name: the child fails the step otherwise, since a path that vanished
    (or went through a symlink) means a root built to dodge the mask."""
    for path in config.masked_paths:
        if _shown(config, path):
            plan.add(lib.ISO_OP_MASK, f"mask {path!r}", b=inside(path))
    for path in config.readonly_paths:
        if _shown(config, path):
            plan.add(lib.ISO_OP_READONLY, f"bind {path!r} read-only", b=inside(path))


def _shown(config: Config, path: str) -> bool:
    """Whether a masked or read-only path is one the root shows."""
    if within(path, "/proc") and not (fresh_proc(config) or config.rootfs is None):
        return False
    if within(path, "/sys") and not (config.has("net") or config.rootfs is None):
        return False
    return _kernel_has(path)


def _kernel_has(path: str) -> bool:
    if path.startswith(("/proc/", "/sys/")):
        return os.path.lexists(path)
    return True


def _add_dev(plan: Plan) -> None:
    """A tmpfs /dev (nodev: a node made in it does not open) with the host's
    device nodes bound in (their mounts are the host's, which allow them),
    the usual links, devpts (needs devices) and a nodev /dev/shm."""
    _mount_dir(plan, "tmpfs", "/dev", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        node = f"/dev/{name}"
        plan.add(lib.ISO_OP_MKFILE, f"create {node!r}", b=inside(node), num=0o666)
        # The source is the host's device: "/" is still the host's root here.
        _mount(plan, node, node, None, syscalls.MS_BIND)
    for name, target in DEV_LINKS.items():
        link = f"/dev/{name}"
        plan.add(lib.ISO_OP_SYMLINK, f"symlink({target!r}, {link!r})", a=target, b=inside(link))
    for sub, fstype, flags, data in (
            ("pts", "devpts", syscalls.MS_NOSUID | syscalls.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"),
            ("shm", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=1777")):
        path = f"/dev/{sub}"
        _mkdir(plan, path, 0o755)
        _mount_dir(plan, fstype, path, fstype, flags, data)


def _open_bind_sources(plan: Plan, mounts: tuple[Bind | Tmpfs, ...]) -> dict[int, int]:
    """Clone each bind source into a detached tree, before the root is
    staged (staging mounts over /tmp, which would hide sources there).
    Returns the slot of each bind, by its index in `mounts`."""
    slots: dict[int, int] = {}
    for index, mount in enumerate(mounts):
        if isinstance(mount, Bind):
            slot = slots[index] = len(slots)
            plan.add(lib.ISO_OP_OPEN_TREE, f"open_tree({mount.source!r})", b=mount.source, num=slot)
            attr = syscalls.MOUNT_ATTR_NOSUID | syscalls.MOUNT_ATTR_NODEV
            if mount.readonly:
                attr |= syscalls.MOUNT_ATTR_RDONLY
            plan.add(lib.ISO_OP_TREE_SETATTR, f"mount_setattr({mount.source!r}, attr_set={attr:#x})",
                     num=slot, num2=attr)
    return slots


def _add_mount(plan: Plan, mount: Bind | Tmpfs, slot: int | None) -> None:
    _add_parents(plan, mount.target)
    _add_target(plan, mount)
    if isinstance(mount, Tmpfs):
        data = f"mode={mount.mode:o}" + (f",size={mount.size}" if mount.size else "")
        _mount(plan, "tmpfs", mount.target, "tmpfs", NOSUID_NODEV, data)
        return
    plan.add(lib.ISO_OP_MOVE_MOUNT, f"bind {mount.source!r} on {mount.target!r}",
             b=inside(mount.target), num=slot)


def _add_target(plan: Plan, mount: Bind | Tmpfs) -> None:
    """The directory (or, for a bind of a file, the file) a mount goes on."""
    if isinstance(mount, Tmpfs) or mount.is_dir:
        _mkdir(plan, mount.target, 0o755)
    else:
        plan.add(lib.ISO_OP_MKFILE, f"create {mount.target!r}", b=inside(mount.target), num=0o644)


def _add_parents(plan: Plan, target: str) -> None:
    """mkdir -p for the directories above a mount target (EEXIST is fine)."""
    parts = target.strip("/").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        _mkdir(plan, "/" + "/".join(parts[:depth]), 0o755)


def _mkdir(plan: Plan, path: str, mode: int) -> None:
    plan.add(lib.ISO_OP_MKDIR, f"mkdir({path!r})", b=inside(path), num=mode)


def _host_mount(plan: Plan, source: str | None, target: str, flags: int,
                fstype: str | None = None, data: str | None = None) -> None:
    """A mount at a host path, before the root is open."""
    plan.add(lib.ISO_OP_MOUNT, _mount_what(source, target, fstype),
             a=source, b=target, c=fstype, d=data, num=flags)


def _mount(plan: Plan, source: str | None, target: str, fstype: str | None,
           flags: int, data: str | None = None) -> None:
    """A mount at a container path (resolved in the root)."""
    plan.add(lib.ISO_OP_MOUNT, _mount_what(source, target, fstype),
             a=source, b=inside(target), c=fstype, d=data, num=flags)


def _mount_dir(plan: Plan, source: str, target: str, fstype: str,
               flags: int, data: str | None = None) -> None:
    """A mount on the directory at exactly `target` in the root: the child
    refuses a symlink anywhere on the way, or a target that is no directory."""
    plan.add(lib.ISO_OP_MOUNT, _mount_what(source, target, fstype) + ", on the directory itself",
             a=source, b=inside(target), c=fstype, d=data, num=flags, num2=1)


def _mount_what(source: str | None, target: str, fstype: str | None) -> str:
    """How a failed mount step is named: "mount('proc', '/proc', 'proc')"."""
    return f"mount({source!r}, {target!r}" + (f", {fstype!r})" if fstype else ")")


def _setattr(plan: Plan, target: str, attr_set: int, recursive: bool) -> None:
    plan.add(lib.ISO_OP_SETATTR, f"mount_setattr({target!r}, attr_set={attr_set:#x})",
             b=inside(target), num=attr_set, num2=int(recursive))
