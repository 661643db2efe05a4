"""Compile a Config, an argv and the child's stdio into a Plan.

This is the one place that decides what the child will do, in what order:
namespace flags and id maps for the parent, then the rootfs steps, then (in
the workload) session, credentials, cwd, descriptors, signals and exec.

Compiling costs more than cloning a small container, so `prepare` keeps the
last few compiled plans; the checks against the host's filesystem run on
every call all the same, since the host can change between two runs.
"""
from __future__ import annotations

import os
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Sequence

from isolate._spawn import rootfs as _rootfs
from isolate.security import capabilities, idmaps, rlimits, seccomp
from isolate._native import lib
from isolate._spawn.pid1 import init_fd
from isolate._spawn.plan import NativePlan, Plan
from isolate.config import Config
from isolate.errors import ConfigError, ExecutableNotFound
from isolate.mounts import Bind
from isolate.overlay import Overlay
from isolate._util.paths import within_any
from isolate.namespace import Namespace, clone_flags


_CACHE_SIZE = 32
_cache: OrderedDict[tuple, tuple[Plan, NativePlan]] = OrderedDict()
_cache_lock = threading.Lock()


def prepare(config: Config, argv: Sequence[bytes], stdio: Sequence[int],
            tty_socket: int = -1, exit_fd: int = -1) -> tuple[Plan, NativePlan]:
    """Check the host for this run, then compile (or reuse) its plan.
    With config.tty, the pty's master is sent over the socket `tty_socket`;
    the init writes how the workload ended to `exit_fd` (-1: nowhere)."""
    check_host(config, argv)
    # HOME and XDG_RUNTIME_DIR name directories the host's root hides (_rootfs).
    key = (config.key(), tuple(argv), tuple(stdio), tty_socket, exit_fd, os.geteuid(), os.getegid(),
           os.environ.get("HOME"), os.environ.get("XDG_RUNTIME_DIR"))
    with _cache_lock:
        compiled = _cache.get(key)
        if compiled is not None:
            _cache.move_to_end(key)
    if compiled is None:
        plan = compile_plan(config, argv, stdio, tty_socket, exit_fd)
        compiled = (plan, NativePlan(plan))
        with _cache_lock:
            _cache[key] = compiled
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(config.rootfs, Overlay):
        config.rootfs.prepare()   # last: once nothing can refuse the config any more
    return compiled


def check_host(config: Config, argv: Sequence[bytes]) -> None:
    """What can be known before clone: raises ConfigError or ExecutableNotFound."""
    _check_unprivileged_maps(config)
    _check_default_maps(config)
    _check_privileges(config)
    _check_pass_fds(config)
    if config.limits is not None:
        config.limits.check_host()
    if isinstance(config.rootfs, Overlay) and (config.has("user") or config.joins("user")):
        config.rootfs.check_user_namespace()
    # Paths under a fresh mount of the container: only the child can check those.
    covered = _rootfs.mount_targets(config) if config.has("mount") else []
    _check_cwd(config, covered)
    if config.has("mount"):
        _check_mount_targets(config, covered)
    name = os.fsdecode(argv[0])
    _check_executable(config, name, candidates(name, config.env.get("PATH", "")), covered)


def compile_plan(config: Config, argv: Sequence[bytes], stdio: Sequence[int],
                 tty_socket: int = -1, exit_fd: int = -1) -> Plan:
    """The plan for running argv; stdio holds the child's fds for 0, 1, 2 (-1: inherit).
    With an init, it writes how the workload ended to `exit_fd` (-1: nowhere)."""
    # clone(2) has no room for CLONE_NEWTIME: the child unshares it, and the
    # exec that follows moves it into the new time namespace.  A cgroup
    # namespace is unshared only once the parent has put the child in its
    # cgroup, which then becomes the namespace's root.
    later = {"time"} | ({"cgroup"} if config.limits is not None else set())
    flags = clone_flags(config.created - later)
    plan = Plan(clone_flags=flags, die_with_parent=config.die_with_parent)
    _add_joins(plan, config)
    _add_id_maps(plan, config)
    # In init mode the setup process, which shares our memory, never enters
    # the container's cgroup: at its memory limit the OOM killer could pick
    # it and kill us with it.  The workload and pid1 place themselves.
    self_placed = config.limits is not None and uses_init(config)
    if self_placed:
        plan.cgroup_in_workload = 2 if config.has("cgroup") else 1
        later.discard("cgroup")
    unshared = sorted(config.created & later)
    if unshared:
        names = " | ".join(f"CLONE_NEW{kind.upper()}" for kind in unshared)
        plan.add(lib.ISO_OP_UNSHARE, f"unshare({names})", num=clone_flags(unshared))
    if config.has("mount"):
        sources = _rootfs.add_source_steps(plan, config)
    _add_setup_ids(plan, config)
    if config.has("mount"):
        _rootfs.add_rootfs_steps(plan, config, sources)
    if config.has("uts"):
        name = config.effective_hostname
        plan.add(lib.ISO_OP_SETHOSTNAME, f"sethostname({name!r})", a=name)
    if config.has("net"):
        plan.add(lib.ISO_OP_LOOPBACK_UP, "bring up the loopback interface 'lo'")
    if uses_init(config):
        plan.init_fd = init_fd()
        plan.exit_fd = exit_fd
        plan.add(lib.ISO_OP_FORK_WORKLOAD, "start the workload and exec the container's init")
        if self_placed:
            plan.add(lib.ISO_OP_JOIN_CGROUP, "join the container's cgroups")
            if config.has("cgroup"):
                plan.add(lib.ISO_OP_UNSHARE, "unshare(CLONE_NEWCGROUP)", num=clone_flags(["cgroup"]))
    _add_workload_steps(plan, config, stdio, tty_socket)
    _add_exec(plan, config, argv)
    return plan


def _add_joins(plan: Plan, config: Config) -> None:
    """setns steps for a first child, which then clones the namespaced one."""
    if not config.join:
        return
    plan.joiner = True
    # setns(CLONE_NEWTIME) refuses a process sharing its memory: the joiner
    # then forks (a copy of this process: slower, only for this case).
    plan.joiner_forks = config.joins("time")
    for ns in _join_order(config.join):
        plan.add(lib.ISO_OP_SETNS, f"setns({ns!r})", num=ns.fd, num2=clone_flags([ns.kind]))
    plan.add(lib.ISO_OP_CLONE_CHILD, "clone into the new namespaces")


def _join_order(joined: Sequence[Namespace]) -> list[Namespace]:
    """Namespaces owned by our own user namespace first (joining another
    user namespace gives up our capabilities over them), then the user
    namespace (it grants those over the namespaces it owns), then the rest."""
    with Namespace.current("user") as here:
        def ours(ns: Namespace) -> bool:
            with ns.owner() as owner:
                return owner == here
        first = [ns for ns in joined if ns.kind != "user" and ours(ns)]
    user = [ns for ns in joined if ns.kind == "user"]
    rest = [ns for ns in joined if ns not in first and ns not in user]
    return first + user + rest


def uses_init(config: Config) -> bool:
    """Whether PID 1 is isolate's init (and the workload its child)."""
    return config.has("pid") and config.init


def default_id_maps(config: Config) -> tuple[idmaps.IdMap, idmaps.IdMap]:
    """The uid and gid maps of a container given none: a root caller's
    container of the host's root runs as unprivileged host ids (idmaps.py
    says why); otherwise the container's user is the caller."""
    if os.geteuid() == 0 and config.rootfs is None:
        return idmaps.container_ids("uid"), idmaps.container_ids("gid")
    return ((config.user, os.geteuid(), 1),), ((config.group, os.getegid(), 1),)


def _add_id_maps(plan: Plan, config: Config) -> None:
    if not config.has("user"):
        return
    default_uids, default_gids = default_id_maps(config)
    uid_map = config.uid_map or default_uids
    gid_map = config.gid_map or default_gids
    plan.uid_map = "".join(f"{a} {b} {c}\n" for a, b, c in uid_map)
    plan.gid_map = "".join(f"{a} {b} {c}\n" for a, b, c in gid_map)
    if os.geteuid() != 0:
        # An unprivileged writer may map its own gid only after giving up
        # setgroups(2) for the namespace (user_namespaces(7)).
        plan.setgroups = "deny"


def _add_setup_ids(plan: Plan, config: Config) -> None:
    """The child keeps the caller's ids.  If a map leaves them out, it would
    be "nobody" inside and could not even create a file in its own /dev:
    switch it to mapped ids (preferably root) before it builds anything but
    the bind sources (those it opens with the caller's ids, which may reach
    the caller's own private directories)."""
    if config.has("user"):
        default_uids, default_gids = default_id_maps(config)
        setup_gid = _mapped_id(config.gid_map or default_gids, os.getegid(), config.group)
        setup_uid = _mapped_id(config.uid_map or default_uids, os.geteuid(), config.user)
    elif config.joins("user") and os.geteuid() == 0 and config.has("mount"):
        # A root caller's own containers do not map the host's root (idmaps.py).
        setup_gid = setup_uid = 0
    else:
        return
    if setup_gid is not None:
        plan.add(lib.ISO_OP_SETGID, f"setresgid({setup_gid})", num=setup_gid)
    if setup_uid is not None:
        plan.add(lib.ISO_OP_SETUID, f"setresuid({setup_uid})", num=setup_uid)
        if config.die_with_parent:
            # A change of credentials clears the parent-death signal.
            plan.add(lib.ISO_OP_PDEATHSIG, "prctl(PR_SET_PDEATHSIG, SIGKILL)", num=9)


def _mapped_id(ranges: tuple[tuple[int, int, int], ...], own: int, wanted: int) -> int | None:
    """An inside id for the setup to switch to, or None if `own` is mapped."""
    if any(outside <= own < outside + count for _, outside, count in ranges):
        return None
    if any(inside == 0 for inside, _, _ in ranges):
        return 0
    return wanted


def _add_workload_steps(plan: Plan, config: Config, stdio: Sequence[int], tty_socket: int) -> None:
    if config.new_session:
        plan.add(lib.ISO_OP_SETSID, "setsid()")
    last = capabilities.last_cap()
    drop = capabilities.drop_mask(config.capabilities, last)
    plan.add(lib.ISO_OP_CAPBSET_DROP, "drop capabilities (bounding set, inheritable, ambient)",
             num=drop, num2=last)
    for name, soft, hard in config.rlimits:
        plan.add(lib.ISO_OP_SETRLIMIT, f"setrlimit({name}, {soft}, {hard})",
                 num=rlimits.NAMES[name], num2=soft, num3=hard)
    profile = _seccomp_profile(config)
    if profile is not None:
        plan.seccomp_filter = seccomp.compile_bpf(profile)
    if profile is not None and not config.no_new_privs:
        # Without no_new_privs, installing a filter takes CAP_SYS_ADMIN,
        # which a change of credentials to a non-root user gives up.
        _add_seccomp(plan)
    _add_credentials(plan, config)
    if config.die_with_parent and not uses_init(config):
        # A change of credentials clears the parent-death signal: set it again.
        plan.add(lib.ISO_OP_PDEATHSIG, "prctl(PR_SET_PDEATHSIG, SIGKILL)", num=9)
    if config.tty:
        # After the switch of credentials: the new pty belongs to whoever opens /dev/ptmx.
        plan.add(lib.ISO_OP_PTY, "open a terminal (/dev/ptmx) as controlling terminal and stdio",
                 num=tty_socket)
    for target, fd in enumerate(stdio):
        if fd >= 0 and fd != target:
            plan.add(lib.ISO_OP_DUP2, f"dup2({fd}, {target})", num=fd, num2=target)
    plan.keep_fds = list(config.pass_fds)
    plan.add(lib.ISO_OP_CLOSE_FDS, "close every descriptor but 0-2"
             + (f" and {', '.join(map(str, config.pass_fds))}" if config.pass_fds else ""))
    plan.add(lib.ISO_OP_CHDIR, f"chdir({config.cwd!r})", b=config.cwd)
    if config.no_new_privs:
        plan.add(lib.ISO_OP_NO_NEW_PRIVS, "prctl(PR_SET_NO_NEW_PRIVS, 1)")
    plan.add(lib.ISO_OP_RESET_SIGNALS, "reset signal dispositions and mask")
    if profile is not None and config.no_new_privs:
        _add_seccomp(plan)   # last: the filter judges the workload's calls, not ours


def _seccomp_profile(config: Config) -> seccomp.Seccomp | None:
    if config.seccomp == "default":
        return seccomp.docker_default(config.capabilities)
    return config.seccomp


def _add_seccomp(plan: Plan) -> None:
    plan.add(lib.ISO_OP_SECCOMP, "install the seccomp filter")


def _add_credentials(plan: Plan, config: Config) -> None:
    """Groups, gid, uid.  Without a user namespace, an unprivileged caller
    keeps its own ids (check_host refused any other); only root may drop
    supplementary groups (an unprivileged user namespace denies setgroups)."""
    in_userns = config.has("user") or config.joins("user")
    if os.geteuid() != 0 and not in_userns:
        return
    if os.geteuid() == 0:
        plan.add(lib.ISO_OP_SETGROUPS, "setgroups([])")
    plan.add(lib.ISO_OP_SETGID, f"setresgid({config.group})", num=config.group)
    plan.add(lib.ISO_OP_SETUID, f"setresuid({config.user})", num=config.user)


def _add_exec(plan: Plan, config: Config, argv: Sequence[bytes]) -> None:
    name = os.fsdecode(argv[0])
    plan.exec_paths = candidates(name, config.env.get("PATH", ""))
    plan.argv = list(argv)
    plan.envp = [os.fsencode(f"{k}={v}") for k, v in config.env.items()]
    plan.add(lib.ISO_OP_EXEC, f"exec {name!r}")


def candidates(name: str, search_path: str) -> list[str]:
    """Where exec looks for `name`, like execvp(3) on the container's PATH."""
    if "/" in name:
        return [name]
    dirs = [d for d in search_path.split(":") if d.startswith("/")]
    return [posixpath.join(d, name) for d in dirs] or [name]


def _check_executable(config: Config, name: str, paths: list[str], covered: list[str]) -> None:
    """Fail before clone when the host root plainly lacks the executable.

    Only for the host's own root, and only when no path could be covered by
    a mount of the container (those are checked by exec in the child)."""
    if config.rootfs is not None or not config.has("mount") or not name:
        return
    resolved = [p if p.startswith("/") else posixpath.join(config.cwd, p) for p in paths]
    if any(within_any(p, covered) for p in resolved):
        return
    if not any(os.path.isfile(p) for p in resolved):
        raise ExecutableNotFound(name, tuple(resolved))


def _check_mount_targets(config: Config, covered: list[str]) -> None:
    """A mount target in the host's root must exist: that root is never
    written.  (In a rootfs of the caller's, the child creates missing
    targets before the root turns read-only, as runc does.)"""
    root = _host_root(config)
    if not config.rootfs_readonly or root is None or config.rootfs is not None:
        return
    for index, mount in enumerate(config.mounts):
        parent_covered = within_any(mount.target, [t for t in covered if t != mount.target])
        if parent_covered:
            continue
        host_path = os.path.join(root, mount.target.lstrip("/"))
        want_dir = not isinstance(mount, Bind) or mount.is_dir
        if not (os.path.isdir(host_path) if want_dir else os.path.exists(host_path)):
            raise ConfigError(f"mounts[{index}].target",
                              f"{mount.target} does not exist in the read-only root "
                              f"(create it, mount under /tmp, or set rootfs_readonly=False)")


def _check_cwd(config: Config, covered: list[str]) -> None:
    """A cwd that plainly does not exist fails here rather than in chdir."""
    if config.cwd == "/":
        return   # every root has one
    root = _host_root(config)
    if config.joins("mount") or within_any(config.cwd, covered) or root is None:
        return   # inside a joined, fresh or layered mount: only the child can tell
    if not os.path.isdir(os.path.join(root, config.cwd.lstrip("/"))):
        raise ConfigError("cwd", f"{config.cwd} is not a directory in the container")


def _host_root(config: Config) -> str | None:
    """The host directory the container's "/" shows, or None when no one
    directory does (an Overlay's layers)."""
    if not config.has("mount"):
        return "/"
    if isinstance(config.rootfs, Overlay):
        return None
    return config.rootfs or "/"


def _check_privileges(config: Config) -> None:
    """Limits and filters the child could not set up, refused before clone."""
    in_userns = config.has("user") or config.joins("user")
    rlimits.check_against_caller(config.rlimits, may_raise=os.geteuid() == 0 and not in_userns)
    if config.seccomp is not None and not config.no_new_privs and os.geteuid() != 0 and not in_userns:
        raise ConfigError("no_new_privs", "a seccomp filter without no_new_privs needs CAP_SYS_ADMIN: "
                          "run as root, in a user namespace, or keep no_new_privs=True")


def _check_default_maps(config: Config) -> None:
    """The user and group must be among the ids the default maps give."""
    if not config.has("user"):
        return
    uids, gids = default_id_maps(config)
    for field, wanted, given, ranges in (("user", config.user, config.uid_map, uids),
                                         ("group", config.group, config.gid_map, gids)):
        if given is None and not any(inside <= wanted < inside + count
                                     for inside, _, count in ranges):
            raise ConfigError(field, f"{wanted} is not among the container's ids "
                                     f"({ranges[0][0]}-{ranges[0][0] + ranges[0][2] - 1}); "
                                     f"give uid_map/gid_map to map it")


def _check_pass_fds(config: Config) -> None:
    """A descriptor to pass must be open now, or the child's close step fails."""
    for fd in config.pass_fds:
        try:
            os.fstat(fd)
        except OSError:
            raise ConfigError("pass_fds", f"{fd} is not an open file descriptor") from None


def _check_unprivileged_maps(config: Config) -> None:
    """Without CAP_SETUID/CAP_SETGID, the kernel accepts one map line: our own
    id; and without any user namespace, the ids cannot change at all."""
    if os.geteuid() == 0:
        return
    if not (config.has("user") or config.joins("user")):
        if config.user or config.group:
            raise ConfigError("user", "changing ids needs root or a user namespace")
        return
    if not config.has("user"):
        return
    for field, ranges, own in (("uid_map", config.uid_map, os.geteuid()),
                               ("gid_map", config.gid_map, os.getegid())):
        if ranges is not None and (len(ranges) != 1 or ranges[0][1:] != (own, 1)):
            raise ConfigError(field, f"an unprivileged caller can only map its own id "
                                     f"({own}) with a count of 1, got {ranges!r}")
