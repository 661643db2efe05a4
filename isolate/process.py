"""Process: the parent's handle on a running container.

It holds a pidfd for the container's PID 1, so waiting works with select()
and poll(), and a signal can never reach a recycled pid.  With isolate's
init as PID 1, the workload's real wait status arrives on the report pipe
just before init exits; `returncode` is that status, as subprocess would
report it for the workload itself.
"""
from __future__ import annotations

import os
import select
import signal
import threading
import time
from typing import IO, Callable

from isolate._spawn.communicate import communicate
from isolate._spawn import syscalls
from isolate._native import ffi, lib
from isolate._spawn.executor import Spawned, free_stacks
from isolate.errors import TimeoutExpired

_HOOK_INTERVAL = 0.05

# The records pid1 writes; their layout is struct iso_report in plan.h.
_REPORT_SIZE = ffi.sizeof("struct iso_report")


class Process:
    """A running container process; created by Container.start()."""

    def __init__(self, args: list, spawned: Spawned, pipes: list[int | None],
                 has_init: bool) -> None:
        self.args = args
        self.pid = spawned.pid
        self.pidfd = spawned.pidfd
        report_fd = spawned.report_fd
        self._stacks = spawned.stacks
        self.returncode: int | None = None
        self.stdin: IO[bytes] | None = _open(pipes[0], "wb")
        self.stdout: IO[bytes] | None = _open(pipes[1], "rb")
        self.stderr: IO[bytes] | None = _open(pipes[2], "rb")
        #: The master of the workload's terminal with tty=True (isolate.terminal.Pty).
        self.pty = None
        self._report_fd = report_fd if has_init else -1
        if not has_init and report_fd >= 0:
            os.close(report_fd)
        self._lock = threading.Lock()
        self._pending: dict = {}
        #: Called while waiting (Container sets it to reap its exec'd
        #: processes: PID 1 cannot finish exiting while they are unreaped).
        self.while_waiting: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<isolate.Process pid={self.pid} returncode={self.returncode}>"

    def poll(self) -> int | None:
        """The return code if the container has ended, else None."""
        return self._reap(block=False)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the container to end; raises TimeoutExpired after `timeout` s."""
        if self.returncode is not None:
            return self.returncode
        if timeout is not None or self.while_waiting is not None:
            self._poll_until_exit(timeout)
        code = self._reap(block=True)
        assert code is not None
        return code

    def _poll_until_exit(self, timeout: float | None) -> None:
        """Poll the pidfd until the process exits; with a while_waiting hook,
        wake up every _HOOK_INTERVAL seconds to run it."""
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.while_waiting is not None:
                self.while_waiting()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutExpired(self.args, timeout)
            if self.while_waiting is not None:
                left = _HOOK_INTERVAL if left is None else min(left, _HOOK_INTERVAL)
            if poller.poll(None if left is None else left * 1000):
                return

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the container's PID 1 (its init forwards it)."""
        if self.returncode is not None:
            return
        try:
            syscalls.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass   # exited, not yet reaped

    def terminate(self) -> None:
        """SIGTERM, forwarded by init to the workload."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL PID 1; with a PID namespace the kernel then kills every process in it."""
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: bytes | None = None, timeout: float | None = None
                    ) -> tuple[bytes | None, bytes | None]:
        """Send input, read stdout/stderr to EOF, wait; like Popen.communicate."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = communicate(self, input, deadline, self._pending)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.wait(remaining)
        except TimeoutExpired:
            raise TimeoutExpired(self.args, timeout, out, err) from None
        return out, err

    def close(self) -> None:
        """Close every pipe and fd this handle owns (the process must be reaped)."""
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        if self.pty is not None:
            self.pty.close()
        self._close_fds()

    def _close_fds(self) -> None:
        if self._report_fd >= 0:
            os.close(self._report_fd)
            self._report_fd = -1
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def _reap(self, block: bool) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            flags = os.WEXITED | (0 if block else os.WNOHANG)
            info = os.waitid(os.P_PIDFD, self.pidfd, flags)
            if info is None:
                return None
            self.returncode = self._workload_status(info)
            free_stacks(self._stacks)
            self._stacks = None
            self._close_fds()   # a reaped process needs neither
            return self.returncode

    def _workload_status(self, info: os.waitid_result) -> int:
        """The workload's status from init's report, else init's own."""
        status = _read_exit_report(self._report_fd)
        if status is not None:
            if os.WIFSIGNALED(status):
                return -os.WTERMSIG(status)
            return os.WEXITSTATUS(status)
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status


def _read_exit_report(fd: int) -> int | None:
    if fd < 0:
        return None
    status = None
    os.set_blocking(fd, False)   # should a stray copy of the pipe survive init
    while True:
        try:
            data = os.read(fd, _REPORT_SIZE)
        except BlockingIOError:
            return status
        if len(data) < _REPORT_SIZE:
            return status
        record = ffi.from_buffer("struct iso_report *", data)
        if record.kind == lib.ISO_REPORT_EXIT:
            status = record.value


def _open(fd: int | None, mode: str) -> IO[bytes] | None:
    return None if fd is None else open(fd, mode, buffering=0 if mode == "wb" else -1)

