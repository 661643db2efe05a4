"""The life of named containers on the command line: exit codes of detached
containers, ps [-a] and its STATUS, wait, stop, start, restart, logs and
run --rm, driven as a user would (``python -m isolate --root DIR ...``) in
real subprocesses against the real kernel.

Nothing here is timed: every wait is for an outcome, bounded by
RUN_TIMEOUT (a subprocess) or wait_until.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO, RUN_TIMEOUT, cgroup_dirs, require, wait_until

#: A workload that ignores SIGTERM (its init forwards it; the shell's trap drops it).
STUBBORN = ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"]

#: A row of `isolate ps`: NAME, PID, STATUS (words), CREATED (date and time), COMMAND.
PS_ROW = re.compile(r"(\S+) +(\d+) +(.+?) +(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)")
#: docker's way of saying how long ago, for a container seconds old.
RECENT = r"(Less than a second|\d+ seconds?|About a minute)"


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the isolate CLI with state in `root`; text output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "isolate", "--root", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)


def ok(root: Path, *args: str) -> str:
    """The stdout of a CLI call that must succeed."""
    r = cli(root, *args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def ps(root: Path, *flags: str) -> dict[str, tuple[int, str, str]]:
    """name -> (pid, STATUS, COMMAND) from `isolate ps FLAGS`."""
    lines = ok(root, "ps", *flags).splitlines()
    assert lines[0].split() == ["NAME", "PID", "STATUS", "CREATED", "COMMAND"]
    rows = [PS_ROW.fullmatch(line) for line in lines[1:]]
    assert all(rows), lines
    return {row[1]: (int(row[2]), row[3], row[5]) for row in rows}


def record(root: Path, name: str) -> dict:
    return json.loads((root / f"{name}.json").read_text())


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A state directory; every container in it is removed after the test."""
    state = tmp_path / "state"
    yield state
    if state.exists():
        for name in ps(state, "-a"):
            cli(state, "rm", "-f", name)


# --- exit codes of detached containers, and ps -------------------------------

def test_a_detached_container_that_exits_records_its_code(root: Path) -> None:
    """exit 3 by itself: wait prints 3, the record holds it with the time,
    ps -a says "Exited (3) ... ago", ps leaves it out."""
    ok(root, "run", "-d", "--name", "three", "--", "sh", "-c", "exit 3")
    assert ok(root, "wait", "three") == "3\n"
    saved = record(root, "three")
    assert saved["exit_code"] == 3 and saved["finished"] >= saved["created"]
    pid, status, command = ps(root, "-a")["three"]
    assert re.fullmatch(rf"Exited \(3\) {RECENT} ago", status) and command == "sh -c exit 3"
    assert "three" not in ps(root)


def test_kill_records_137(root: Path) -> None:
    ok(root, "run", "-d", "--name", "k", "--", "sleep", "1000")
    assert re.fullmatch(rf"Up {RECENT}", ps(root)["k"][1])
    ok(root, "kill", "k")
    assert record(root, "k")["exit_code"] == -9   # the killer recorded it
    assert ok(root, "wait", "k") == "137\n"
    assert re.fullmatch(rf"Exited \(137\) {RECENT} ago", ps(root, "-a")["k"][1])


def test_kill_with_term_records_the_workloads_death(root: Path) -> None:
    ok(root, "run", "-d", "--name", "t", "--", "sleep", "1000")
    ok(root, "kill", "-s", "TERM", "t")
    assert ok(root, "wait", "t") == "143\n"


def test_stop_sends_sigkill_when_sigterm_is_ignored(root: Path) -> None:
    """stop -t: SIGTERM, which the workload ignores, then SIGKILL: 137."""
    ok(root, "run", "-d", "--name", "stubborn", "--", *STUBBORN)
    assert ok(root, "stop", "-t", "0.5", "stubborn") == "stubborn\n"
    assert record(root, "stubborn")["exit_code"] == -9
    assert ok(root, "wait", "stubborn") == "137\n"
    assert ok(root, "stop", "stubborn") == "stubborn\n"   # stopped already: nothing to do


def test_stop_ends_a_workload_that_heeds_sigterm(root: Path) -> None:
    ok(root, "run", "-d", "--name", "s", "--", "sleep", "1000")
    assert ok(root, "stop", "s") == "s\n"
    assert record(root, "s")["exit_code"] == -15
    assert re.fullmatch(rf"Exited \(143\) {RECENT} ago", ps(root, "-a")["s"][1])


def test_wait_prints_each_code_in_turn(root: Path) -> None:
    """wait blocks until each has stopped (one still runs when it is called)."""
    ok(root, "run", "-d", "--name", "one", "--", "sh", "-c", "exit 1")
    ok(root, "run", "-d", "--name", "two", "--", "sh", "-c", "read x; exit 2")   # stdin: EOF
    ok(root, "run", "-d", "--name", "later", "--", "sh", "-c", "sleep 1; exit 7")
    assert ok(root, "wait", "one", "two", "later") == "1\n2\n7\n"


def test_wait_for_a_foreground_container(root: Path) -> None:
    """A foreground run's own exit code, which its starter records."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    fg = subprocess.Popen([sys.executable, "-m", "isolate", "--root", str(root), "run", "--name",
                           "fg", "--", "sh", "-c", "sleep 1; exit 9"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: "fg" in ps(root))
        assert ok(root, "wait", "fg") == "9\n"
    finally:
        assert fg.wait(timeout=RUN_TIMEOUT) == 9


def test_no_init_leaves_the_exit_unknown(root: Path) -> None:
    ok(root, "run", "-d", "--no-init", "--name", "bare", "--", "sh", "-c", "exit 3")
    r = cli(root, "wait", "bare")
    assert r.returncode == 125 and "'bare'" in r.stderr and "--no-init" in r.stderr, r.stderr
    assert ps(root, "-a")["bare"][1] == "Exited"


# --- start, restart --------------------------------------------------------------

def log_lines(root: Path, name: str) -> list[str]:
    return ok(root, "logs", name).splitlines()


def test_start_and_restart_run_the_same_command_with_the_same_config(root: Path) -> None:
    ok(root, "run", "-d", "--name", "web", "--hostname", "box", "--env", "A=1",
       "--ulimit", "nofile=64", "--", "sh", "-c", 'echo "$A $(hostname) $(ulimit -n)"; '
                                                  "exec sleep 1000")
    assert wait_until(lambda: log_lines(root, "web") == ["1 box 64"])
    first_pid, _, command = ps(root)["web"]
    created = record(root, "web")["created"]
    r = cli(root, "start", "web")
    assert r.returncode == 125 and "already running" in r.stderr, r.stderr
    assert ok(root, "restart", "-t", "1", "web") == "web\n"
    assert wait_until(lambda: log_lines(root, "web") == ["1 box 64"] * 2)
    pid, status, again = ps(root)["web"]
    assert pid != first_pid and again == command and status.startswith("Up ")
    assert record(root, "web")["created"] == created
    assert ok(root, "exec", "web", "--", "sh", "-c", "echo $A $(hostname)") == "1 box\n"
    ok(root, "stop", "web")
    assert ok(root, "start", "web") == "web\n"
    assert wait_until(lambda: log_lines(root, "web") == ["1 box 64"] * 3)
    assert ps(root)["web"][1].startswith("Up ")


def test_start_a_container_that_exited_by_itself(root: Path) -> None:
    ok(root, "run", "-d", "--name", "job", "--", "sh", "-c", "echo ran; exit 5")
    assert ok(root, "wait", "job") == "5\n"
    ok(root, "start", "job")
    assert ok(root, "wait", "job") == "5\n"
    assert log_lines(root, "job") == ["ran", "ran"]


# --- logs -------------------------------------------------------------------------

def test_logs_tail_and_follow(root: Path) -> None:
    """-f copies until the container stops (it writes once more before it
    ends); --tail N shows the last N lines."""
    ok(root, "run", "-d", "--name", "l", "--", "sh", "-c",
       "for i in 1 2 3; do echo $i; done; sleep 1; echo 4 >&2")
    assert ok(root, "logs", "-f", "l") == "1\n2\n3\n4\n"
    assert ok(root, "logs", "--tail", "2", "l") == "3\n4\n"
    assert ok(root, "logs", "--tail", "0", "l") == ""
    assert ok(root, "logs", "--tail", "all", "-f", "l") == "1\n2\n3\n4\n"


def test_logs_has_no_timestamps_and_says_so(root: Path) -> None:
    ok(root, "run", "-d", "--name", "l", "--", "true")
    r = cli(root, "logs", "--timestamps", "l")
    assert r.returncode == 125 and "--timestamps" in r.stderr and r.stdout == ""


# --- run --rm ----------------------------------------------------------------------

def test_rm_leaves_no_record_log_or_cgroup(root: Path) -> None:
    require(os.geteuid() == 0, "cgroups need root here")
    before = cgroup_dirs()
    ok(root, "run", "-d", "--rm", "--name", "gone", "--pids-limit", "10", "--", "sh", "-c",
       "echo bye; exit 3")
    assert wait_until(lambda: not list(root.glob("gone*")) and cgroup_dirs() == before,
                      RUN_TIMEOUT), list(root.iterdir())
    ok(root, "run", "-d", "--rm", "--name", "stopped", "--", "sleep", "1000")
    ok(root, "stop", "stopped")
    assert wait_until(lambda: not list(root.glob("stopped*")), RUN_TIMEOUT)
    r = cli(root, "run", "--rm", "--name", "fg", "--", "sh", "-c", "exit 5")
    assert r.returncode == 5 and not list(root.glob("fg*"))
    assert sorted(os.listdir(root)) == [".lock"]


# --- bad input --------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["wait", "stop", "start", "restart", "logs", "kill", "rm"])
def test_an_unknown_name_is_an_error_naming_it(root: Path, verb: str) -> None:
    ok(root, "ps")   # makes the state directory
    r = cli(root, verb, "nope")
    assert r.returncode == 125 and "no container named 'nope'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_the_other_names_still_get_their_turn(root: Path) -> None:
    ok(root, "run", "-d", "--name", "real", "--", "sh", "-c", "exit 4")
    r = cli(root, "wait", "nope", "real")
    assert (r.returncode, r.stdout) == (125, "4\n") and "'nope'" in r.stderr


@pytest.mark.parametrize("args, flag", [
    (["stop", "-t", "-1", "web"], "-t/--time"), (["stop", "-t", "soon", "web"], "-t/--time"),
    (["restart", "--time", "nan", "web"], "-t/--time"), (["restart", "-t", "inf", "web"], "-t/--time"),
    (["logs", "--tail", "-3", "web"], "--tail"), (["logs", "--tail", "x", "web"], "--tail"),
    (["wait"], "NAME"), (["stop"], "NAME"), (["start"], "NAME"), (["logs"], "NAME"),
])
def test_bad_arguments_name_the_flag(root: Path, args: list[str], flag: str) -> None:
    r = cli(root, *args)
    assert r.returncode == 125 and flag in r.stderr, r.stderr


@pytest.mark.parametrize("verb", ["ps", "wait", "stop", "start", "restart", "logs"])
def test_every_verb_shows_an_example(root: Path, verb: str) -> None:
    assert re.search(rf"^example:\n  isolate {verb} ", ok(root, verb, "--help"), re.MULTILINE)


# --- what ps -a, wait and logs load ----------------------------------------------

PROBE = """
import json, sys
before = set(sys.modules)
from isolate.cli.main import main
for args in {calls!r}:
    assert main(["--root", {root!r}, *args]) == 0, args
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_ps_a_wait_and_logs_load_no_spawn_path(root: Path) -> None:
    """Reading records, exit files and logs needs neither the spawn path,
    nor the cgroups, nor the image store (as tests/test_startup.py for ps)."""
    ok(root, "run", "-d", "--name", "done", "--", "sh", "-c", "echo hi; exit 0")
    assert ok(root, "wait", "done") == "0\n"
    calls = [["ps", "-a"], ["wait", "done"], ["logs", "--tail", "1", "done"]]
    out = subprocess.run([sys.executable, "-c", PROBE.format(calls=calls, root=str(root))],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO))).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert not loaded & {"isolate.container", "isolate._native", "cffi", "isolate.config",
                         "isolate.named.containers", "isolate.cgroups.interface",
                         "isolate.images.store", "isolate.security.seccomp", "tarfile"}, loaded
