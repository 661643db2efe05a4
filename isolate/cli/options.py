"""The options of ``isolate run`` and ``isolate exec`` and what they mean to
the library: their argparse definitions and types, and config_from_args(),
which turns run's options into :class:`isolate.Config` keywords.

The names are docker's where docker has the option (-e, --env-file, -v,
--mount, --tmpfs, -w, -u, --init, --read-only, --entrypoint), isolate's
older ones (--env, --bind, --cwd, --uid...) beside them.  A value is parsed
whole or refused: an error names the flag and the value, never mounts a
path such as "/x:size=64m" or "/dst:ro" literally.  What only the library
or the container's files can judge (a missing bind source, an unknown
user) is checked before anything is created, and is a ConfigError naming
the flag too.

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

# What an argument's values are, for the shell completion (isolate/cli/completion.py):
# completes() notes them on the argparse action where the argument is defined.
#: Named containers: any, the running ones, the stopped ones.
CONTAINERS, RUNNING, STOPPED = "containers", "running", "stopped"
#: The names of the stored images.
IMAGES = "images"
#: Host paths: any file, directories only.
FILES, DIRECTORIES = "files", "directories"
#: Signal names; programs on the PATH (the command after ``--``).
SIGNALS, PROGRAMS = "signals", "programs"
#: ``NAME:`` of a running container, for cp's NAME:PATH (the PATH inside is not listed).
CONTAINER_PATHS = "container-paths"


def completes(action: argparse.Action, *kinds: str) -> argparse.Action:
    """Note on `action` what its values are, as the kinds above, for the
    shell completion; return it.  An argument with choices needs none."""
    action.completes = kinds
    return action


class MountSpec(tuple):
    """One mount a flag asked for: the tuple ``(kind, source, target)``,
    kind "bind" (read-only), "bind-rw" or "tmpfs" (source ""), and as
    attributes a tmpfs's `size` (bytes) and `mode` (None: Tmpfs's
    defaults), and the `flag` and `value` it came from, which errors found
    only when the mount is built (a missing source) name.

    It is the tuple of the three strings, as --bind's and --tmpfs's specs
    were before options (and as tests compare them); the rest rides along."""

    kind: str
    source: str
    target: str
    size: Optional[int]
    mode: Optional[int]
    flag: str
    value: str

    def __new__(cls, kind: str, source: str, target: str, *, flag: str, value: str,
                size: Optional[int] = None, mode: Optional[int] = None) -> "MountSpec":
        spec = super().__new__(cls, (kind, source, target))
        spec.kind, spec.source, spec.target = kind, source, target
        spec.size, spec.mode, spec.flag, spec.value = size, mode, flag, value
        return spec


def _bind_spec(flag: str, readonly: bool) -> Any:
    """An argparse type for --bind (`readonly`) or --bind-rw: ``SRC[:DST[:OPTIONS]]``
    (DST defaults to SRC; OPTIONS as -v's, and may only repeat what the flag says)."""

    def parse(value: str) -> MountSpec:
        parts = value.split(":")
        if len(parts) > 3 or not all(parts[:2]):
            raise argparse.ArgumentTypeError(f"expected SRC:DST[:OPTIONS], got {value!r}")
        source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
        wanted = readonly if len(parts) < 3 else _bind_options(parts[2], value)
        if wanted != readonly:
            other = "--bind" if wanted else "--bind-rw"
            raise argparse.ArgumentTypeError(
                f"{value!r} asks for a {'read-only' if wanted else 'read-write'} bind: "
                f"use {other} (or -v)")
        return MountSpec("bind" if readonly else "bind-rw", source, target, flag=flag, value=value)

    parse.__name__ = f"{flag} mount"
    return parse


def _bind_options(options: str, value: str) -> bool:
    """Whether the bind of ``SRC:DST:OPTIONS`` (`value`) is read-only: "ro"
    or "rw", docker's only options isolate can honour (its SELinux labels,
    propagation modes and nocopy are refused, never ignored)."""
    modes = options.split(",")
    for mode in modes:
        if mode not in ("ro", "rw"):
            raise argparse.ArgumentTypeError(
                f"{value!r}: unknown or unsupported option {mode!r} (isolate knows ro and rw)")
    if len(set(modes)) > 1:
        raise argparse.ArgumentTypeError(f"{value!r}: ro and rw conflict")
    return modes[0] == "ro"


def _volume(value: str) -> MountSpec:
    """An argparse type for -v: ``SRC:DST[:OPTIONS]``, read-write unless "ro",
    as docker's bind; its named and anonymous volumes have no equivalent."""
    parts = value.split(":")
    if len(parts) == 1:
        raise argparse.ArgumentTypeError(
            f"{value!r}: anonymous volumes are not supported: give SRC:DST[:OPTIONS], SRC an "
            f"absolute host path")
    if len(parts) > 3 or not all(parts[:2]):
        raise argparse.ArgumentTypeError(f"expected SRC:DST[:OPTIONS], got {value!r}")
    if not parts[0].startswith("/"):
        raise argparse.ArgumentTypeError(
            f"{value!r}: named volumes are not supported: SRC must be an absolute host path")
    readonly = len(parts) == 3 and _bind_options(parts[2], value)
    return MountSpec("bind" if readonly else "bind-rw", parts[0], parts[1],
                     flag="-v/--volume", value=value)


#: --mount's keys that mean the same as another, as docker reads them.
_MOUNT_ALIASES = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}

#: --mount keys each type takes (after _MOUNT_ALIASES).
_MOUNT_KEYS = {"bind": {"type", "source", "target", "readonly"},
               "tmpfs": {"type", "target", "tmpfs-size", "tmpfs-mode"}}


def _mount(value: str) -> MountSpec:
    """An argparse type for --mount: docker's comma-separated KEY=VALUE
    fields (CSV, so a field may be quoted), ``type=bind,source=..,target=..
    [,readonly]`` or ``type=tmpfs,target=..[,tmpfs-size=..][,tmpfs-mode=..]``."""
    import csv
    fields: dict[str, str] = {}
    try:
        rows = list(csv.reader([value], strict=True))
    except csv.Error as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: not valid CSV ({exc})") from None
    for field in rows[0] if rows else []:
        key, sep, val = field.partition("=")
        key = _MOUNT_ALIASES.get(key.lower(), key.lower())
        if not sep and key != "readonly":
            raise argparse.ArgumentTypeError(f"{value!r}: field {field!r} must be KEY=VALUE")
        fields[key] = val if sep else "true"
    kind = fields.get("type", "volume")   # docker's default type
    if kind == "volume":
        raise argparse.ArgumentTypeError(
            f"{value!r}: volumes are not supported: give type=bind (source an absolute host "
            f"path) or type=tmpfs")
    if kind not in _MOUNT_KEYS:
        raise argparse.ArgumentTypeError(f"{value!r}: unknown or unsupported type {kind!r} "
                                         f"(isolate knows bind and tmpfs)")
    unknown = sorted(set(fields) - _MOUNT_KEYS[kind])
    if unknown:
        raise argparse.ArgumentTypeError(f"{value!r}: unknown or unsupported key {unknown[0]!r} "
                                         f"for type={kind} (isolate knows "
                                         f"{', '.join(sorted(_MOUNT_KEYS[kind] - {'type'}))})")
    target = fields.get("target", "")
    if not target:
        raise argparse.ArgumentTypeError(f"{value!r}: target= is missing")
    if kind == "tmpfs":
        return MountSpec("tmpfs", "", target, flag="--mount", value=value,
                         size=_size(fields.get("tmpfs-size"), value),
                         mode=_mode(fields.get("tmpfs-mode"), value))
    source = fields.get("source", "")
    if not source.startswith("/"):
        raise argparse.ArgumentTypeError(f"{value!r}: source= must be an absolute host path")
    readonly = _boolean(fields.get("readonly", "false"), value)
    return MountSpec("bind" if readonly else "bind-rw", source, target, flag="--mount",
                     value=value)


def _boolean(text: str, value: str) -> bool:
    """A --mount field's true or false, in the spellings docker takes (Go's ParseBool)."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: expected true or false, got {text!r}")


def _size(text: Optional[str], value: str) -> Optional[int]:
    """A tmpfs size ("64m", "1g", bytes) in bytes; None when not given."""
    if text is None:
        return None
    from isolate._util.units import parse_size
    from isolate.errors import ConfigError
    try:
        return parse_size(text, "size")
    except ConfigError as exc:
        reason = str(exc).removeprefix(f"{exc.field}: ")
        raise argparse.ArgumentTypeError(f"{value!r}: {reason}") from None


def _mode(text: Optional[str], value: str) -> Optional[int]:
    """A tmpfs mode in octal ("1777", "0700"); None when not given."""
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise argparse.ArgumentTypeError(f"{value!r}: expected an octal mode like 1777, "
                                         f"got {text!r}")
    return mode


def _tmpfs_spec(value: str) -> MountSpec:
    """An argparse type for --tmpfs: ``DST[:OPTIONS]``, OPTIONS comma-separated
    size=SIZE and mode=OCTAL, as docker's."""
    target, sep, options = value.partition(":")
    if not target:
        raise argparse.ArgumentTypeError(f"expected DST[:size=SIZE,mode=MODE], got {value!r}")
    given: dict[str, str] = {}
    for option in options.split(",") if sep else []:
        key, eq, val = option.partition("=")
        if key not in ("size", "mode") or not eq:
            raise argparse.ArgumentTypeError(f"{value!r}: unknown or unsupported option "
                                             f"{option!r} (isolate knows size= and mode=)")
        given[key] = val
    return MountSpec("tmpfs", "", target, flag="--tmpfs", value=value,
                     size=_size(given.get("size"), value), mode=_mode(given.get("mode"), value))


def _user_spec(value: str) -> str:
    """An argparse type for -u/--user: ``USER[:GROUP]``, each a name or a
    number (looked up later, in the container's /etc/passwd and /etc/group)."""
    user, sep, group = value.partition(":")
    if not user or (sep and not group) or ":" in group:
        raise argparse.ArgumentTypeError(f"expected USER[:GROUP], names or ids, got {value!r}")
    return value


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


def _env_item(value: str) -> tuple[str, Optional[str]]:
    """An argparse type for -e: ``KEY=VALUE`` as (KEY, VALUE), ``KEY`` alone
    as (KEY, None): the caller's value, if it has one (see resolve_env)."""
    key, sep, val = value.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or KEY, got {value!r}")
    return (key, val if sep else None)


def add_run_options(run: argparse.ArgumentParser) -> None:
    """The options of ``isolate run`` (docs/api.md, "Command line"): docker
    run's names where it has the option, isolate's older names beside them."""
    opt = run.add_argument
    opt("--hostname", metavar="NAME", help="hostname inside (default: isolate)")
    completes(opt("--rootfs", metavar="DIR",
                  help="use DIR as the root (default: the host's /, read-only)"), DIRECTORIES)
    completes(opt("--image", metavar="IMAGE",
                  help="run on an image: an archive (docker save, podman save, OCI archive or "
                       "layout directory), imported into the store first, or the name or id of "
                       "a stored image; the command defaults to its Entrypoint and Cmd"),
              IMAGES, FILES)
    opt("--entrypoint", metavar="CMD",
        help="with --image: run CMD instead of the image's Entrypoint, the arguments after -- "
             "following it (the image's Cmd is then not used; '' drops the Entrypoint and "
             "keeps the Cmd), e.g. --entrypoint sh -- -c 'ls /'")
    # Exclusive: either would silently undo the other.
    root_mode = run.add_mutually_exclusive_group()
    root_mode.add_argument("--rw-rootfs", action="store_true",
                           help="make the root filesystem writable")
    root_mode.add_argument("--read-only", action="store_true",
                           help="make the root filesystem read-only, an image's too (a --rootfs "
                                "directory and the host's / are by default)")
    completes(opt("-v", "--volume", dest="mounts", action="append", type=_volume,
                  metavar="SRC:DST[:ro|rw]",
                  help="bind the host path SRC at DST, read-write unless :ro (repeatable; SRC "
                       "must be absolute: docker's named volumes do not exist here), e.g. "
                       "-v /srv/data:/data:ro"), FILES)
    opt("--mount", dest="mounts", action="append", type=_mount, metavar="type=...,...",
        help="docker's long form (repeatable): type=bind,source=SRC,target=DST[,readonly] or "
             "type=tmpfs,target=DST[,tmpfs-size=SIZE][,tmpfs-mode=MODE], e.g. "
             "--mount type=tmpfs,dst=/cache,tmpfs-size=64m")
    completes(opt("--bind", dest="mounts", action="append",
                  type=_bind_spec("--bind", readonly=True), metavar="SRC[:DST[:ro]]",
                  help="bind SRC read-only at DST (default: SRC) (repeatable)"), FILES)
    completes(opt("--bind-rw", dest="mounts", action="append",
                  type=_bind_spec("--bind-rw", readonly=False), metavar="SRC[:DST[:rw]]",
                  help="bind SRC read-write at DST (default: SRC) (repeatable)"), FILES)
    opt("--tmpfs", dest="mounts", action="append", type=_tmpfs_spec,
        metavar="DST[:size=SIZE,mode=MODE]",
        help="mount a fresh tmpfs at DST (repeatable), e.g. --tmpfs /run:size=64m,mode=1777")
    opt("--share", action="append", choices=NAMESPACES, default=[], metavar="NS",
        help=f"do not create namespace NS, one of: {', '.join(NAMESPACES)} (repeatable)")
    _add_env_options(run, "the environment is clean otherwise")
    opt("--inherit-env", action="store_true", help="start from this environment, not a clean one")
    opt("-w", "--workdir", "--cwd", dest="cwd", metavar="DIR",
        help="working directory inside (default: /, or the image's)")
    opt("-u", "--user", type=_user_spec, metavar="USER[:GROUP]",
        help="user inside, a name or an id, and its group, looked up in the container's "
             "/etc/passwd and /etc/group (default: root, or the image's User), e.g. -u nobody "
             "or -u 1000:1000")
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
    opt("--init", dest="init", action="store_const", const=True,
        help="run a small init as PID 1 that reaps orphans and passes signals on, the command "
             "as PID 2 (the default)")
    opt("--no-init", dest="init", action="store_const", const=False,
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


def _add_env_options(parser: argparse.ArgumentParser, otherwise: str) -> None:
    """-e and --env-file, as docker run's and docker exec's."""
    parser.add_argument(
        "-e", "--env", action="append", type=_env_item, default=[], metavar="KEY[=VALUE]",
        help=f"set an environment variable; KEY alone passes on your KEY, if you have one "
             f"(repeatable; {otherwise}), e.g. -e LANG=C.UTF-8 -e TERM")
    completes(parser.add_argument(
        "--env-file", action="append", default=[], metavar="FILE",
        help="set the variables FILE lists: KEY=VALUE lines (the value as written, no quotes "
             "removed), KEY alone as -e KEY, # comments (repeatable; -e wins)"), FILES)


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
    completes(parser.add_argument("command", nargs=nargs, metavar="-- CMD [ARG...]",
                                  help="the command to run and its arguments"), PROGRAMS)


def add_exec_options(exec_: argparse.ArgumentParser) -> None:
    """The arguments of ``isolate exec NAME [options] -- CMD [ARG...]``."""
    opt = exec_.add_argument
    completes(opt("name", help="the container's name"), RUNNING)
    _add_env_options(exec_, "on top of the container's")
    opt("-w", "--workdir", "--cwd", dest="cwd", metavar="DIR",
        help="working directory (default: the container's)")
    opt("-u", "--user", type=_user_spec, metavar="USER[:GROUP]",
        help="user, a name or an id, and its group, looked up in the container's /etc/passwd "
             "and /etc/group (default: the container's), e.g. -u nobody or -u 1000:1000")
    opt("--uid", type=int, metavar="N", help="user id (default: the container's)")
    opt("--gid", type=int, metavar="N", help="group id (default: the container's)")
    _add_terminal_options(exec_)
    # Not REMAINDER: after the NAME positional it would swallow the options;
    # the command comes after "--" (see main.parse_args).
    _add_command(exec_, nargs="*")


def make_mounts(specs: Sequence[MountSpec]) -> list[Any]:
    """Turn the mount flags' specs into isolate mount objects, in order.  A
    value only the library can judge (a missing source, a relative target)
    is a ConfigError naming the flag and the value it was given."""
    from isolate.errors import ConfigError
    from isolate.mounts import Bind, Tmpfs
    mounts: list[Any] = []
    for spec in specs:
        try:
            if spec.kind == "tmpfs":
                mode = {} if spec.mode is None else {"mode": spec.mode}
                mounts.append(Tmpfs(spec.target, size=spec.size, **mode))
            else:
                mounts.append(Bind(spec.source, spec.target, readonly=(spec.kind == "bind")))
        except ConfigError as exc:
            # The flag says what Bind.source or Tmpfs.target would.
            reason = str(exc).removeprefix(f"{exc.field}: ")
            raise ConfigError(spec.flag, f"{spec.value!r}: {reason}") from None
    return mounts


def read_env_file(path: str) -> list[tuple[str, Optional[str]]]:
    """The variables --env-file `path` sets, as _env_item gives them, in
    docker's format: a line is KEY=VALUE (the value as written: no quotes
    removed, no trailing blanks stripped) or KEY alone; blank lines and
    lines starting with # are skipped, leading blanks ignored, CRLF endings
    read as LF.  A bad line is a ConfigError naming the file and its number,
    never its value (env files hold secrets)."""
    from isolate.errors import ConfigError
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError("--env-file", f"cannot read {path!r}: {exc.strerror}") from None
    items: list[tuple[str, Optional[str]]] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:   # docker skips a byte order mark on the first line
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise ConfigError("--env-file", f"{path}, line {number}: not UTF-8 text") from None
        line = line.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not key:
            problem = "no variable name before '='"
        elif any(char.isspace() for char in key):
            problem = f"the variable name {key.rstrip()!r} contains a blank"
        elif "\0" in line:
            problem = "a NUL byte"
        else:
            items.append((key, value if sep else None))
            continue
        raise ConfigError("--env-file", f"{path}, line {number}: {problem}")
    return items


def resolve_env(items: Sequence[tuple[str, Optional[str]]]) -> dict[str, str]:
    """The variables `items` set, the last of a name winning: KEY=VALUE as
    given, KEY alone with the caller's value, or left out when the caller
    has none (docker's -e KEY skips it too)."""
    env: dict[str, str] = {}
    for key, value in items:
        value = os.environ.get(key) if value is None else value
        if value is not None:
            env[key] = value
    return env


def env_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The variables --env-file and -e set: the files first, in order, then
    -e, as docker reads them (so -e wins)."""
    items = [item for path in args.env_file for item in read_env_file(path)]
    return resolve_env(items + list(args.env))


def make_env(args: argparse.Namespace) -> Optional[dict[str, str]]:
    """The workload's environment, or None for isolate's clean default."""
    if not (args.env or args.env_file or args.inherit_env):
        return None
    return {**(os.environ if args.inherit_env else {}), **env_from_args(args)}


def workdir_from_args(args: argparse.Namespace) -> dict[str, str]:
    """Config's cwd keyword for -w/--workdir/--cwd (none when not given)."""
    from isolate.errors import ConfigError
    if args.cwd is None:
        return {}
    if not args.cwd.startswith("/"):
        # Config would name its field, cwd; the user typed -w or --workdir.
        raise ConfigError("-w/--workdir/--cwd", f"{args.cwd!r}: expected an absolute path inside "
                                                f"the container")
    return {"cwd": args.cwd}


def user_from_args(args: argparse.Namespace, image: Any = None, root: str = "/",
                   where: str = "the host's /") -> dict[str, int]:
    """Config's user and group keywords for -u/--user, --uid and --gid
    (only those given).  -u's names, and its uid's group when it names
    none, come from /etc/passwd and /etc/group of the container's root:
    `image`'s layers, else the directory `root`, which `where` names."""
    from isolate.errors import ConfigError, ImageError
    ids = {keyword: getattr(args, option) for option, keyword in (("uid", "user"), ("gid", "group"))
           if getattr(args, option) is not None}
    if args.user is None:
        return ids
    if ids:
        raise ConfigError("-u/--user", f"{args.user!r}: give either -u or --uid/--gid")
    try:
        if image is not None:
            found = image.resolve_user(args.user)
        else:
            from isolate.images.user import resolve_user_in
            found = resolve_user_in(args.user, root, where)
    except (ImageError, OSError) as exc:   # OSError: a root we may not look into
        raise ConfigError("-u/--user", f"{args.user!r}: {exc}") from None
    assert found is not None   # _user_spec refuses an empty USER
    return {"user": found[0], "group": found[1]}


def config_from_args(args: argparse.Namespace, image: Any = None) -> dict[str, Any]:
    """Map parsed options to isolate config keywords (only those given);
    `image` is the Image of --image, whose files -u looks names up in."""
    from isolate.cgroups.limits import CgroupLimit
    from isolate.errors import ConfigError
    from isolate.namespace import ALL as ALL_NAMESPACES
    config: dict[str, Any] = {}
    for option in ("hostname", "rootfs"):
        if getattr(args, option) is not None:
            config[option] = getattr(args, option)
    config.update(workdir_from_args(args))
    if args.rootfs is not None:
        root = os.path.abspath(args.rootfs)
        config.update(user_from_args(args, image, root, f"rootfs {root}"))
    else:
        config.update(user_from_args(args, image))
    if args.entrypoint is not None and image is None:
        raise ConfigError("--entrypoint", f"{args.entrypoint!r}: only with --image (there is no "
                                          f"Entrypoint to replace: give the command after --)")
    if args.rw_rootfs:
        config["rootfs_readonly"] = False
    if args.read_only:
        config["rootfs_readonly"] = True
    if args.init is not None:
        config["init"] = args.init
    if args.expose_home:
        config["expose_home"] = True
    if args.host_ids:
        config["uid_map"] = [(config.get("user", 0), os.geteuid(), 1)]
        config["gid_map"] = [(config.get("group", 0), os.getegid(), 1)]
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
    env = make_env(args)
    if env is not None:
        config["env"] = env
    return config


def image_command(args: argparse.Namespace, image: Any) -> list[str]:
    """The command a run on `image` runs, as docker builds it: the image's
    Entrypoint, then the command line's arguments or else the image's Cmd.
    --entrypoint CMD replaces the Entrypoint, and the Cmd is then not used
    (the arguments alone follow CMD); --entrypoint '' drops the Entrypoint."""
    from isolate.errors import ConfigError
    if args.entrypoint is None:
        return image.command(args.command or None)
    if args.entrypoint:
        return [args.entrypoint, *args.command]
    command = list(args.command) or image.cmd
    if not command:
        raise ConfigError("--entrypoint", "'' drops the image's Entrypoint, and neither the "
                                          "command line nor the image's Cmd gives a command")
    return command
