"""The ``isolate`` command line: ``isolate run [options] -- CMD [ARG...]``,
named containers (exec, ps, kill, rm) and images (import, images, rmi).

Exit status, as docker and podman do it:

* the workload's exit status, or 128+N when a signal N killed it;
* 125 when isolate itself fails: a usage error, a bad configuration
  (:class:`isolate.ConfigError`) or a failed container setup
  (:class:`isolate.SpawnError`); one line on stderr says why;
* 127 when the command does not exist in the container
  (:class:`isolate.ExecutableNotFound`).

Signals that ask a command to stop or reload (SIGHUP, SIGINT, SIGQUIT, SIGTERM,
SIGUSR1, SIGUSR2) are forwarded to the container, whose init passes them on to
the workload: ``Ctrl-C`` and ``kill`` reach the workload although it runs in
its own session.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Iterator, NoReturn, Optional, Sequence

from isolate.errors import ConfigError, ExecutableNotFound, ImageError, IsolateError

# Each subcommand imports what it needs in its cmd_* function: `isolate ps`
# must not load the image store (tarfile, hashlib), the seccomp compiler or
# the spawn path.  tests/test_startup.py checks it.
if TYPE_CHECKING:
    from isolate.config import Config
    from isolate.images.store import Image, ImageStore
    from isolate.named.state import StateDir

EXIT_RUNTIME_ERROR = 125
EXIT_NOT_FOUND = 127
# isolate.namespace.KINDS, spelled out so that building the parser (for every
# subcommand, and --help) does not load the native module; test_startup.py
# checks that the two agree.
NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "net", "cgroup", "time")
FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                     signal.SIGUSR1, signal.SIGUSR2)
PROG = "isolate"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors exit 125, keeping 1-124 for the workload."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_RUNTIME_ERROR, f"{self.prog}: error: {message}\n")


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


def _add_run_options(run: argparse.ArgumentParser) -> None:
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
    _add_command(run)


def _add_command(parser: argparse.ArgumentParser, nargs: str = argparse.REMAINDER) -> None:
    parser.add_argument("command", nargs=nargs, metavar="-- CMD [ARG...]",
                        help="the command to run and its arguments")


def _add_exec_options(exec_: argparse.ArgumentParser) -> None:
    opt = exec_.add_argument
    opt("name", help="the container's name")
    opt("--env", action="append", type=_env_item, default=[], metavar="KEY=VALUE",
        help="set an environment variable (on top of the container's)")
    opt("--cwd", metavar="DIR", help="working directory (default: the container's)")
    opt("--uid", type=int, metavar="N", help="user id (default: the container's)")
    opt("--gid", type=int, metavar="N", help="group id (default: the container's)")
    # Not REMAINDER: after the NAME positional it would swallow the options;
    # the command comes after "--" (see parse_args).
    _add_command(exec_, nargs="*")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``isolate`` argument parser and its subcommands' parsers."""
    parser = _Parser(prog=PROG, description="Run commands in isolated Linux containers.")
    parser.add_argument("--root", metavar="DIR",
                        help="state directory of named containers (default: /run/isolate "
                             "for root, $XDG_RUNTIME_DIR/isolate otherwise)")
    parser.add_argument("--store", metavar="DIR",
                        help="image store (default: /var/lib/isolate for root, "
                             "$XDG_DATA_HOME/isolate or ~/.local/share/isolate otherwise)")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands = {
        "run": sub.add_parser("run", help="run a command in a new container",
                              description="Run CMD in a new container and exit with its status."),
        "exec": sub.add_parser("exec", help="run a command in a running named container",
                               description="Run CMD in the namespaces of a named container."),
        "ps": sub.add_parser("ps", help="list named containers"),
        "kill": sub.add_parser("kill", help="send a signal to a named container"),
        "rm": sub.add_parser("rm", help="forget a stopped named container"),
        "import": sub.add_parser("import", help="import an image archive into the store"),
        "images": sub.add_parser("images", help="list the images in the store"),
        "rmi": sub.add_parser("rmi", help="remove an image and the layers only it used"),
    }
    _add_run_options(commands["run"])
    _add_exec_options(commands["exec"])
    commands["kill"].add_argument("name")
    commands["kill"].add_argument("-s", "--signal", default="KILL", type=_signal,
                                  help="signal name or number (default: KILL)")
    commands["rm"].add_argument("name")
    commands["rm"].add_argument("-f", "--force", action="store_true",
                                help="kill it first if it is running")
    commands["import"].add_argument("archive")
    commands["import"].add_argument("--name", help="which image of a multi-image archive")
    commands["rmi"].add_argument("image", help="name or id")
    return parser, commands


def _signal(value: str) -> int:
    """An argparse type: "TERM", "SIGTERM" or "15" to a signal number."""
    if value.isdigit():
        return int(value)
    name = value.upper()
    try:
        return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal {value!r}") from None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line; usage errors exit 125 with a message."""
    parser, commands = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the command: argparse's REMAINDER
    # would otherwise swallow options that follow a positional (exec NAME).
    after: list[str] | None = None
    if "--" in argv:
        at = argv.index("--")
        argv, after = argv[:at], argv[at + 1:]
    args, unknown = parser.parse_known_args(argv)
    sub = commands[args.subcommand]
    if unknown:
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    if hasattr(args, "command"):
        command = list(args.command) + (after or [])
        if after is None and command[:1] == ["--"]:
            command = command[1:]
        if not command and not getattr(args, "image", None):
            sub.error(f"missing command (isolate {args.subcommand} [options] -- CMD [ARG...])")
        args.command = command
    return args


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


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128+N for death by signal N (returncode -N)."""
    return 128 - returncode if returncode < 0 else returncode


class SignalForwarder:
    """Passes SIGINT, SIGTERM etc. on to the container's process.

    Installed before the container starts, so a signal that arrives while it
    is being built is held and delivered as soon as the process exists.
    """

    def __init__(self) -> None:
        self.process: Any = None
        self.pending: list[int] = []

    def handle(self, signum: int, _frame: Any = None) -> None:
        """The signal handler: forward now, or hold until attach()."""
        if self.process is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(OSError):  # already gone: nothing to tell
            self.process.send_signal(signum)

    def attach(self, process: Any) -> None:
        """Start forwarding to ``process``, first the signals held so far."""
        self.process = process
        while self.pending:
            self.handle(self.pending.pop(0))

    @contextlib.contextmanager
    def installed(self) -> Iterator["SignalForwarder"]:
        """Install the handlers for the duration of the block."""
        previous = {sig: signal.signal(sig, self.handle) for sig in FORWARDED_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_container(command: list[str], config: Config, states: StateDir | None = None,
                  name: str | None = None) -> int:
    """Run the container to its end with inherited stdio; return its returncode.

    With a name, it is recorded in `states` while it runs (so it can be
    exec'd into), and its exit code once it ends."""
    from isolate.container import Container
    with SignalForwarder().installed() as forwarder:
        with Container(command, config=config) as container:
            forwarder.attach(container.process)
            if name is not None:
                from isolate.named.state import ContainerState
                states.save(ContainerState.for_process(name, container.pid, container.args, config))
            returncode = container.wait()
            if name is not None:
                states.update(name, lambda record: record.stopped(returncode))
            return returncode


def printable(text: object) -> str:
    """`text` safe for a terminal: every character that is not printable
    (C0 and C1 controls, DEL, bidi and other format characters, line
    separators) as a Python-style escape; printable Unicode stays.

    Container-provided text (a command from an image's Cmd, image names,
    records) goes through this before it reaches the operator's terminal,
    where ESC, BEL or CR could rewrite the screen or the window title.
    Undecodable bytes (surrogate escapes from os.fsdecode) show as \\xNN.
    """
    return "".join(char if char.isprintable() else _escape(char) for char in str(text))


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:   # os.fsdecode's stand-in for an undecodable byte
        code -= 0xDC00
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def note(message: object) -> None:
    """Print ``isolate: MESSAGE`` on stderr, escaped (see printable())."""
    print(f"{PROG}: {printable(message)}", file=sys.stderr)


def error(message: object) -> None:
    """Print a one-line error on stderr (whitespace runs become one space)."""
    note(" ".join(str(message).split()))


def default_store() -> str:
    """Where images live unless --store says otherwise."""
    if os.geteuid() == 0:
        return "/var/lib/isolate"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "isolate")


def open_store(args: argparse.Namespace) -> ImageStore:
    """The image store --store names, or the default one."""
    from isolate.images.store import ImageStore
    return ImageStore(args.store or default_store())


def import_archive(store: ImageStore, path: str, name: str | None = None) -> Image:
    """Import with a progress bar on a terminal."""
    from isolate.cli.progress import ProgressBar
    bar = ProgressBar(f"importing {os.path.basename(path.rstrip('/'))}")
    try:
        return store.import_archive(path, name=name, progress=bar)
    finally:
        bar.close()


#: Endings that make an --image argument an archive's path, not a stored name.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2", ".oci")


def is_image_path(value: str) -> bool:
    """Whether --image `value` is clearly a path: absolute, starting with
    ./ or ../, or ending in an archive suffix.  Anything else (busybox,
    ghcr.io/org/app:1) is a stored image's name, even if a file of that name
    lies in the current directory: a shared directory must not decide which
    image runs."""
    return (value.startswith(("/", "./", "../")) or value in (".", "..")
            or value.endswith(ARCHIVE_SUFFIXES))


def find_image(args: argparse.Namespace) -> Image:
    """--image: a path (is_image_path) is imported first, saying so on
    stderr; anything else is looked up in the store, quietly, as docker
    and podman do."""
    store = open_store(args)
    if is_image_path(args.image):
        note(f"using image archive {args.image}")
        return import_archive(store, args.image)
    try:
        return store.get(args.image)
    except ImageError as exc:
        if os.path.exists(args.image):
            raise ImageError(f"{exc}; to run the archive {args.image!r} in this directory, "
                             f"write ./{args.image}") from None
        raise


def cmd_run(args: argparse.Namespace) -> int:
    """``isolate run``: the workload's exit status (0 once started with -d)."""
    from isolate.config import Config
    options = config_from_args(args)
    if args.image:
        if args.rootfs:
            raise ConfigError("--image", "give either --rootfs or --image")
        image = find_image(args)
        options["rootfs"] = image
        args.command = image.command(args.command or None)
    config = Config(**options)
    if args.detach:
        from isolate.named import containers as named
        from isolate.named.state import StateDir
        record = named.start_detached(StateDir(args.root), args.name or named.new_name(),
                                      args.command, config)
        print(record.name)
        return 0
    states = None
    if args.name:
        from isolate.named.state import StateDir
        states = StateDir(args.root)
    return exit_status(run_container(args.command, config, states, args.name))


def cmd_exec(args: argparse.Namespace) -> int:
    """``isolate exec NAME -- CMD``: the command's exit status."""
    from isolate.named import containers as named
    from isolate.named.state import StateDir
    overrides: dict[str, Any] = {}
    for option, keyword in (("cwd", "cwd"), ("uid", "user"), ("gid", "group")):
        if getattr(args, option) is not None:
            overrides[keyword] = getattr(args, option)
    result = named.exec_named(StateDir(args.root), args.name, args.command,
                              extra_env=dict(args.env), **overrides)
    return exit_status(result.returncode)


def cmd_ps(args: argparse.Namespace) -> int:
    """``isolate ps``: one line per named container."""
    from isolate.named.state import StateDir
    print(f"{'NAME':<20} {'PID':>8} {'STATUS':<8} {'CREATED':<19} COMMAND")
    for record in StateDir(args.root).list():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        print(f"{printable(record.name):<20} {record.pid:>8} {record.status():<8} {created:<19} "
              f"{printable(' '.join(record.argv))}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    """``isolate kill NAME``."""
    from isolate.named import containers as named
    from isolate.named.state import StateDir
    named.kill_named(StateDir(args.root), args.name, args.signal)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """``isolate rm NAME``."""
    from isolate.named import containers as named
    from isolate.named.state import StateDir
    named.remove_named(StateDir(args.root), args.name, force=args.force)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``isolate import ARCHIVE``: prints the image's id."""
    image = import_archive(open_store(args), args.archive, args.name)
    print(printable(image.id))
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    """``isolate images``: one line per stored image."""
    print(f"{'NAME':<40} {'ID':<19} LAYERS")
    for image in open_store(args).images():
        for name in image.names or ("<none>",):
            print(f"{printable(name):<40} {printable(image.id[:19]):<19} {len(image.layers)}")
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """``isolate rmi IMAGE``."""
    store = open_store(args)
    store.remove(store.get(args.image))
    return 0


COMMANDS = {"run": cmd_run, "exec": cmd_exec, "ps": cmd_ps, "kill": cmd_kill, "rm": cmd_rm,
            "import": cmd_import, "images": cmd_images, "rmi": cmd_rmi}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``isolate`` console script and ``python -m isolate``."""
    args = parse_args(argv)
    try:
        return COMMANDS[args.subcommand](args)
    except ExecutableNotFound as e:
        error(e)
        return EXIT_NOT_FOUND
    except IsolateError as e:  # ConfigError, SpawnError, StateError and the rest
        error(e)
        return EXIT_RUNTIME_ERROR
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
