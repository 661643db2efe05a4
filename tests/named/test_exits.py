"""How named containers end, and their life after `run -d` (isolate.named.exits,
isolate.named.containers, isolate.named.logs, isolate.named.remover), from
Python: real detached containers, real signals.

Detached containers are started in a forked child (as root, or dropped to
the rootless user), never by pytest itself: their PID 1 is their starter's
child, which must exit (as `isolate run -d` does) for it to be reaped.
"""
from __future__ import annotations

import fcntl
import io
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest

import isolate
from isolate.named import containers as named
from isolate.named import exits, logs
from isolate.named.state import (RUNNING, STOPPED, ContainerState, StateDir, StateError,
                                 record_config)

from conftest import (PYTHON, RUN_TIMEOUT, cgroup_dirs, drop_to, marker, require, run_in_fork, unwrap,
                      wait_until)

#: A workload that ignores SIGTERM (its init forwards it; the shell's trap drops it).
STUBBORN = ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"]


@pytest.fixture(params=["root", "rootless"])
def as_caller(request) -> Callable[[Callable[[], Any]], Any]:
    """Call a function in a forked child, as root or as the rootless user,
    with a fresh state directory under sticky /tmp (any caller may make one)
    as its argument; the directory goes away after."""
    setup = None
    if request.param == "rootless":
        setup = drop_to(*request.getfixturevalue("rootless"))
    base = os.path.join("/tmp", marker())

    def call(fn: Callable[[StateDir], Any]) -> Any:
        def body() -> Any:
            states = StateDir(os.path.join(base, "state"))
            try:
                return fn(states)
            finally:
                for record in states.list():
                    if record.status() == RUNNING:
                        named.remove_named(states, record.name, force=True)
        return unwrap(run_in_fork(body, setup=setup, timeout=2 * RUN_TIMEOUT))

    yield call
    shutil.rmtree(base, ignore_errors=True)


def detached(states: StateDir, name: str, args: list[str], **config: Any) -> ContainerState:
    return named.start_detached(states, name, args, isolate.Config(**config))


# --- the line pid1 writes ----------------------------------------------------

@pytest.mark.parametrize("line, code", [
    (b"exit 0\n", 0), (b"exit 3\n", 3), (b"exit 255\n", 255), (b"signal 9\n", -9),
    (b"signal 15\n", -15), (b"signal 64\n", -64),
])
def test_exit_lines_are_read(line: bytes, code: int) -> None:
    assert exits.parse(line) == code


@pytest.mark.parametrize("line", [
    b"", b"exit 3", b"exit 256\n", b"exit -1\n", b"exit 03\n", b"exit  3\n", b"Exit 3\n",
    b"signal 0\n", b"signal 65\n", b"signal 9\nexit 0\n", b"exit 3\n\n", b"exit 3\r\n",
    b"exit 1000000000000\n", b"exit \xff\n", b"exit 3\x00\n", b"\x1b]0;owned\x07\n",
])
def test_anything_else_is_refused(line: bytes) -> None:
    """The file is written from inside the container: anything that is not
    exactly one of pid1's lines counts for nothing."""
    assert exits.parse(line) is None


# --- Container(exit_fd=) -------------------------------------------------------

@pytest.mark.parametrize("above", [False, True], ids=["low-fd", "fd-above-the-report-pipe"])
def test_pid1_writes_the_exit_and_the_workload_never_holds_the_file(tmp_path: Path,
                                                                     above: bool) -> None:
    """pid1 keeps the exit file (below or above its report pipe) and the
    workload never sees it."""
    path = tmp_path / f"{marker()}.exit"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if above:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 200)
        os.close(fd)
        fd = high
    try:
        with isolate.Container(["sh", "-c", "ls -l /proc/self/fd/; exit 3"], stdout=isolate.PIPE,
                               exit_fd=fd) as c:
            out, _ = c.communicate(timeout=RUN_TIMEOUT)
            assert c.returncode == 3
        assert path.name.encode() not in out and b" 0 -> " in out, out
        assert path.read_bytes() == b"exit 3\n"
        with isolate.Container(["sleep", "1000"], exit_fd=fd) as c:
            c.process.terminate()
            assert c.wait(timeout=RUN_TIMEOUT) == -signal.SIGTERM
        assert path.read_bytes() == b"signal 15\n"   # cut after the line: "exit 3" is gone
    finally:
        os.close(fd)


def test_exit_fd_needs_init_and_a_descriptor() -> None:
    with pytest.raises(isolate.ConfigError, match="exit_fd.*init"):
        isolate.Container(["true"], exit_fd=5, init=False)
    for bad in (1, -1, True, "5"):
        with pytest.raises(isolate.ConfigError, match="exit_fd"):
            isolate.Container(["true"], exit_fd=bad)


# --- what each way of ending records -------------------------------------------

def ends(states: StateDir) -> dict[str, tuple[int | None, bool]]:
    """Detached containers ending each way: name -> (exit_code, finish time known)."""
    detached(states, "three", ["sh", "-c", "exit 3"])
    detached(states, "killed", ["sleep", "1000"])
    detached(states, "termed", ["sleep", "1000"])
    detached(states, "stubborn", STUBBORN)
    detached(states, "behind", ["sleep", "1000"])
    detached(states, "noinit", ["sh", "-c", "exit 4"], init=False)
    named.kill_named(states, "killed")
    named.kill_named(states, "termed", signal.SIGTERM)
    assert named.stop_named(states, "stubborn", timeout=0.2).exit_code == -signal.SIGKILL
    os.kill(states.load("behind").pid, signal.SIGKILL)   # not through isolate
    results = {}
    for name in ("three", "killed", "termed", "stubborn", "behind", "noinit"):
        record = exits.wait(states, name)
        assert record.status() == STOPPED
        assert states.load(name) == record, "the exit is saved in the record"
        results[name] = (record.exit_code, record.finished is not None)
    return results


def test_each_way_of_ending_is_recorded(as_caller) -> None:
    """exit 3 and SIGTERM (forwarded): pid1's line; SIGKILL through isolate
    (kill, stop past its timeout): the killer's -9, timed; SIGKILL behind
    isolate's back: -9, time unknown; no init: unknown."""
    assert as_caller(ends) == {
        "three": (3, True), "killed": (-9, True), "termed": (-15, True),
        "stubborn": (-9, True), "behind": (-9, False), "noinit": (None, False)}


def forged_while_running(states: StateDir) -> tuple[str, str, int | None]:
    """Garbage in a running container's exit file (as root inside could
    write through a ptraced pid1): the record still runs; at the end pid1's
    own line replaces it."""
    detached(states, "web", ["sleep", "1000"])
    with open(os.path.join(states.root, "web.exit"), "wb") as f:
        f.write(b"exit 0\n" + b"x" * 40)
    before = exits.settle(states, states.load("web")).status()
    named.kill_named(states, "web", signal.SIGTERM)
    after = exits.wait(states, "web")
    return before, after.status(), after.exit_code


def test_a_forged_exit_file_changes_nothing_while_it_runs(as_caller) -> None:
    assert as_caller(forged_while_running) == (RUNNING, STOPPED, -signal.SIGTERM)


def garbage_after_exit(states: StateDir) -> tuple[int | None, str]:
    detached(states, "web", ["sh", "-c", "exit 3"])
    exits.wait(states, "web")
    states.update("web", lambda record: ContainerState.from_dict(
        {**record.to_dict(), "exit_code": None, "finished": None}))
    with open(os.path.join(states.root, "web.exit"), "wb") as f:
        f.write(b"\x1b]0;owned\x07 exit 0\n")
    record = exits.settle(states, states.load("web"))
    return record.exit_code, record.status()


def test_an_unreadable_exit_file_is_unknown_not_trusted(as_caller) -> None:
    assert as_caller(garbage_after_exit) == (None, STOPPED)


# --- start, restart ------------------------------------------------------------

PROBE = ["sh", "-c", 'echo "$A $(hostname) $(id -u) $(ulimit -n) $(pwd)"; '
                     'grep -c " /tmp/scratch tmpfs" /proc/self/mounts; sleep 1000']


def started_again(states: StateDir) -> dict[str, Any]:
    """A container with a hostname, env, cwd, rlimit and a tmpfs, started,
    stopped, started and restarted: the same argv and config each time."""
    def lines() -> list[str]:
        with states.read_log("web") as log:
            return log.read().decode().splitlines()

    def printed(runs: int) -> None:
        # Each run prints two lines; a stop before then would cut it short.
        assert wait_until(lambda: len(lines()) >= 2 * runs, RUN_TIMEOUT), lines()

    config = dict(hostname="again", env={"A": "1"}, cwd="/tmp", rlimits={"nofile": 64},
                  mounts=[isolate.Tmpfs("/tmp/scratch")])
    first = detached(states, "web", PROBE, **config)
    printed(1)
    named.stop_named(states, "web", timeout=0.2)
    second = named.start_named(states, "web")
    printed(2)
    refused = ""
    try:
        named.start_named(states, "web")
    except StateError as exc:
        refused = str(exc)
    third = named.restart_named(states, "web", timeout=0.2)
    printed(3)
    named.stop_named(states, "web", timeout=0.2)
    return {"pids": len({first.pid, second.pid, third.pid}), "refused": refused,
            "argv": {first.argv, second.argv, third.argv},
            "configs": [first.config, second.config, third.config],
            "created": {first.created, second.created, third.created},
            "started": second.started is not None and third.started is not None,
            "lines": lines()}


def test_start_and_restart_run_the_same_argv_with_the_same_config(as_caller) -> None:
    seen = as_caller(started_again)
    assert seen["pids"] == 3 and seen["argv"] == {tuple(PROBE)}
    assert seen["configs"][0] == seen["configs"][1] == seen["configs"][2]
    assert len(seen["created"]) == 1 and seen["started"]
    assert "already running" in seen["refused"]
    assert seen["lines"] == ["1 again 0 64 /tmp", "1"] * 3


def limited_restart(states: StateDir) -> tuple[list[str], list[str], dict]:
    detached(states, "lim", ["sleep", "1000"], limits=isolate.CgroupLimit(pids=10))
    first = states.load("lim").config["cgroups"]
    again = named.restart_named(states, "lim", timeout=0.2)
    return first, again.config["cgroups"], again.config["limits"]


def test_a_restart_gets_its_limits_in_a_new_cgroup_and_the_old_one_goes() -> None:
    """(Root: a rootless caller has no cgroup of its own here.)"""
    require(os.geteuid() == 0, "cgroups need root here")
    before = cgroup_dirs()
    first, second, limits = unwrap(run_in_fork(lambda: _in_state_dir(limited_restart)))
    assert limits["pids"] == 10 and first != second
    assert cgroup_dirs() == before   # the old one at the restart, the new one at rm


def _in_state_dir(fn: Callable[[StateDir], Any]) -> Any:
    base = os.path.join("/tmp", marker())
    states = StateDir(os.path.join(base, "state"))
    try:
        return fn(states)
    finally:
        for record in states.list():
            named.remove_named(states, record.name, force=True)
        shutil.rmtree(base)


def stopped_record(states: StateDir, name: str, **fields: Any) -> None:
    """Save a record of a container that has stopped (its exit recorded)."""
    states.save(ContainerState(name=name, pid=os.getpid(), start_time=0, argv=["true"],
                               exit_code=0, **fields))


def test_records_without_restart_settings_are_refused(tmp_path: Path) -> None:
    """A record from before restarts were kept, or of a container that
    joined namespaces: start refuses, naming why."""
    states = StateDir(tmp_path / "state")
    config = record_config(isolate.Config())
    stopped_record(states, "old", config={k: v for k, v in config.items()
                                          if k not in ("hostname", "limits")})
    with pytest.raises(StateError, match="lacks hostname, limits.*cannot start it again"):
        named.start_named(states, "old")
    stopped_record(states, "joiner", config={**config, "joined": ["net"]})
    with pytest.raises(StateError, match=r"joined namespaces \(\['net'\]\)"):
        named.start_named(states, "joiner")


# --- logs ------------------------------------------------------------------------

def log_of(tmp_path: Path, content: bytes) -> StateDir:
    """A stopped container "web" whose log holds `content`."""
    states = StateDir(tmp_path / "state")
    stopped_record(states, "web", detached=True)
    with states.open_log("web") as log:
        log.write(content)
    return states


@pytest.mark.parametrize("content, tail, shown", [
    (b"a\nb\nc\n", None, b"a\nb\nc\n"), (b"a\nb\nc\n", 2, b"b\nc\n"), (b"a\nb\nc\n", 0, b""),
    (b"a\nb\nc\n", 9, b"a\nb\nc\n"), (b"a\nb\nc", 1, b"c"), (b"a\n\n\n", 2, b"\n\n"),
    (b"", 3, b""), (b"x" * 200_000 + b"\n" + b"y" * 70_000 + b"\n", 1, b"y" * 70_000 + b"\n"),
    (b"1\n" * 50_000, 40_000, b"1\n" * 40_000),
])
def test_tail_shows_the_last_lines(tmp_path: Path, content: bytes, tail: int | None,
                                   shown: bytes) -> None:
    out = io.BytesIO()
    logs.copy(log_of(tmp_path, content), "web", out, tail=tail)
    assert out.getvalue() == shown


def followed(states: StateDir) -> tuple[bytes, bytes]:
    """Follow a container that writes a line, waits, writes another and exits."""
    detached(states, "web", ["sh", "-c", "echo one; sleep 1; echo two; exit 0"])
    out = io.BytesIO()
    logs.copy(states, "web", out, follow=True)   # returns once it has stopped
    tail = io.BytesIO()
    logs.copy(states, "web", tail, tail=1, follow=True)   # stopped: at once
    return out.getvalue(), tail.getvalue()


def test_follow_copies_until_the_container_stops(as_caller) -> None:
    assert as_caller(followed) == (b"one\ntwo\n", b"two\n")


def test_a_foreground_container_has_no_log(tmp_path: Path) -> None:
    states = log_of(tmp_path, b"")
    os.unlink(os.path.join(states.root, "web.log"))
    with pytest.raises(StateError, match="no log"):
        logs.copy(states, "web", io.BytesIO())


# --- run --rm --------------------------------------------------------------------

def interpreter_for_the_remover() -> None:
    """The remover is a new interpreter (sys.executable).  The rootless user
    cannot run this test run's, which lives under /root (mode 700): it gets
    the host's, with this run's packages, as a user would run their own."""
    if os.geteuid() != 0:
        sys.executable = PYTHON
        os.environ["PYTHONPATH"] = os.path.dirname(os.path.dirname(attrs.__file__))


def removed_when_stopped(states: StateDir) -> list[str]:
    interpreter_for_the_remover()
    detached(states, "gone", ["sh", "-c", "exit 3"])
    named.start_detached(states, "rm", ["sleep", "1000"], isolate.Config(), auto_remove=True)
    named.start_detached(states, "rm3", ["sh", "-c", "exit 3"], isolate.Config(), auto_remove=True)
    kept = named.start_detached(states, "rs", STUBBORN, isolate.Config(), auto_remove=True)
    again = named.restart_named(states, "rs", timeout=0.2)   # not removed by the stop
    assert again.auto_remove and again.pid != kept.pid and states.load("rs").pid == again.pid
    named.stop_named(states, "rm")
    named.stop_named(states, "rs", timeout=0.2)
    assert wait_until(lambda: set(os.listdir(states.root)) <= {".lock", "gone.json", "gone.log",
                                                               "gone.exit"}, RUN_TIMEOUT)
    return sorted(os.listdir(states.root))


def test_auto_remove_leaves_nothing_and_a_restart_keeps_it(as_caller) -> None:
    assert as_caller(removed_when_stopped) == [".lock", "gone.exit", "gone.json", "gone.log"]


def test_auto_remove_removes_the_cgroup_too() -> None:
    """(Root: a rootless caller has no cgroup of its own here.)"""
    require(os.geteuid() == 0, "cgroups need root here")
    before = cgroup_dirs()

    def run(states: StateDir) -> None:
        named.start_detached(states, "lim", ["sh", "-c", "exit 0"],
                             isolate.Config(limits=isolate.CgroupLimit(pids=10)), auto_remove=True)
        assert wait_until(lambda: "lim" not in states, RUN_TIMEOUT)

    unwrap(run_in_fork(lambda: _in_state_dir(run)))
    # The remover takes the record away first, then the cgroup.
    assert wait_until(lambda: cgroup_dirs() == before, RUN_TIMEOUT)
