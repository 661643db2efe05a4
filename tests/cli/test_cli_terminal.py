"""``isolate run -t``, ``-it`` and ``isolate exec -it`` (isolate/cli/terminal.py),
driven from a real terminal.

Each test gives the CLI a terminal the way a terminal emulator gives one to
its shell: a pty whose slave is the CLI's controlling terminal and its
stdin, stdout and stderr, in a session of its own.  The test holds the
master: writing to it is typing, reading it is the screen, TIOCSWINSZ on it
is resizing the window (the kernel then sends SIGWINCH to the foreground
process group, the CLI), and termios.tcgetattr on it shows the slave's modes,
what the CLI must hand back as it found them.  Every wait is bounded
(RUN_TIMEOUT); nothing is timed.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator, Optional

import psutil
import pytest

from conftest import REPO, RUN_TIMEOUT, drop_to, pids_with_cmdline, unique_sleep_arg, wait_until

#: The prompt of the shells the tests type into.
PROMPT = b"isolate-tty$ "
SHELL = ("--env", f"PS1={PROMPT.decode()}", "--", "sh")


def cli_env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _cli_child(master: int, slave: int, args: tuple[str, ...],
               ids: Optional[tuple[int, int]]) -> None:
    """In the forked child: become the CLI, on the slave.  Never returns."""
    code = 70
    try:
        os.close(master)
        # os.login_tty (Python 3.11) by hand: a new session, the slave its
        # controlling terminal and fds 0-2.
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)
        if ids is None:
            os.execve(sys.executable, [sys.executable, "-m", "isolate", *args], cli_env())
        # The rootless user may neither run this interpreter nor read its
        # library (they live under /root): load what the CLI needs, then
        # call its main() in this process, dropped to the user.
        import isolate
        from isolate.cli import main, run, terminal  # noqa: F401
        isolate.run(["true"], tty=True)
        drop_to(*ids)()
        sys.stdin, sys.stdout, sys.stderr = (open(fd, mode, closefd=False)   # not pytest's
                                             for fd, mode in ((0, "r"), (1, "w"), (2, "w")))
        code = main.main(list(args))
    except BaseException:  # noqa: BLE001 - shown on the terminal, read by the test
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


class Terminal:
    """The CLI running on a pty of its own; the test is its keyboard and screen."""

    def __init__(self, args: tuple[str, ...], rows: int = 24, cols: int = 80,
                 ids: Optional[tuple[int, int]] = None) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols)
        self.modes_before = self.modes()
        self.pid = os.fork()
        if self.pid == 0:
            _cli_child(self.master, slave, args, ids)
        os.close(slave)
        self.pidfd = os.pidfd_open(self.pid)
        self.screen = b""      # everything the CLI has written
        self.seen = 0          # how far read_until has looked
        self.ended = False     # the screen's end: nobody holds the slave
        self.returncode: Optional[int] = None

    def modes(self) -> list:
        """The terminal's termios modes (those of the slave, the CLI's side)."""
        return termios.tcgetattr(self.master)

    def raw(self) -> bool:
        """True while the terminal is in raw mode (no line editing, no key signals)."""
        lflag = self.modes()[3]
        return not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)

    def resize(self, rows: int, cols: int) -> None:
        """Resize the window, as a terminal emulator does."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def _read(self, timeout: float) -> None:
        """Add what the screen gets within `timeout`; note its end (every slave closed)."""
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:   # EIO: nobody holds the slave any more
                data = b""
            self.screen += data
            self.ended = not data

    def read_until(self, pattern: bytes) -> re.Match:
        """The first match of the regex `pattern` in what appears from here on."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            found = re.compile(pattern).search(self.screen, self.seen)
            if found:
                self.seen = found.end()
                return found
            if self.ended or time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} never appeared; the screen: {self.screen!r}")
            self._read(deadline - time.monotonic())

    def wait(self) -> int:
        """The CLI's exit status, once it has exited and the screen is read to its end."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while self.returncode is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the CLI did not exit; the screen: {self.screen!r}")
            watched = [self.pidfd] if self.ended else [self.pidfd, self.master]
            ready, _, _ = select.select(watched, [], [], max(0.0, deadline - time.monotonic()))
            if self.master in ready:
                self._read(0)
            if self.pidfd in ready:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
        # The end of the screen: nothing of the CLI's, nor of its container's,
        # holds our terminal any more.
        while not self.ended:
            if time.monotonic() > deadline:
                pytest.fail(f"something still holds the terminal; the screen: {self.screen!r}")
            self._read(deadline - time.monotonic())
        return self.returncode

    def close(self) -> None:
        """Kill the CLI if it still runs (a failed test), reap it, close the pty."""
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    """Start ``isolate ARGS...`` on a terminal of its own: terminal(*args, rows=, cols=, ids=)."""
    started: list[Terminal] = []

    def start(*args: str, **options) -> Terminal:
        started.append(Terminal(args, **options))
        return started[-1]

    yield start
    for term in started:
        term.close()


def sleeping(token: str) -> list[int]:
    """Pids of `sleep TOKEN` processes (not of the CLI whose argv holds the token)."""
    found = []
    for pid in pids_with_cmdline(token):
        try:
            if psutil.Process(pid).cmdline()[:1] == ["sleep"]:
                found.append(pid)
        except (psutil.NoSuchProcess, IndexError):
            continue
    return found


def shell(terminal: Callable[..., Terminal], *args: str, **options) -> Terminal:
    """`isolate ARGS... --env PS1=... -- sh` on a terminal, at its first prompt."""
    term = terminal(*args, *SHELL, **options)
    term.read_until(re.escape(PROMPT))
    return term


# ------------------------------------------------------------- run -it ----

def test_a_shell_gets_a_terminal_with_job_control_and_its_exit_status_comes_back(terminal):
    """`run -it -- sh`: the shell's terminal is a /dev/pts of its own, it is
    interactive with job control, our terminal is raw meanwhile and as it
    was once `exit 3` has ended the CLI with status 3."""
    term = shell(terminal, "run", "-it")
    assert term.raw()   # the prompt was relayed: raw mode came first
    term.type(b"tty\r")
    assert term.read_until(rb"/dev/pts/\d+\r\n")
    term.type(b'echo "flags:$-:"\r')
    flags = term.read_until(rb"flags:(\w+):").group(1)
    assert b"i" in flags and b"m" in flags, flags   # interactive, monitor (job control)
    term.type(b'echo "term:$TERM:"\r')
    assert term.read_until(rb"term:(\w*):").group(1) == b"xterm"   # docker's, unless given
    term.type(b"exit 3\r")
    assert term.wait() == 3
    assert term.modes() == term.modes_before


def test_ctrl_c_interrupts_the_foreground_job_and_the_shell_survives(terminal):
    """0x03 typed on our terminal reaches the container's, whose line
    discipline sends SIGINT to its foreground job, `sleep`, not to the shell."""
    term = shell(terminal, "run", "-it")
    token = unique_sleep_arg()
    term.type(f"sleep {token}\r".encode())
    assert wait_until(lambda: bool(sleeping(token))), term.screen
    term.type(b"\x03")
    assert wait_until(lambda: not sleeping(token)), "Ctrl-C did not stop sleep"
    term.type(b'echo "after:$?"\r')
    term.read_until(rb"after:130")
    term.type(b"exit\r")
    assert term.wait() == 0
    assert term.modes() == term.modes_before


def test_the_containers_terminal_takes_our_window_size_and_follows_it(terminal):
    """The size at start, then a resize of our window (TIOCSWINSZ on the
    master: the kernel sends the CLI SIGWINCH, as for a terminal emulator)."""
    term = shell(terminal, "run", "-it", rows=24, cols=80)
    term.type(b"stty size\r")
    assert term.read_until(rb"(\d+) (\d+)\r\n").groups() == (b"24", b"80")
    term.resize(33, 111)
    term.type(b"stty size\r")
    assert term.read_until(rb"(\d+) (\d+)\r\n").groups() == (b"33", b"111")
    term.type(b"exit\r")
    assert term.wait() == 0


def test_our_terminal_is_restored_when_the_workload_is_killed(terminal):
    token = unique_sleep_arg()
    term = terminal("run", "-it", "--", "sleep", token)
    assert wait_until(lambda: bool(sleeping(token)) and term.raw(), RUN_TIMEOUT), term.screen
    for pid in sleeping(token):
        os.kill(pid, signal.SIGKILL)
    assert term.wait() == 128 + signal.SIGKILL
    assert term.modes() == term.modes_before


@pytest.mark.parametrize("sig, workload, status", [
    (signal.SIGTERM, "sleep", 128 + signal.SIGTERM),   # sleep dies of it
    (signal.SIGHUP, "sh", 128 + signal.SIGHUP),        # an interactive shell dies of a hangup
])
def test_a_signal_to_the_cli_is_forwarded_and_our_terminal_restored(terminal, sig, workload,
                                                                    status):
    """SIGTERM or SIGHUP to the CLI goes on to the workload (as docker's and
    podman's sig-proxy do with -t); the CLI exits with the workload's
    status, having restored our terminal."""
    if workload == "sh":
        term = shell(terminal, "run", "-it")
    else:
        token = unique_sleep_arg()
        term = terminal("run", "-it", "--", "sleep", token)
        assert wait_until(lambda: bool(sleeping(token)) and term.raw(), RUN_TIMEOUT), term.screen
    assert term.raw()
    os.kill(term.pid, sig)
    assert term.wait() == status
    assert term.modes() == term.modes_before


# ------------------------------------------------------- -t without -i ----

def test_t_without_i_leaves_our_terminal_alone_and_reads_no_input(terminal):
    """As docker's -t: our keys are not relayed and our terminal stays as it
    is, so Ctrl-C is SIGINT to the CLI, which forwards it to the workload."""
    script = 'echo "ready:$((6*7))"; read line; echo "got:$line"'
    term = terminal("run", "-t", "--", "sh", "-c", script)
    term.read_until(rb"ready:42")
    assert term.modes() == term.modes_before
    term.type(b"hello\r")        # our own terminal echoes it; nobody reads it
    term.read_until(rb"hello")
    term.type(b"\x03")           # our terminal's line discipline: SIGINT to the CLI
    assert term.wait() == 128 + signal.SIGINT
    assert b"got:" not in term.screen
    assert term.modes() == term.modes_before


def test_t_alone_needs_no_terminal() -> None:
    """-t with stdin and stdout no terminals: the workload still gets one,
    and its output (CR LF, as its terminal writes lines) comes unchanged;
    a TERM given is kept."""
    r = subprocess.run([sys.executable, "-m", "isolate", "run", "-t", "--env", "TERM=vt100",
                        "--", "sh", "-c", 'tty; echo "$TERM"; echo err >&2; exit 4'],
                       stdin=subprocess.DEVNULL, capture_output=True, env=cli_env(), cwd=REPO,
                       timeout=RUN_TIMEOUT)
    assert r.returncode == 4, r.stderr
    assert re.fullmatch(rb"/dev/pts/\d+\r\nvt100\r\nerr\r\n", r.stdout), r.stdout
    assert r.stderr == b""


def test_t_relays_all_of_a_large_output() -> None:
    """Far more than the pty's buffers hold, all of it, to the last line
    written just before the workload exits."""
    r = subprocess.run([sys.executable, "-m", "isolate", "run", "-t", "--", "seq", "200000"],
                       stdin=subprocess.DEVNULL, capture_output=True, env=cli_env(), cwd=REPO,
                       timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(b"%d\r\n" % n for n in range(1, 200001))


def test_the_relay_is_loaded_only_for_t() -> None:
    """`isolate run` without -t loads neither the relay nor termios (test_startup.py's way)."""
    probe = ("import sys; from isolate.cli.main import main; "
             "assert main(['run', {}'--', 'true']) == 0; "
             "print('isolate.cli.terminal' in sys.modules, 'termios' in sys.modules)")
    for flag, loaded in (("", "False False"), ("'-t', ", "True True")):
        r = subprocess.run([sys.executable, "-c", probe.format(flag)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, env=cli_env(), cwd=REPO,
                           timeout=RUN_TIMEOUT)
        assert r.stdout.strip() == loaded, (flag, r.stdout, r.stderr)


@pytest.mark.parametrize("command", [
    ["run", "-it", "--", "sh", "-c", "echo ran"],
    ["run", "-t", "-i", "--", "sh", "-c", "echo ran"],
    ["--root", "/nonexistent/isolate-state", "exec", "--tty", "--interactive", "nobody",
     "--", "true"],
])
def test_it_with_stdin_no_terminal_is_refused_as_docker_does(command: list[str]) -> None:
    """Exit 1 with docker's message, before anything starts or is looked up."""
    r = subprocess.run([sys.executable, "-m", "isolate", *command], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, env=cli_env(), cwd=REPO,
                       timeout=RUN_TIMEOUT)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "isolate: the input device is not a TTY\n")


def test_i_without_t_passes_stdin_as_ever() -> None:
    r = subprocess.run([sys.executable, "-m", "isolate", "run", "-i", "--", "cat"],
                       input=b"typed\n", capture_output=True, env=cli_env(), cwd=REPO,
                       timeout=RUN_TIMEOUT)
    assert (r.returncode, r.stdout) == (0, b"typed\n"), r.stderr


@pytest.mark.parametrize("flag", ["-t", "-i", "-it"])
def test_detach_with_a_terminal_is_refused(flag: str) -> None:
    r = subprocess.run([sys.executable, "-m", "isolate", "run", "-d", flag, "--", "true"],
                       capture_output=True, text=True, env=cli_env(), cwd=REPO,
                       timeout=RUN_TIMEOUT)
    assert r.returncode == 125 and r.stdout == ""
    assert r.stderr.startswith("isolate: --detach: ") and r.stderr.count("\n") == 1, r.stderr


# ------------------------------------------------------------ exec -it ----

@pytest.fixture
def named_container(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A detached named container (`run -d --name`): (state root, name)."""
    root, name = str(tmp_path / "state"), "tty-target"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "isolate", "--root", root, *args],
                              capture_output=True, text=True, env=cli_env(), cwd=REPO,
                              timeout=RUN_TIMEOUT)

    r = cli("run", "-d", "--name", name, "--hostname", "ttyhost", "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    yield root, name
    cli("rm", "-f", name)


def test_exec_it_into_a_detached_named_container(terminal, named_container):
    root, name = named_container
    term = terminal("--root", root, "exec", "-it", name, *SHELL)
    term.read_until(re.escape(PROMPT))
    assert term.raw()
    term.type(b'tty; hostname; cat /proc/1/comm; echo "term:$TERM:"\r')
    assert term.read_until(rb"/dev/pts/\d+\r\nttyhost\r\nisolate-init\r\nterm:xterm:\r\n")
    term.resize(40, 120)
    term.type(b"stty size\r")
    assert term.read_until(rb"(\d+) (\d+)\r\n").groups() == (b"40", b"120")
    term.type(b"exit 5\r")
    assert term.wait() == 5
    assert term.modes() == term.modes_before


# ------------------------------------------------------------ rootless ----

def test_run_it_as_a_rootless_user(terminal, rootless):
    """The same terminal for an unprivileged caller (its container's root
    is the caller, mapped)."""
    term = shell(terminal, "run", "-it", ids=rootless)
    assert term.raw()
    term.type(b'tty; echo "uid:$(id -u)"\r')
    assert term.read_until(rb"/dev/pts/\d+\r\nuid:0\r\n")
    term.type(b"exit 6\r")
    assert term.wait() == 6
    assert term.modes() == term.modes_before
