"""The ``isolate`` command line: ``isolate run [options] -- CMD [ARG...]``,
named containers (exec, ps, kill, rm, wait, stop, start, restart, logs,
inspect, stats, top, pause, unpause, cp, commit), images (import, images,
image inspect, rmi), the host (info, version) and ``completion``.

This module parses the command line and hands it to the subcommand's
module, imported only then (COMMAND_MODULES): run.py (run, exec),
containers.py (ps, kill, rm), lifecycle.py (wait, stop, start, restart,
logs), images.py (import, images, image inspect, rmi), inspect.py
(inspect, top), stats.py, pause.py (pause, unpause), transfer.py (cp,
commit), system.py (info, version, --version) or completion.py.  Building
the parser loads just options.py and output.py besides, so that
``isolate --help`` and ``isolate ps`` do not load the image store
(tarfile, hashlib), the seccomp compiler or the spawn path;
tests/test_startup.py checks it.  Every subcommand's --help ends with an
example, and no parser takes an abbreviated option (tests/cli check both).

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
import importlib
import signal
import sys
import textwrap
from typing import Any, Callable, NoReturn, Optional, Sequence

from isolate.cli.options import (CONTAINER_PATHS, CONTAINERS, DIRECTORIES, FILES, IMAGES,
                                 RUNNING, SIGNALS, STOPPED, add_exec_options, add_run_options,
                                 completes)
from isolate.cli.output import PROG, error
from isolate.errors import ExecutableNotFound, IsolateError

EXIT_RUNTIME_ERROR = 125
EXIT_NOT_FOUND = 127


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors exit 125, keeping 1-124 for the workload,
    and which takes no abbreviated long options: argparse would read
    ``isolate run --root DIR`` as --rootfs DIR.  Subcommands' parsers are
    of this class too (add_subparsers passes it on)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_RUNTIME_ERROR, f"{self.prog}: error: {message}\n")


class _MainFormatter(argparse.HelpFormatter):
    """isolate --help's layout.  argparse measures the subcommands' names
    without the indent it lists them with, and so put a summary after a
    long one ("completion") on a line of its own; counted with it here."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            listed = self._current_indent + self._indent_increment + max(map(len, action.choices))
            self._action_max_length = max(self._action_max_length, listed)


#: The options of isolate itself, given before the subcommand.
GLOBAL_OPTIONS = ("--root", "--store")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``isolate`` argument parser and its subcommands' parsers."""
    parser = _Parser(prog=PROG, description="Run commands in isolated Linux containers.",
                     formatter_class=_MainFormatter)
    completes(parser.add_argument(
        "--root", metavar="DIR",
        help="state directory of named containers (default: /run/isolate for root, "
             "$XDG_RUNTIME_DIR/isolate otherwise)"), DIRECTORIES)
    completes(parser.add_argument(
        "--store", metavar="DIR",
        help="image store (default: /var/lib/isolate for root, $XDG_DATA_HOME/isolate or "
             "~/.local/share/isolate otherwise)"), DIRECTORIES)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the versions of isolate, Python and the kernel, and exit")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands: dict[str, argparse.ArgumentParser] = {}
    _add_container_commands(sub, commands)
    _add_image_commands(sub, commands)
    _add_lifecycle_commands(sub, commands)
    _add_inspection_commands(sub, commands)
    completion = _add_command(
        sub, commands, "completion", "print a shell completion script",
        "Print a bash completion script: isolate's subcommands and options, and the names "
        "of containers and images (from the --root and --store given on the line, else the "
        "defaults).  Load it in the current shell with: source <(isolate completion bash)",
        "isolate completion bash > /etc/bash_completion.d/isolate")
    completion.add_argument("shell", choices=("bash",), help="the shell (bash is the only one)")
    # What the script asks for names: not for people (isolate/cli/completion.py).
    completion.add_argument("--list", choices=(CONTAINERS, RUNNING, STOPPED, IMAGES),
                            help=argparse.SUPPRESS)
    return parser, commands


def _add_command(sub: argparse._SubParsersAction, commands: dict[str, argparse.ArgumentParser],
                 name: str, summary: str, description: str,
                 example: str) -> argparse.ArgumentParser:
    """Add the subcommand `name` to `commands`: `summary` in isolate --help,
    `description` and an example line in its own --help (tests/cli check
    every subcommand has one, and that it parses)."""
    # Raw, for the example's own line: so the description is wrapped here.
    commands[name] = sub.add_parser(name, help=summary, description=textwrap.fill(description),
                                    epilog=f"example:\n  {example}",
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    return commands[name]


def _add_container_commands(sub: argparse._SubParsersAction,
                            commands: dict[str, argparse.ArgumentParser]) -> None:
    """run and exec (isolate/cli/run.py), ps, kill and rm (isolate/cli/containers.py)."""
    add_run_options(_add_command(
        sub, commands, "run", "run a command in a new container",
        "Run CMD in a new container and exit with its status: 128+N when signal N killed "
        "it, 125 when isolate itself fails, 127 when CMD does not exist in the container.  "
        "With -d and --name it runs on in the background, for the other verbs to reach.",
        "isolate run --rm -it --image busybox --memory 256M -- sh"))
    add_exec_options(_add_command(
        sub, commands, "exec", "run a command in a running named container",
        "Run CMD in the namespaces of a running named container, with its environment (and "
        "-e on top), its user, capabilities, seccomp filter and cgroup, and exit with its "
        "status.", "isolate exec -it web -- sh"))
    ps = _add_command(
        sub, commands, "ps", "list named containers",
        "List the running named containers (with -a the stopped ones too): name, pid of "
        "its PID 1, status as docker words it (Up 3 minutes, Up 3 minutes (Paused), Exited "
        "(137) 2 seconds ago), when it was created and its command.", "isolate ps -a")
    ps.add_argument("-a", "--all", action="store_true",
                    help="list stopped containers too (default: running ones only)")
    kill = _add_command(
        sub, commands, "kill", "send a signal to a named container",
        "Send SIGNAL to the container's PID 1 (its init passes it on to the workload); a "
        "paused container is thawed after it, as docker does, for the signal to take effect.",
        "isolate kill -s TERM web")
    completes(kill.add_argument("name", metavar="NAME", help="a running named container"),
              RUNNING)
    completes(kill.add_argument("-s", "--signal", default="KILL", type=_signal,
                                help="signal name or number (default: KILL)"), SIGNALS)
    rm = _add_command(
        sub, commands, "rm", "forget a stopped named container",
        "Remove a stopped container: its record, log and cgroup, and its lease on its "
        "image's layers.  With -f a running (or paused) one is killed first.",
        "isolate rm -f web")
    completes(rm.add_argument("name", metavar="NAME", help="a named container"), CONTAINERS)
    rm.add_argument("-f", "--force", action="store_true",
                    help="kill it first if it is running")


def _add_image_commands(sub: argparse._SubParsersAction,
                        commands: dict[str, argparse.ArgumentParser]) -> None:
    """import, images, image inspect and rmi (isolate/cli/images.py)."""
    archive = _add_command(
        sub, commands, "import", "import an image archive into the store",
        "Import an image archive (docker save, podman save, an OCI archive or layout "
        "directory) into the store, and print the image's id.", "isolate import busybox.tar")
    completes(archive.add_argument("archive", metavar="ARCHIVE", help="the archive's path"), FILES)
    archive.add_argument("--name", help="which image of a multi-image archive")
    _add_command(sub, commands, "images", "list the images in the store",
                 "List the stored images, newest first: repository, tag, id, age, size and "
                 "number of layers, one line per name.", "isolate images")
    image = _add_command(sub, commands, "image", "manage images (image inspect)",
                         "Manage the stored images.", "isolate image inspect busybox")
    image_commands = image.add_subparsers(dest="image_command", metavar="COMMAND")
    image_commands.required = True
    image_parsers: dict[str, argparse.ArgumentParser] = {}
    _add_command(image_commands, image_parsers, "inspect", "show images as JSON",
                 "Print a JSON array describing each IMAGE, as docker image inspect does.",
                 "isolate image inspect busybox localhost/deb:test 3f2a9c1b0d4e")
    completes(image_parsers["inspect"].add_argument(
        "names", nargs="+", metavar="IMAGE",
        help="name (busybox, deb:test, quay.io/org/app:1, app@sha256:...) or id (prefix)"), IMAGES)
    rmi = _add_command(sub, commands, "rmi", "remove an image and the layers only it used",
                       "Remove an image from the store, and the layers that no other image "
                       "and no container uses.", "isolate rmi busybox")
    completes(rmi.add_argument("image", metavar="IMAGE", help="name or id"), IMAGES)


def _add_lifecycle_commands(sub: argparse._SubParsersAction,
                            commands: dict[str, argparse.ArgumentParser]) -> None:
    """wait, stop, start, restart and logs (isolate/cli/lifecycle.py runs them)."""
    def add(name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
        return _add_command(sub, commands, name, summary, description, example)

    def names(parser: argparse.ArgumentParser, kind: str) -> None:
        completes(parser.add_argument("names", nargs="+", metavar="NAME",
                                      help="a named container"), kind)

    def stop_time(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-t", "--time", type=_seconds, default=10.0, metavar="SECS",
                            help="seconds to wait after SIGTERM before SIGKILL (default: 10)")

    names(add("wait", "wait for named containers to stop, print their exit codes",
              "Block until each container has stopped, then print its exit status "
              "(128+N when signal N killed it).", "isolate wait web worker"), CONTAINERS)
    stop = add("stop", "stop running named containers",
               "Send SIGTERM to each container's init, which passes it on; SIGKILL if it still "
               "runs SECS seconds later.  A paused container is thawed after the signal, as "
               "docker does.  Prints each name.", "isolate stop -t 5 web")
    stop_time(stop)
    names(stop, RUNNING)
    names(add("start", "start stopped named containers again",
              "Start each stopped container again, detached, with the command and settings it "
              "was first run with; its output goes on in its log.  Prints each name.",
              "isolate start web"), STOPPED)
    restart = add("restart", "stop, then start named containers",
                  "Stop each container (as isolate stop) if it runs, then start it again (as "
                  "isolate start).  Prints each name.", "isolate restart -t 5 web")
    stop_time(restart)
    names(restart, CONTAINERS)
    logs = add("logs", "show a detached container's output",
               "Print what the container wrote to its stdout and stderr, as it wrote it.",
               "isolate logs -f --tail 20 web")
    completes(logs.add_argument("name", metavar="NAME", help="a named container started with -d"),
              CONTAINERS)
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing what it writes until it stops")
    logs.add_argument("--tail", type=_lines, metavar="N",
                      help="only the last N lines (default: all)")
    logs.add_argument("-t", "--timestamps", action="store_true",
                      help="refused: the log has no time per line (isolate/named/logs.py says why)")


def _add_inspection_commands(sub: argparse._SubParsersAction,
                             commands: dict[str, argparse.ArgumentParser]) -> None:
    """inspect, stats, top, pause, unpause, cp, commit, info and version
    (the modules of COMMAND_MODULES run them)."""
    def add(name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
        return _add_command(sub, commands, name, summary, description, example)

    completes(add("inspect", "show named containers as JSON",
                  "Print a JSON array describing each container, as docker inspect does: its "
                  "command, state, config, limits, mounts and image.", "isolate inspect web worker",
                  ).add_argument("names", nargs="+", metavar="NAME", help="a named container"),
              CONTAINERS)
    stats = add("stats", "show named containers' CPU, memory, I/O and processes",
                "A table of what each container uses, from its cgroup, refreshed every second "
                "until Ctrl-C (redrawn in place on a terminal, one table per refresh on a "
                "pipe).  Containers started without limits have no cgroup: their figures "
                "show as --.", "isolate stats --no-stream web")
    completes(stats.add_argument("names", nargs="*", metavar="NAME",
                                 help="containers to show (default: every running one)"), RUNNING)
    stats.add_argument("--no-stream", action="store_true",
                       help="print one table and exit")
    stats.add_argument("-a", "--all", action="store_true",
                       help="without NAME, stopped containers too")
    completes(add("top", "list the processes of a named container",
                  "List the container's processes: pid inside it and on the host, parent, user "
                  "(as the container names it), CPU time and command.", "isolate top web",
                  ).add_argument("name", metavar="NAME", help="a running named container"),
              RUNNING)
    for verb, what in (("pause", "freeze every process of"), ("unpause", "thaw")):
        completes(add(verb, f"{what} named containers" if verb == "pause"
                      else "resume paused containers",
                      f"{what.capitalize()} each container with the cgroup freezer (it needs a "
                      f"cgroup: start it with a limit such as --memory).  Prints each name.",
                      f"isolate {verb} web",
                      ).add_argument("names", nargs="+", metavar="NAME",
                                     help="a running named container"), RUNNING)
    cp = add("cp", "copy files between a named container and the host",
             "Copy SRC to DST, one of them NAME:PATH, a path inside a running container "
             "(resolved inside its root: '..' and symlinks never lead out of it).  Directories "
             "are copied whole; DIR/. copies what DIR holds.", "isolate cp web:/etc/hosts ./hosts")
    completes(cp.add_argument("src", metavar="SRC", help="NAME:PATH or a host path"),
              CONTAINER_PATHS, FILES)
    completes(cp.add_argument("dst", metavar="DST", help="NAME:PATH or a host path"),
              CONTAINER_PATHS, FILES)
    cp.add_argument("-L", "--follow-link", action="store_true",
                    help="follow a symlink given as SRC (inside the container: within it)")
    commit = add("commit", "make an image of a named container's changes",
                 "Store a new image: the container's image plus a layer of what it changed, "
                 "with its environment, command and working directory as the image's "
                 "defaults.  Prints the image's id.", "isolate commit web web:v2")
    completes(commit.add_argument("name", metavar="NAME", help="a container started with --image"),
              CONTAINERS)
    completes(commit.add_argument("image", metavar="IMAGE",
                                  help="the new image's name (a short name is localhost/NAME)"),
              IMAGES)
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


#: Each subcommand and the module that runs it (its COMMANDS), imported only
#: when that subcommand runs: `isolate ps` loads neither run.py nor images.py,
#: nor the library parts they import.
COMMAND_MODULES = {
    **dict.fromkeys(("run", "exec"), "isolate.cli.run"),
    **dict.fromkeys(("ps", "kill", "rm"), "isolate.cli.containers"),
    **dict.fromkeys(("wait", "stop", "start", "restart", "logs"), "isolate.cli.lifecycle"),
    **dict.fromkeys(("import", "images", "image", "rmi"), "isolate.cli.images"),
    **dict.fromkeys(("inspect", "top"), "isolate.cli.inspect"),
    "stats": "isolate.cli.stats",
    **dict.fromkeys(("pause", "unpause"), "isolate.cli.pause"),
    **dict.fromkeys(("cp", "commit"), "isolate.cli.transfer"),
    **dict.fromkeys(("info", "version"), "isolate.cli.system"),
    "completion": "isolate.cli.completion",
}


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
        sub.error(f"unrecognized arguments: {' '.join(unknown)}{_misplaced(unknown)}")
    if hasattr(args, "command"):
        command = list(args.command) + (after or [])
        if after is None and command[:1] == ["--"]:
            command = command[1:]
        if not command and not getattr(args, "image", None):
            sub.error(f"missing command (isolate {args.subcommand} [options] -- CMD [ARG...])")
        args.command = command
    return args


def _misplaced(unknown: list[str]) -> str:
    """A hint for an option of isolate itself given after the subcommand
    (``isolate run --root DIR``), which argparse only knows before it."""
    for arg in unknown:
        option = arg.partition("=")[0]
        if option in GLOBAL_OPTIONS:
            return (f" ({option} is an option of isolate itself: give it before the "
                    f"subcommand, as in isolate {option} DIR ps)")
    return ""


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128+N for death by signal N (returncode -N)."""
    return 128 - returncode if returncode < 0 else returncode


def handler(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs subcommand `name`, from the module
    COMMAND_MODULES names, which is imported only now."""
    return importlib.import_module(COMMAND_MODULES[name]).COMMANDS[name]


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
