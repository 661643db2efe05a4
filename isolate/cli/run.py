"""``isolate run`` and ``isolate exec``: a command in a new container, or in
a running named one.  Each returns the command's returncode, -N when signal
N killed it; main turns that into the exit status.

Signals that ask a command to stop or reload (SIGHUP, SIGINT, SIGQUIT, SIGTERM,
SIGUSR1, SIGUSR2) are forwarded to the container, whose init passes them on to
the workload: ``Ctrl-C`` and ``kill`` reach the workload although it runs in
its own session.

Loaded only for these two subcommands; the library is imported inside the
functions, since run and exec need different parts of it.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
from typing import TYPE_CHECKING, Any, Callable, Iterator

from isolate.cli.images import find_image
from isolate.cli.options import config_from_args
from isolate.errors import ConfigError

if TYPE_CHECKING:
    from isolate.config import Config
    from isolate.named.state import StateDir

FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                     signal.SIGUSR1, signal.SIGUSR2)


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


def cmd_run(args: argparse.Namespace) -> int:
    """``isolate run``: the workload's returncode (0 once started with -d)."""
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
                                      args.command, config, auto_remove=args.rm)
        print(record.name)
        return 0
    states = None
    if args.name:
        from isolate.named.state import StateDir
        states = StateDir(args.root)
    return run_container(args.command, config, states, args.name)


def cmd_exec(args: argparse.Namespace) -> int:
    """``isolate exec NAME -- CMD``: the command's returncode."""
    from isolate.named import containers as named
    from isolate.named.state import StateDir
    overrides: dict[str, Any] = {}
    for option, keyword in (("cwd", "cwd"), ("uid", "user"), ("gid", "group")):
        if getattr(args, option) is not None:
            overrides[keyword] = getattr(args, option)
    result = named.exec_named(StateDir(args.root), args.name, args.command,
                              extra_env=dict(args.env), **overrides)
    return result.returncode


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"run": cmd_run, "exec": cmd_exec}
