"""tty=True: the workload's own terminal, from the container's devpts, with
the master handed to the caller (isolate/terminal.py, ISO_OP_PTY)."""
from __future__ import annotations

import os
import pty
import select
import time

import pytest

import isolate
from conftest import PYTHON, RUN_TIMEOUT, pids_with_cmdline, unique_sleep_arg, wait_until


def read_until(master: isolate.terminal.Pty, marker: bytes, timeout: float = RUN_TIMEOUT) -> bytes:
    """Output until `marker` appears (or EOF, or the timeout: then what came)."""
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = master.read()
        if not data:
            break
        out += data
    return out


def read_all(master: isolate.terminal.Pty) -> bytes:
    return read_until(master, b"\0never\0")


TTY_FACTS = r"""
import os
print(os.ttyname(0), [os.isatty(fd) for fd in (0, 1, 2)],
      os.getsid(0) == os.getpid(), os.tcgetpgrp(0) == os.getpgrp(), os.ttyname(1) == os.ttyname(0))
"""


def test_the_terminal_is_the_workloads_controlling_terminal_and_stdio(caller):
    """tty prints a /dev/pts path; 0, 1, 2 are it; the workload leads its
    session and is the terminal's foreground process group."""
    def check() -> bytes:
        with isolate.Container([PYTHON, "-c", TTY_FACTS], tty=True) as c:
            out = read_all(c.pty)
            assert c.wait(timeout=RUN_TIMEOUT) == 0
        return out
    out = caller(check).decode()
    assert out.strip() == "/dev/pts/0 [True, True, True] True True True", out


def test_resize_reaches_stty_size():
    with isolate.Container(["sh", "-c", "read line; stty size"], tty=True) as c:
        c.pty.resize(30, 100)
        assert c.pty.size() == (30, 100)
        c.pty.write(b"go\r")
        assert b"30 100" in read_all(c.pty)
        assert c.wait(timeout=RUN_TIMEOUT) == 0


def test_exit_status_comes_back():
    with isolate.Container(["sh", "-c", "exit 3"], tty=True) as c:
        read_all(c.pty)
        assert c.wait(timeout=RUN_TIMEOUT) == 3


def test_ctrl_c_interrupts_the_foreground_job_and_the_shell_survives():
    """Job control: an interactive shell runs `sleep` as the foreground job;
    0x03 on the master interrupts it (the kernel signals the terminal's
    foreground group, not the shell), and the shell goes on."""
    token = unique_sleep_arg()
    with isolate.Container(["sh", "-i"], tty=True, env={"PS1": "$ "}) as c:
        c.pty.write(f"sleep {token}\r".encode())
        assert wait_until(lambda: bool(pids_with_cmdline(token))), read_until(c.pty, b"\0", 0.5)
        c.pty.write(b"\x03")
        assert wait_until(lambda: not pids_with_cmdline(token)), "Ctrl-C did not stop sleep"
        c.pty.write(b"echo survived $?\r")
        assert b"survived 130" in read_until(c.pty, b"survived 130")
        c.pty.write(b"exit 7\r")
        read_all(c.pty)
        assert c.wait(timeout=RUN_TIMEOUT) == 7


def test_exec_gets_a_terminal_of_its_own():
    with isolate.Container(["sleep", unique_sleep_arg()]) as c:
        p = c.exec(["sh", "-c", "tty; exit 4"], tty=True, wait=False)
        assert read_all(p.pty).strip().startswith(b"/dev/pts/")
        assert p.wait(timeout=RUN_TIMEOUT) == 4


@pytest.mark.parametrize("stream", ["stdin", "stdout", "stderr"])
def test_tty_with_a_stdio_choice_is_refused_before_anything_runs(stream):
    before = set(os.listdir("/proc/self/fd"))
    c = isolate.Container(["true"], tty=True, **{stream: isolate.PIPE})
    with pytest.raises(isolate.ConfigError) as info:
        c.start()
    assert info.value.field == "tty"
    assert c.process is None
    assert set(os.listdir("/proc/self/fd")) == before


#: Inside: push a byte into its terminal's input with TIOCSTI and read it back.
INJECT = r"""
import fcntl, os, termios, tty
tty.setraw(0)
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"Z")
except OSError as exc:
    print("TIOCSTI refused:", exc.strerror, flush=True)
else:
    print("container read", os.read(0, 1), flush=True)
"""


@pytest.mark.parametrize("seccomp, inside", [
    ("default", b"TIOCSTI refused: Operation not permitted"),   # the default profile denies it
    (None, b"container read b'Z'"),                              # without: it stays inside
])
def test_tiocsti_reaches_only_the_containers_own_terminal(seccomp, inside):
    """A caller with a terminal of its own (made here with pty.fork) runs a
    container whose workload pushes a byte into its terminal's input with
    TIOCSTI: the default seccomp profile refuses it; without the profile the
    workload reads the byte back from its own terminal.  Either way the
    caller's terminal gets nothing."""
    pid, caller_terminal = pty.fork()
    if pid == 0:   # the caller, its controlling terminal the test's pty
        code = 1
        try:
            with isolate.Container([PYTHON, "-c", INJECT], tty=True, seccomp=seccomp) as c:
                out = read_all(c.pty)
                c.wait(timeout=RUN_TIMEOUT)
            pending, _, _ = select.select([0], [], [], 0.5)
            os.write(1, out + (b"caller got input\n" if pending else b"caller got nothing\n"))
            code = 0
        finally:
            os._exit(code)
    out = b""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([caller_terminal], [], [], 1.0)
        try:
            data = os.read(caller_terminal, 4096) if ready else b""
        except OSError:
            break
        if ready and not data:
            break
        out += data
        if b"caller got" in out:
            break
    os.close(caller_terminal)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert inside in out, out
    assert b"caller got nothing" in out, out
