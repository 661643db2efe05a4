"""``isolate run -t`` and ``isolate exec -t``: this command line's terminal
joined to the workload's own (the master of its pty, isolate.terminal.Pty).

What happens, and why (the docker and podman behaviour their users expect):

* ``-t``: the workload runs with ``tty=True``, its stdin, stdout and stderr
  a pty of the container's devpts.  Everything it writes is copied to this
  process's stdout unchanged (bytes, escape sequences included: that is what
  a terminal is for).  The pty takes the size of our terminal (stdout's, or
  else stdin's) at once and again on every SIGWINCH.  Its TERM is xterm
  unless its environment names one (isolate.cli.run sets it, as docker and
  podman do).
* ``-t`` without ``-i``: as with docker, our stdin is not read and our
  terminal's modes are left alone.  Ctrl-C is then SIGINT to this process,
  forwarded to the container like every stop signal (isolate.cli.run).  The
  workload's reads from its terminal wait for input that never comes, which
  is also docker's behaviour: a pty has no lasting end of file to give it
  (a ^D ends a single read, and only in canonical mode).
* ``-it``: our stdin must be a terminal (otherwise isolate.cli.run exits 1
  with docker's "the input device is not a TTY"; ``-t`` alone works without
  one).  It is put in raw mode and every byte typed is copied to the
  master, so Ctrl-C, Ctrl-Z and Ctrl-\\ become signals for the container's
  foreground job, raised by the container's own line discipline, and a
  shell there survives them.
* Signals sent to this process (SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
  SIGUSR2) are forwarded to the container, with or without ``-t``.  Docker
  does this with ``-t`` too since 19.03 (docker/cli#1841; before, its client
  just died and left the container running), and podman always has.  We go
  on relaying until the workload ends and exit with its status, so a
  workload that ignores the signal keeps running: an interactive shell
  ignores SIGTERM, but SIGHUP ends it, as a hangup of its terminal would.
  (Dying on the signal instead would not leave the workload running, as it
  does docker's: the container dies with this process, given no chance to
  clean up.)
* Our terminal's modes are restored however we leave: the workload's exit
  (or its death, SIGKILL included), a forwarded signal that ends it, an
  exception.  Only SIGKILL to this process itself leaves the terminal raw, as
  it would any program's (``stty sane`` repairs it).

Imported only for ``-t``: nothing else needs termios or tty.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import termios
import tty
from typing import TYPE_CHECKING, Iterator, Optional

if TYPE_CHECKING:
    from isolate.process import Process
    from isolate.terminal import Pty

STDIN, STDOUT = 0, 1

#: Bytes moved per read, either way.
CHUNK = 65536

#: Reads of the master once the workload has exited.  What it wrote is
#: queued by then, at most the pty's buffers (some 70 KiB; a read takes up
#: to 4 KiB), and a process it left holding the terminal (exec, with no PID
#: namespace to end it) must not keep us here for ever.
DRAIN_READS = 256


def attach(process: Process, interactive: bool) -> None:
    """Relay between this command line's terminal and `process`'s (started
    with tty=True) until the workload's terminal closes or it exits.

    With `interactive`, stdin (a terminal) is in raw mode meanwhile and is
    relayed too; its modes are restored on the way out, however it goes."""
    size_from = next((fd for fd in (STDOUT, STDIN) if os.isatty(fd)), None)
    with window_size_followed(process.pty, size_from):
        with raw_mode(STDIN) if interactive else contextlib.nullcontext():
            Relay(process.pty, process.pidfd, STDIN if interactive else None, STDOUT).run()


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal `fd` in raw mode for the block, its modes restored after.

    Raw: no echo, no line editing, no signals from keys, no output
    processing; every byte goes through as typed, and the container's own
    terminal does all of that instead.  TCSANOW rather than TCSAFLUSH: what
    was typed ahead is for the workload, not to be thrown away."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):   # hung up: nothing left to restore
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def window_size(fd: int) -> Optional[tuple[int, int]]:
    """(rows, cols) of the terminal `fd`, or None when it has no size (yet)."""
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))
    except OSError:
        return None
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    return (rows, cols) if rows and cols else None


@contextlib.contextmanager
def window_size_followed(pty: Pty, terminal: Optional[int]) -> Iterator[None]:
    """Give `pty` the size of the terminal `terminal` now and on each SIGWINCH.

    The handler itself resizes: Python runs it in this thread between
    bytecodes (and a poll it interrupted is retried after, PEP 475), so it
    may do anything, and the size changes before the relay moves the next
    bytes.  Installed before the first copy, so no change falls between."""
    if terminal is None:
        yield
        return

    def follow(_signum: int = 0, _frame: object = None) -> None:
        size = window_size(terminal)
        if size is not None:
            with contextlib.suppress(OSError):   # the workload's side is gone: nothing to tell
                pty.resize(*size)

    previous = signal.signal(signal.SIGWINCH, follow)
    try:
        follow()
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


class Relay:
    """Copies `source` to the master and the master to `sink` until the
    master reads end-of-file (every holder of the workload's terminal has
    closed it) or the workload has exited and its last output is copied.

    One poll() over the master, the workload's pidfd and `source` (None: no
    input), blocking until one of them is ready: no busy loop, no timeout.
    Input goes to the master without blocking, so that a workload that
    neither reads nor stops writing cannot wedge us (and so itself) with a
    full buffer each way; until the master has taken it, `source` is not
    read, which slows the typist and loses nothing.  `source` and `sink`
    stay blocking: they are our terminal, shared with the shell that
    started us.  Interrupted system calls are retried by Python (PEP 475).
    """

    def __init__(self, master: Pty, pidfd: int, source: Optional[int], sink: int) -> None:
        self.master = master
        self.pidfd = pidfd
        self.source = source
        self.sink: Optional[int] = sink
        self.pending = bytearray()   # typed, not yet taken by the master
        self.exited = False

    def run(self) -> None:
        """Relay until the end (see the class); then return."""
        os.set_blocking(self.master.fileno(), False)
        rounds_after_exit = 0
        while rounds_after_exit < DRAIN_READS:
            events = self._poll()
            if self.exited and not events:
                return   # exited, and nothing more queued: the rest is not its output
            if events.get(self.pidfd):
                self._workload_exited()
            master = events.get(self.master.fileno(), 0)
            if master & select.POLLNVAL:
                return   # closed under us: nothing more can come
            if master & (select.POLLIN | select.POLLHUP | select.POLLERR):
                if not self._copy_output():
                    return
            if master & select.POLLOUT:
                self._send_input()
            if self.source is not None and events.get(self.source):
                self._read_input()
            if self.exited:
                rounds_after_exit += 1

    def _poll(self) -> dict[int, int]:
        """Wait for what we can act on now: {fd: events}.  Once the workload
        has exited only its queued output is of interest: don't wait."""
        poller = select.poll()
        poller.register(self.master.fileno(),
                        select.POLLIN | (select.POLLOUT if self.pending else 0))
        if not self.exited:
            poller.register(self.pidfd, select.POLLIN)   # readable once it has exited
            if self.source is not None and not self.pending:
                poller.register(self.source, select.POLLIN)
        return dict(poller.poll(0 if self.exited else None))

    def _workload_exited(self) -> None:
        """Nobody will read input any more; drain its output and stop."""
        self.exited = True
        self.source = None
        self.pending.clear()

    def _copy_output(self) -> bool:
        """Copy what the master has to `sink`; False at its end of file."""
        try:
            data = self.master.read(CHUNK)   # b"" for EIO: every slave closed
        except BlockingIOError:
            return True
        if not data:
            return False
        if self.sink is not None:
            try:
                _write_all(self.sink, data)
            except OSError:
                # Our terminal hung up, or our reader went away: keep
                # draining the master, so the workload never blocks on it.
                self.sink = None
        return True

    def _read_input(self) -> None:
        """Take what was typed; at the end of our input (a hangup), stop reading it."""
        try:
            data = os.read(self.source, CHUNK)
        except OSError:   # EIO: our terminal hung up
            data = b""
        if not data:
            self.source = None
            return
        self.pending += data
        self._send_input()

    def _send_input(self) -> None:
        """Give the master what it takes of the pending input now."""
        try:
            sent = os.write(self.master.fileno(), self.pending)
        except BlockingIOError:
            return
        except OSError:   # the workload's side is gone: the input has nobody to go to
            self.pending.clear()
            return
        del self.pending[:sent]


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the blocking `fd`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
