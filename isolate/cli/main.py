"""The ``isolate`` command line: ``isolate run [options] -- CMD [ARG...]``,
named containers (exec, ps, kill, rm, wait, stop, start, restart, logs) and
images (import, images, image inspect, rmi).

This module parses the command line and hands it to the subcommand's
module, imported only then: run.py (run, exec), containers.py (ps, kill,
rm), lifecycle.py (wait, stop, start, restart, logs) or images.py (import,
images, image inspect, rmi); the inspection and transfer verbs go by
INSPECTION_COMMANDS (inspect.py: inspect, top; stats.py; pause.py: pause,
unpause; transfer.py: cp, commit; system.py: info, version, --version).
Building the parser loads just
options.py and output.py besides, so that ``isolate --help`` and
``isolate ps`` do not load the image store (tarfile, hashlib), the seccomp
compiler or the spawn path; tests/test_startup.py checks it.

Exit status, as docker and podman do it:

* the workload's exit status, or 128+N when a signal N killed it;
* 125 when isolate itself fails: a usage error, a bad configuration
  (:class:`isolate.ConfigError`) or a failed container setup
  (:class:`isolate.SpawnError`); one line on stderr says why;
* 127 when the command does not exist in the container
  (:class:`isolate.ExecutableNotFound`).
"""
from __future__ import annotations

import argparse
import signal
import sys
import textwrap
from typing import Callable, NoReturn, Optional, Sequence

from isolate.cli.options import add_exec_options, add_run_options
from isolate.cli.output import PROG, error
from isolate.errors import ExecutableNotFound, IsolateError

EXIT_RUNTIME_ERROR = 125
EXIT_NOT_FOUND = 127


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors exit 125, keeping 1-124 for the workload."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_RUNTIME_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``isolate`` argument parser and its subcommands' parsers."""
    parser = _Parser(prog=PROG, description="Run commands in isolated Linux containers.")
    parser.add_argument("--root", metavar="DIR",
                        help="state directory of named containers (default: /run/isolate "
                             "for root, $XDG_RUNTIME_DIR/isolate otherwise)")
    parser.add_argument("--store", metavar="DIR",
                        help="image store (default: /var/lib/isolate for root, "
                             "$XDG_DATA_HOME/isolate or ~/.local/share/isolate otherwise)")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the versions of isolate, Python and the kernel, and exit")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands = {
        "run": sub.add_parser("run", help="run a command in a new container",
                              description="Run CMD in a new container and exit with its status."),
        "exec": sub.add_parser("exec", help="run a command in a running named container",
                               description="Run CMD in the namespaces of a named container."),
        "ps": sub.add_parser("ps", help="list named containers",
                             epilog="example:\n  isolate ps -a",
                             formatter_class=argparse.RawDescriptionHelpFormatter),
        "kill": sub.add_parser("kill", help="send a signal to a named container"),
        "rm": sub.add_parser("rm", help="forget a stopped named container"),
        "import": sub.add_parser("import", help="import an image archive into the store"),
        "images": sub.add_parser("images", help="list the images in the store"),
        "image": sub.add_parser("image", help="manage images (image inspect)",
                                epilog="example:\n  isolate image inspect busybox",
                                formatter_class=argparse.RawDescriptionHelpFormatter),
        "rmi": sub.add_parser("rmi", help="remove an image and the layers only it used"),
    }
    add_run_options(commands["run"])
    add_exec_options(commands["exec"])
    commands["ps"].add_argument("-a", "--all", action="store_true",
                                help="list stopped containers too (default: running ones only)")
    _add_lifecycle_commands(sub, commands)
    _add_inspection_commands(sub, commands)
    commands["kill"].add_argument("name")
    commands["kill"].add_argument("-s", "--signal", default="KILL", type=_signal,
                                  help="signal name or number (default: KILL)")
    commands["rm"].add_argument("name")
    commands["rm"].add_argument("-f", "--force", action="store_true",
                                help="kill it first if it is running")
    commands["import"].add_argument("archive")
    commands["import"].add_argument("--name", help="which image of a multi-image archive")
    commands["rmi"].add_argument("image", help="name or id")
    image_commands = commands["image"].add_subparsers(dest="image_command", metavar="COMMAND")
    image_commands.required = True
    image_commands.add_parser(
        "inspect", help="show images as JSON", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print a JSON array describing each IMAGE, as docker image inspect does.",
        epilog="example:\n  isolate image inspect busybox localhost/deb:test 3f2a9c1b0d4e",
    ).add_argument("names", nargs="+", metavar="IMAGE",
                   help="name (busybox, deb:test, quay.io/org/app:1, app@sha256:...) or id (prefix)")
    return parser, commands


def _add_lifecycle_commands(sub: argparse._SubParsersAction,
                            commands: dict[str, argparse.ArgumentParser]) -> None:
    """wait, stop, start, restart and logs (isolate/cli/lifecycle.py runs them)."""
    def add(name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
        # Raw, for the example's own line: so the description is wrapped here.
        commands[name] = sub.add_parser(name, help=summary, description=textwrap.fill(description),
                                        epilog=f"example:\n  {example}",
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        return commands[name]

    def names(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("names", nargs="+", metavar="NAME", help="a named container")

    def stop_time(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-t", "--time", type=_seconds, default=10.0, metavar="SECS",
                            help="seconds to wait after SIGTERM before SIGKILL (default: 10)")

    names(add("wait", "wait for named containers to stop, print their exit codes",
              "Block until each container has stopped, then print its exit status "
              "(128+N when signal N killed it).", "isolate wait web worker"))
    stop = add("stop", "stop running named containers",
               "Send SIGTERM to each container's init, which passes it on; SIGKILL if it still "
               "runs SECS seconds later.  Prints each name.", "isolate stop -t 5 web")
    stop_time(stop)
    names(stop)
    names(add("start", "start stopped named containers again",
              "Start each stopped container again, detached, with the command and settings it "
              "was first run with; its output goes on in its log.  Prints each name.",
              "isolate start web"))
    restart = add("restart", "stop, then start named containers",
                  "Stop each container (as isolate stop) if it runs, then start it again (as "
                  "isolate start).  Prints each name.", "isolate restart -t 5 web")
    stop_time(restart)
    names(restart)
    logs = add("logs", "show a detached container's output",
               "Print what the container wrote to its stdout and stderr, as it wrote it.",
               "isolate logs -f --tail 20 web")
    logs.add_argument("name", help="a named container started with -d")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing what it writes until it stops")
    logs.add_argument("--tail", type=_lines, metavar="N",
                      help="only the last N lines (default: all)")
    logs.add_argument("-t", "--timestamps", action="store_true",
                      help="refused: the log has no time per line (isolate/named/logs.py says why)")


def _add_inspection_commands(sub: argparse._SubParsersAction,
                             commands: dict[str, argparse.ArgumentParser]) -> None:
    """inspect, stats, top, pause, unpause, cp, commit, info and version
    (the modules of INSPECTION_COMMANDS run them)."""
    def add(name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
        # Raw, for the example's own line: so the description is wrapped here.
        commands[name] = sub.add_parser(name, help=summary, description=textwrap.fill(description),
                                        epilog=f"example:\n  {example}",
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        return commands[name]

    add("inspect", "show named containers as JSON",
        "Print a JSON array describing each container, as docker inspect does: its command, "
        "state, config, limits, mounts and image.", "isolate inspect web worker",
        ).add_argument("names", nargs="+", metavar="NAME", help="a named container")
    stats = add("stats", "show named containers' CPU, memory, I/O and processes",
                "A table of what each container uses, from its cgroup, refreshed every second "
                "until Ctrl-C (redrawn in place on a terminal, one table per refresh on a "
                "pipe).  Containers started without limits have no cgroup: their figures "
                "show as --.", "isolate stats --no-stream web")
    stats.add_argument("names", nargs="*", metavar="NAME",
                       help="containers to show (default: every running one)")
    stats.add_argument("--no-stream", action="store_true",
                       help="print one table and exit")
    stats.add_argument("-a", "--all", action="store_true",
                       help="without NAME, stopped containers too")
    add("top", "list the processes of a named container",
        "List the container's processes: pid inside it and on the host, parent, user (as the "
        "container names it), CPU time and command.", "isolate top web",
        ).add_argument("name", metavar="NAME", help="a running named container")
    for verb, what in (("pause", "freeze every process of"), ("unpause", "thaw")):
        add(verb, f"{what} named containers" if verb == "pause" else "resume paused containers",
            f"{what.capitalize()} each container with the cgroup freezer (it needs a cgroup: "
            f"start it with a limit such as --memory).  Prints each name.",
            f"isolate {verb} web",
            ).add_argument("names", nargs="+", metavar="NAME", help="a running named container")
    cp = add("cp", "copy files between a named container and the host",
             "Copy SRC to DST, one of them NAME:PATH, a path inside a running container "
             "(resolved inside its root: '..' and symlinks never lead out of it).  Directories "
             "are copied whole; DIR/. copies what DIR holds.", "isolate cp web:/etc/hosts ./hosts")
    cp.add_argument("src", metavar="SRC", help="NAME:PATH or a host path")
    cp.add_argument("dst", metavar="DST", help="NAME:PATH or a host path")
    cp.add_argument("-L", "--follow-link", action="store_true",
                    help="follow a symlink given as SRC (inside the container: within it)")
    commit = add("commit", "make an image of a named container's changes",
                 "Store a new image: the container's image plus a layer of what it changed, "
                 "with its environment, command and working directory as the image's "
                 "defaults.  Prints the image's id.", "isolate commit web web:v2")
    commit.add_argument("name", metavar="NAME", help="a container started with --image")
    commit.add_argument("image", metavar="IMAGE",
                        help="the new image's name (a short name is localhost/NAME)")
    commit.add_argument("--no-pause", dest="pause", action="store_false",
                        help="do not freeze the container while its changes are read")
    add("info", "show what this host offers isolate",
        "Print the kernel, cgroup version and controllers, whether isolate runs rootless, "
        "where images and container records are kept, and what is available: user "
        "namespaces, seccomp (libseccomp), pasta and slirp4netns.", "isolate info")
    add("version", "show the versions of isolate, Python and the kernel",
        "Print the versions of isolate, Python and the kernel.", "isolate version")


class _Version(argparse.Action):
    """--version: print the versions (isolate/cli/system.py) and exit 0."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from isolate.cli.system import version_line
        print(version_line())
        parser.exit()


#: Subcommands and the modules that run them, each imported only when one of its commands runs.
INSPECTION_COMMANDS = {"inspect": "isolate.cli.inspect", "top": "isolate.cli.inspect",
                       "stats": "isolate.cli.stats", "pause": "isolate.cli.pause",
                       "unpause": "isolate.cli.pause", "cp": "isolate.cli.transfer",
                       "commit": "isolate.cli.transfer", "info": "isolate.cli.system",
                       "version": "isolate.cli.system"}


def _seconds(value: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {value!r}")
    return seconds


def _lines(value: str) -> int | None:
    """An argparse type: a number of lines, 0 or more, or "all" (None)."""
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of lines >= 0 or 'all', got {value!r}")
    return int(value)


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


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128+N for death by signal N (returncode -N)."""
    return 128 - returncode if returncode < 0 else returncode


def handler(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs subcommand `name`, from its group's module,
    which is imported only now: `isolate ps` loads neither run.py nor
    images.py, nor the library parts they import."""
    if name in ("run", "exec"):
        from isolate.cli.run import COMMANDS
    elif name in ("ps", "kill", "rm"):
        from isolate.cli.containers import COMMANDS
    elif name in ("wait", "stop", "start", "restart", "logs"):
        from isolate.cli.lifecycle import COMMANDS
    elif name in INSPECTION_COMMANDS:
        import importlib
        COMMANDS = importlib.import_module(INSPECTION_COMMANDS[name]).COMMANDS
    else:
        from isolate.cli.images import COMMANDS
    return COMMANDS[name]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``isolate`` console script and ``python -m isolate``."""
    args = parse_args(argv)
    try:
        # Commands return a returncode: 0, or the command's (-N for signal N).
        return exit_status(handler(args.subcommand)(args))
    except ExecutableNotFound as e:
        error(e)
        return EXIT_NOT_FOUND
    except IsolateError as e:  # ConfigError, SpawnError, StateError and the rest
        error(e)
        return EXIT_RUNTIME_ERROR
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
