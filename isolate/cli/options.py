"""The options of ``isolate run`` and ``isolate exec`` and what they mean to
the library: their argparse definitions and types, and config_from_args(),
which turns run's options into :class:`isolate.Config` keywords.

Every command line loads this module (the parser needs the definitions),
so it imports the library only inside the functions that use it.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Optional, Sequence

# isolate.namespace.KINDS, spelled out so that building the parser (for every
# subcommand, and --help) does not load the native module; test_startup.py
# checks that the two agree.
NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "net", "cgroup", "time")


def _mount_spec(kind: str) -> Any:
    """An argparse type turning ``SRC:DST`` (or ``PATH``) into ``(kind, src, dst)``."""

    def parse(value: str) -> tuple[str, str, str]:
        src, sep, dst = value.partition(":")
        if not src or (sep and not dst):
            raise argparse.ArgumentTypeError(f"expected SRC:DST, got {value!r}")
        return (kind, src, dst if sep else src)

    parse.__name__ = f"{kind} mount"
    return parse


def _tmpfs_spec(value: str) -> tuple[str, str, str]:
    """An argparse type turning ``DST`` into ``("tmpfs", "", DST)``."""
    if not value:
        raise argparse.ArgumentTypeError("expected a target path")
    return ("tmpfs", "", value)


def _ulimit(value: str) -> tuple[str, tuple[int | None, int | None]]:
    """An argparse type turning ``NAME=SOFT[:HARD]`` into ``(NAME, (SOFT, HARD))``."""
    name, sep, amounts = value.partition("=")
    soft, _, hard = amounts.partition(":")
    try:
        pair = tuple(None if a in ("unlimited", "-1") else int(a) for a in (soft, hard or soft))
    except ValueError:
        pair = ()
    if not name or not sep or len(pair) != 2:
        raise argparse.ArgumentTypeError(f"expected NAME=SOFT[:HARD] with numbers, got {value!r}")
    return (name, pair)


def _env_item(value: str) -> tuple[str, str]:
    """An argparse type turning ``KEY=VALUE`` into ``(KEY, VALUE)``."""
    key, sep, val = value.partition("=")
    if not key or not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return (key, val)


def add_run_options(run: argparse.ArgumentParser) -> None:
    """The options of ``isolate run`` (docs/api.md, "Command line")."""
    opt = run.add_argument
    opt("--hostname", metavar="NAME", help="hostname inside (default: isolate)")
    opt("--rootfs", metavar="DIR", help="use DIR as the root (default: the host's /, read-only)")
    opt("--image", metavar="IMAGE",
        help="run on an image: an archive (docker save, podman save, OCI archive or layout "
             "directory), imported into the store first, or the name or id of a stored image; "
             "the command defaults to its Entrypoint and Cmd")
    opt("--rw-rootfs", action="store_true", help="make the root filesystem writable")
    opt("--bind", dest="mounts", action="append", type=_mount_spec("bind"),
        metavar="SRC:DST", help="bind SRC read-only at DST (repeatable)")
    opt("--bind-rw", dest="mounts", action="append", type=_mount_spec("bind-rw"),
        metavar="SRC:DST", help="bind SRC read-write at DST (repeatable)")
    opt("--tmpfs", dest="mounts", action="append", type=_tmpfs_spec,
        metavar="DST", help="mount a fresh tmpfs at DST (repeatable)")
    opt("--share", action="append", choices=NAMESPACES, default=[], metavar="NS",
        help=f"do not create namespace NS, one of: {', '.join(NAMESPACES)} (repeatable)")
    opt("--env", action="append", type=_env_item, default=[], metavar="KEY=VALUE",
        help="set an environment variable (repeatable; the environment is clean otherwise)")
    opt("--inherit-env", action="store_true", help="start from this environment, not a clean one")
    opt("--cwd", metavar="DIR", help="working directory inside (default: /, or the image's)")
    opt("--uid", type=int, metavar="N", help="user id inside (default: 0, or the image's User)")
    opt("--gid", type=int, metavar="N",
        help="group id inside (default: 0, or the image's: the User's or the uid's group)")
    opt("--home", dest="expose_home", action="store_true",
        help="bind your home directory into the container, read-only (by default /home, "
             "/root and your home are empty)")
    opt("--host-ids", action="store_true",
        help="run the container's user as your own host uid and gid: as root, the container's "
             "root is then the host's root (needed to write root-owned --bind-rw directories; "
             "by default root's containers run as unprivileged host ids)")
    opt("--no-init", action="store_true",
        help="run the command itself as PID 1, without the reaping init")
    opt("--cap-add", action="append", default=[], metavar="CAP",
        help="keep capability CAP on top of the default set (repeatable; ALL for every one)")
    opt("--cap-drop", action="append", default=[], metavar="CAP",
        help="drop capability CAP from the kept set (repeatable; ALL for every one)")
    opt("--ulimit", action="append", type=_ulimit, default=[], metavar="NAME=SOFT[:HARD]",
        help="set a resource limit, e.g. nofile=1024:2048 or core=0 (repeatable)")
    opt("--seccomp", choices=("default", "unconfined"), default="default",
        help="the seccomp filter: Docker's default profile (default), or none")
    opt("--allow-new-privs", dest="no_new_privs", action="store_false",
        help="do not set no_new_privs (by default setuid binaries grant nothing)")
    opt("--memory", metavar="SIZE", help="memory limit (cgroup), e.g. 256M")
    opt("--memory-swap", metavar="SIZE", help="memory plus swap limit, e.g. 256M (= --memory: no swap)")
    opt("--cpus", type=float, metavar="N", help="CPU time limit in CPUs, e.g. 0.5")
    opt("--pids-limit", type=int, metavar="N", help="most processes and threads at once")
    opt("--cpuset-cpus", metavar="LIST", help="CPUs the container may use, e.g. 0-1")
    opt("--cgroup-parent", metavar="PATH", help="create the container's cgroup under PATH")
    opt("--name", help="name the container, to exec into, kill or remove it later")
    opt("-d", "--detach", action="store_true",
        help="start it in the background (output in the state directory) and print its name")
    opt("--rm", action="store_true",
        help="remove the container (its record, log and cgroup) once it has exited")
    _add_terminal_options(run)
    _add_command(run)


def _add_terminal_options(parser: argparse.ArgumentParser) -> None:
    """-t and -i, as docker's: -t alone shows the command's terminal, -it also types into it."""
    opt = parser.add_argument
    opt("-t", "--tty", action="store_true",
        help="give the command a terminal of its own (a pty of the container) and relay its "
             "output and window size to yours; with -i your keys go to it too")
    opt("-i", "--interactive", action="store_true",
        help="with -t, type into the command's terminal: your stdin, which must be a terminal, "
             "is put in raw mode and relayed (Ctrl-C then reaches the command's foreground "
             "job); without -t it changes nothing, the command always inherits your stdin")


def _add_command(parser: argparse.ArgumentParser, nargs: str = argparse.REMAINDER) -> None:
    """The ``-- CMD [ARG...]`` positional that ends run's and exec's options."""
    parser.add_argument("command", nargs=nargs, metavar="-- CMD [ARG...]",
                        help="the command to run and its arguments")


def add_exec_options(exec_: argparse.ArgumentParser) -> None:
    """The arguments of ``isolate exec NAME [options] -- CMD [ARG...]``."""
    opt = exec_.add_argument
    opt("name", help="the container's name")
    opt("--env", action="append", type=_env_item, default=[], metavar="KEY=VALUE",
        help="set an environment variable (on top of the container's)")
    opt("--cwd", metavar="DIR", help="working directory (default: the container's)")
    opt("--uid", type=int, metavar="N", help="user id (default: the container's)")
    opt("--gid", type=int, metavar="N", help="group id (default: the container's)")
    _add_terminal_options(exec_)
    # Not REMAINDER: after the NAME positional it would swallow the options;
    # the command comes after "--" (see main.parse_args).
    _add_command(exec_, nargs="*")


def make_mounts(specs: Sequence[tuple[str, str, str]]) -> list[Any]:
    """Turn ``(kind, src, dst)`` specs into isolate mount objects, in order."""
    from isolate.mounts import Bind, Tmpfs
    mounts: list[Any] = []
    for kind, src, dst in specs:
        if kind == "tmpfs":
            mounts.append(Tmpfs(dst))
        else:
            mounts.append(Bind(src, dst, readonly=(kind == "bind")))
    return mounts


def make_env(items: Sequence[tuple[str, str]], inherit: bool) -> Optional[dict[str, str]]:
    """The workload's environment, or None for isolate's clean default."""
    if not items and not inherit:
        return None
    env = dict(os.environ) if inherit else {}
    env.update(items)
    return env


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Map parsed options to isolate config keywords (only those given)."""
    from isolate.cgroups.limits import CgroupLimit
    from isolate.namespace import ALL as ALL_NAMESPACES
    config: dict[str, Any] = {}
    simple = {"hostname": "hostname", "rootfs": "rootfs", "cwd": "cwd",
              "uid": "user", "gid": "group"}
    for option, keyword in simple.items():
        if getattr(args, option) is not None:
            config[keyword] = getattr(args, option)
    if args.rw_rootfs:
        config["rootfs_readonly"] = False
    if args.no_init:
        config["init"] = False
    if args.expose_home:
        config["expose_home"] = True
    if args.host_ids:
        config["uid_map"] = [(args.uid or 0, os.geteuid(), 1)]
        config["gid_map"] = [(args.gid or 0, os.getegid(), 1)]
    if args.mounts:
        config["mounts"] = make_mounts(args.mounts)
    if args.share:
        config["namespaces"] = ALL_NAMESPACES - set(args.share)
    if args.cap_add:
        config["cap_add"] = args.cap_add
    if args.cap_drop:
        config["cap_drop"] = args.cap_drop
    if args.ulimit:
        config["rlimits"] = dict(args.ulimit)
    if args.seccomp == "unconfined":
        config["seccomp"] = None
    if not args.no_new_privs:
        config["no_new_privs"] = False
    limits = {key: value for key, value in (
        ("memory", args.memory), ("memory_swap", args.memory_swap), ("cpu", args.cpus),
        ("pids", args.pids_limit), ("cpuset", args.cpuset_cpus)) if value is not None}
    if limits:
        config["limits"] = CgroupLimit(**limits)
    if args.cgroup_parent is not None:
        config["cgroup_parent"] = args.cgroup_parent
    env = make_env(args.env, args.inherit_env)
    if env is not None:
        config["env"] = env
    return config


