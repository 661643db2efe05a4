"""The container's PID 1: zombie reaping, signal forwarding, exit status, init=False."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import Iterator

import pytest

import isolate
from conftest import (PYTHON, RUN_TIMEOUT, pids_with_cmdline, run_in_fork, unique_sleep_arg, unwrap,
                      wait_until)

#: Python workload: orphan N grandchildren that exit at once, then wait until
#: no other process is left in the container (bounded), print the zombie count
#: and exit 0.
ORPHAN_ZOMBIES = r"""
import os, sys, time
n = int(sys.argv[1])
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os._exit(0)      # grandchild: orphaned, exits, must be reaped by PID 1
        os._exit(0)          # child: exits at once so the grandchild is orphaned
    os.waitpid(pid, 0)

def others():   # the states of every process but PID 1 and this one
    states = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) not in (1, os.getpid()):
            try:
                with open(f"/proc/{p}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:   # gone meanwhile: ENOENT on open, ESRCH on read
                pass
    return states

def zombies():
    return others().count("Z")

# Wait until every grandchild has exited and been reaped (a grandchild that
# has not run yet is no zombie so far): only then is the count final.
deadline = time.monotonic() + 10
while others() and time.monotonic() < deadline:
    time.sleep(0.01)
print(zombies(), flush=True)
"""

#: Python workload that exits with `code` when it receives signal `sig`.
# It sleeps in short naps, not one long sleep: Python runs a handler only between
# bytecodes, and a signal that lands after print() but before sleep()'s
# syscall would otherwise wait out the whole sleep (the loop's back edge
# runs it within 50 ms).
TRAP = r"""
import signal, sys, time
sig, code = int(sys.argv[1]), int(sys.argv[2])
signal.signal(sig, lambda *_: sys.exit(code))
print("ready", flush=True)
for _ in range(1200):
    time.sleep(0.05)
sys.exit(99)
"""


@contextmanager
def start_trap(sig: int, code: int, **config) -> Iterator[isolate.Container]:
    """A running container whose workload exits with ``code`` on ``sig``, once ready."""
    with isolate.Container([PYTHON, "-c", TRAP, str(int(sig)), str(code)],
                           stdout=isolate.PIPE, **config) as c:
        assert c.process.stdout.readline() == b"ready\n"
        yield c


def test_orphaned_zombies_reaped():
    """100 orphans that exit are reaped by the init; the workload exits cleanly."""
    r = isolate.run([PYTHON, "-c", ORPHAN_ZOMBIES, "100"], capture_output=True,
                    timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"0\n", "zombies left unreaped inside the container"


def test_running_orphans_do_not_block_exit():
    """Orphans still running when the workload exits are killed; status is the workload's."""
    token = unique_sleep_arg()
    script = f"for i in $(seq 100); do (sleep {token} &); done; exit 5"
    r = isolate.run(["sh", "-c", script], timeout=RUN_TIMEOUT)
    assert r.returncode == 5
    assert wait_until(lambda: not pids_with_cmdline(token)), "orphans survived the container"


def test_init_is_pid1_and_workload_is_not():
    """With init=True PID 1 is the init and the workload is another process."""
    r = isolate.run(["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"],
                    capture_output=True, timeout=RUN_TIMEOUT)
    pid, pid1_cmdline = r.stdout.decode().split("\n", 1)
    assert int(pid) != 1
    assert "echo $$" not in pid1_cmdline


def test_init_false_makes_workload_pid1():
    """init=False: the workload itself is PID 1."""
    r = isolate.run(["sh", "-c", "echo $$; tr '\\0' ' ' < /proc/1/cmdline"], init=False,
                    capture_output=True, timeout=RUN_TIMEOUT)
    pid, pid1_cmdline = r.stdout.decode().split("\n", 1)
    assert pid == "1"
    assert "echo $$" in pid1_cmdline


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                 signal.SIGUSR1, signal.SIGUSR2])
def test_signal_forwarded_to_workload(sig: signal.Signals):
    """send_signal() to the Container reaches the workload, which exits with its code."""
    with start_trap(sig, 42) as c:
        c.process.send_signal(sig)
        assert c.wait(timeout=RUN_TIMEOUT) == 42


def test_terminate_forwarded():
    """terminate() sends SIGTERM through the init to the workload."""
    with start_trap(signal.SIGTERM, 17) as c:
        c.process.terminate()
        assert c.wait(timeout=RUN_TIMEOUT) == 17


def test_untrapped_sigterm_kills_workload():
    """SIGTERM to a workload without a handler kills it: returncode -SIGTERM."""
    with isolate.Container(["sleep", unique_sleep_arg()]) as c:
        c.process.send_signal(signal.SIGTERM)
        assert c.wait(timeout=RUN_TIMEOUT) == -signal.SIGTERM


def test_kill_kills_everything():
    """kill() SIGKILLs the container: returncode -SIGKILL and every process gone."""
    token = unique_sleep_arg()
    with isolate.Container(["sh", "-c", f"sleep {token} & sleep {token}; wait"]) as c:
        assert wait_until(lambda: len(pids_with_cmdline(token)) >= 3)  # sh + 2 sleeps
        c.process.kill()
        assert c.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL
    assert wait_until(lambda: not pids_with_cmdline(token))


def test_signal_reaches_pid1_workload_with_init_false():
    """With init=False a trapped SIGTERM still reaches the workload (now PID 1)."""
    with start_trap(signal.SIGTERM, 23, init=False) as c:
        c.process.send_signal(signal.SIGTERM)
        assert c.wait(timeout=RUN_TIMEOUT) == 23


def test_workload_status_not_init_status():
    """The reported status is the workload's, through the init."""
    r = isolate.run(["sh", "-c", "exit 77"], timeout=RUN_TIMEOUT)
    assert r.returncode == 77
    r = isolate.run(["sh", "-c", "exit 77"], init=False, timeout=RUN_TIMEOUT)
    assert r.returncode == 77


#: Counts SIGINTs until SIGTERM, then prints the count (with os.write: the
#: handler may run while print("ready") is still flushing).
COUNT_SIGINT = r"""
import os, signal, sys, time
count = 0
def on_int(*_):
    global count
    count += 1
def on_term(*_):
    os.write(1, b"%d\n" % count)
    os._exit(0)
signal.signal(signal.SIGINT, on_int)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
for _ in range(1200):
    time.sleep(0.05)
"""


@pytest.mark.parametrize("new_session, expected", [(True, b"0\n"), (False, b"1\n")])
def test_terminal_signals_to_the_callers_group_reach_the_workload_at_most_once(new_session,
                                                                               expected):
    """A Ctrl-C on the caller's terminal goes to the caller's process group.
    The init is never in it (it would forward the signal on top); the
    workload is only with new_session=False, and then gets it once."""
    def caller():
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # the caller survives its Ctrl-C
        with isolate.Container([PYTHON, "-c", COUNT_SIGINT], stdout=isolate.PIPE,
                               new_session=new_session) as c:
            assert c.process.stdout.readline() == b"ready\n"
            os.killpg(0, signal.SIGINT)
            # Through the init after it: the init takes its pending signals
            # lowest first, so a SIGINT it had would reach the workload first.
            c.process.terminate()
            out = c.process.stdout.read()
            c.wait(timeout=RUN_TIMEOUT)
        return out
    assert unwrap(run_in_fork(caller)) == expected
