"""``isolate run`` and ``isolate exec``: a command in a new container, or in
a running named one.  Each returns the command's returncode, -N when signal
N killed it; main turns that into the exit status.

Signals that ask a command to stop or reload (SIGHUP, SIGINT, SIGQUIT, SIGTERM,
SIGUSR1, SIGUSR2) are forwarded to the container, whose init passes them on to
the workload: ``Ctrl-C`` and ``kill`` reach the workload although it runs in
its own session.  So are they with ``-t``, whose terminal relay is
isolate/cli/terminal.py (imported only then; its docstring says what -t
and -i do, and why).

Loaded only for these two subcommands; the library is imported inside the
functions, since run and exec need different parts of it.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
from typing import TYPE_CHECKING, Any, Callable, Iterator

from isolate.cli.images import find_image
from isolate.cli.options import (config_from_args, env_from_args, image_command, user_from_args,
                                 workdir_from_args)
from isolate.cli.output import error
from isolate.errors import ConfigError

if TYPE_CHECKING:
    from isolate.config import Config
    from isolate.named.state import StateDir

FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                     signal.SIGUSR1, signal.SIGUSR2)

#: docker's words, and its exit status 1, for -it when stdin is no terminal.
NOT_A_TTY = "the input device is not a TTY"

#: The TERM of a -t workload whose environment names none, as docker and
#: podman set it (without one, programs that draw on the terminal refuse).
DEFAULT_TERM = "xterm"


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
                  name: str | None = None, interactive: bool = False, remove: bool = False) -> int:
    """Run the container to its end with inherited stdio, or with config.tty
    its terminal joined to ours (and our stdin to it if `interactive`);
    return its returncode.

    With a name, it is recorded in `states` while it runs (so it can be
    exec'd into), and its exit code once it ends; with `remove` (--rm), the
    record is removed then instead."""
    from isolate.container import Container
    with SignalForwarder().installed() as forwarder:
        with Container(command, config=config) as container:
            forwarder.attach(container.process)
            if name is not None:
                from isolate.named.state import ContainerState
                states.save(ContainerState.for_process(name, container.pid, container.args, config))
            if config.tty:
                from isolate.cli import terminal
                terminal.attach(container.process, interactive)
            returncode = container.wait()
            if name is not None and remove:
                from isolate.named.state import ContainerNotFound
                with contextlib.suppress(ContainerNotFound):   # `rm -f` was quicker
                    states.remove(name)
            elif name is not None:
                states.update(name, lambda record: record.stopped(returncode))
            return returncode


def cmd_run(args: argparse.Namespace) -> int:
    """``isolate run``: the workload's returncode (0 once started with -d)."""
    from isolate.config import Config
    if args.detach and (args.tty or args.interactive):
        raise ConfigError("--detach", "a detached container has no terminal and its stdin is "
                                      "/dev/null: drop -t and -i, or -d")
    if not typing_possible(args):
        error(NOT_A_TTY)
        return 1
    image = None
    if args.image:
        if args.rootfs:
            raise ConfigError("--image", "give either --rootfs or --image")
        image = find_image(args)
    options = config_from_args(args, image)   # -u looks names up in the image
    if args.tty:
        options["tty"] = True
    if image is not None:
        options["rootfs"] = image
        args.command = image_command(args, image)
    config = Config(**options)
    if args.tty and "TERM" not in config.env:   # the image's or --env's wins
        import attrs
        config = attrs.evolve(config, env={**config.env, "TERM": DEFAULT_TERM})
    if args.detach:
        from isolate.named import containers as named
        from isolate.named.state import StateDir
        record = named.start_detached(StateDir(args.root), args.name or named.new_name(),
                                      args.command, config, auto_remove=args.rm)
        print(record.name)
        return 0
    states = None
    if args.name:
        from isolate.named.state import StateDir
        states = StateDir(args.root)
    return run_container(args.command, config, states, args.name, args.interactive, args.rm)


def cmd_exec(args: argparse.Namespace) -> int:
    """``isolate exec NAME -- CMD``: the command's returncode."""
    from isolate.named import containers as named
    from isolate.named.state import StateDir
    if not typing_possible(args):
        error(NOT_A_TTY)
        return 1
    env = env_from_args(args)
    states = StateDir(args.root)
    overrides: dict[str, Any] = workdir_from_args(args)
    if args.user is None:
        overrides.update(user_from_args(args))
    else:
        # Names as the container sees them: its PID 1's root shows its
        # /etc/passwd.  Should the pid be reused meanwhile, exec_named
        # refuses it, whatever was read here.
        record = named.running(states, args.name)
        overrides.update(user_from_args(args, root=f"/proc/{record.pid}/root",
                                        where=f"container {args.name!r}"))
    if args.tty:
        return exec_with_terminal(states, args, overrides, env)
    result = named.exec_named(states, args.name, args.command, extra_env=env, **overrides)
    return result.returncode


def exec_with_terminal(states: StateDir, args: argparse.Namespace,
                       overrides: dict[str, Any], env: dict[str, str]) -> int:
    """``isolate exec -t``: the command with a terminal of its own, joined to
    ours until it ends, signals forwarded to it; its returncode.  `env`: the
    variables -e and --env-file set."""
    from isolate.cli import terminal
    from isolate.named import containers as named
    env = dict(env)
    if "TERM" not in env and "TERM" not in states.load(args.name).config.get("env", {}):
        env["TERM"] = DEFAULT_TERM   # as docker exec -t: unless the container has one
    with SignalForwarder().installed() as forwarder:
        process = named.exec_named(states, args.name, args.command, extra_env=env,
                                   tty=True, wait=False, **overrides)
        try:
            forwarder.attach(process)
            terminal.attach(process, args.interactive)
            return process.wait()
        finally:
            process.kill()   # only when an error cut the relay short; else it has ended
            process.wait()
            process.close()


def typing_possible(args: argparse.Namespace) -> bool:
    """False for -it when stdin is no terminal: docker refuses that (-t alone is fine)."""
    return not (args.tty and args.interactive) or os.isatty(0)


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"run": cmd_run, "exec": cmd_exec}
