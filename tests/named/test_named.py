"""Named containers from the command line: run --name/-d, exec, ps, kill, rm.

Each test drives `python -m isolate --root TMP ...` in real subprocesses, so
a detached container really outlives the process that started it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from isolate import Config, Seccomp
from isolate.named import containers as named
from isolate.errors import IsolateError
from isolate.named.state import ContainerState, StateDir, StateError

from conftest import REPO, POLICY_PROBE, PYTHON, RUN_TIMEOUT, marker, pid_alive, require, wait_until



def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the isolate CLI with state in `root`; text output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "isolate", "--root", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)


#: A row of `isolate ps`: NAME, PID, STATUS (words), CREATED (date and time), COMMAND.
PS_ROW = re.compile(r"(\S+) +(\d+) +(.+?) +(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)")


def ps(root: Path) -> dict[str, tuple[int, str]]:
    """name -> (pid, "running" or "stopped") from `isolate ps -a`, whose
    STATUS says "Up ..." or "Exited ..." as docker's does."""
    rows = [PS_ROW.fullmatch(row) for row in cli(root, "ps", "-a").stdout.splitlines()[1:]]
    return {row[1]: (int(row[2]), "running" if row[3].startswith("Up ") else "stopped")
            for row in rows}


@pytest.fixture
def root(tmp_path: Path):
    """A state directory; every container still running in it is killed after the test."""
    state = tmp_path / "state"
    yield state
    for name, (_pid, status) in ps(state).items() if state.exists() else ():
        if status == "running":
            cli(state, "rm", "-f", name)


def test_detached_container_outlives_its_starter_and_takes_exec(root: Path) -> None:
    """run -d returns at once; the container keeps running; exec joins it."""
    r = cli(root, "run", "--name", "web", "-d", "--hostname", "webhost", "--", "sleep", "1000")
    assert r.returncode == 0 and r.stdout.strip() == "web", r.stderr
    pid, status = ps(root)["web"]
    assert status == "running" and pid_alive(pid)
    r = cli(root, "exec", "web", "--", "sh", "-c", "hostname; cat /proc/1/comm; echo $$")
    assert r.returncode == 0, r.stderr
    hostname, comm, own_pid = r.stdout.split()
    assert (hostname, comm) == ("webhost", "isolate-init") and int(own_pid) > 2
    assert cli(root, "exec", "web", "--", "sh", "-c", "exit 3").returncode == 3


def test_exec_overrides_and_inherits_env(root: Path) -> None:
    """exec runs with the container's env plus --env, and --cwd."""
    assert cli(root, "run", "--name", "e", "-d", "--env", "A=1", "--", "sleep", "1000").returncode == 0
    r = cli(root, "exec", "e", "--env", "B=2", "--cwd", "/tmp", "--", "sh", "-c", 'echo "$A$B $PWD"')
    assert r.stdout.strip() == "12 /tmp", r.stderr


def test_kill_stops_and_exec_then_fails(root: Path) -> None:
    """kill sends SIGKILL by default; the record then reads stopped and exec refuses."""
    assert cli(root, "run", "--name", "k", "-d", "--", "sleep", "1000").returncode == 0
    pid, _ = ps(root)["k"]
    assert cli(root, "kill", "k").returncode == 0
    assert wait_until(lambda: ps(root)["k"][1] == "stopped")
    assert not pid_alive(pid) or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    r = cli(root, "exec", "k", "--", "true")
    assert r.returncode == 125 and "not running" in r.stderr
    assert cli(root, "kill", "k").returncode == 125


def test_kill_with_a_signal_reaches_the_workload(root: Path) -> None:
    """kill -s TERM is forwarded by the init to the workload, which ends."""
    assert cli(root, "run", "--name", "t", "-d", "--", "sleep", "1000").returncode == 0
    assert cli(root, "kill", "-s", "TERM", "t").returncode == 0
    assert wait_until(lambda: ps(root)["t"][1] == "stopped")


def test_rm_refuses_a_running_container_and_force_kills_it(root: Path) -> None:
    """rm keeps a running container's record (the only way back to it); rm -f kills it."""
    assert cli(root, "run", "--name", "r", "-d", "--", "sleep", "1000").returncode == 0
    pid, _ = ps(root)["r"]
    r = cli(root, "rm", "r")
    assert r.returncode == 125 and "running" in r.stderr
    assert "r" in ps(root)
    assert cli(root, "rm", "-f", "r").returncode == 0
    assert "r" not in ps(root)
    assert wait_until(lambda: not pid_alive(pid) or
                      Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z")
    assert not list(root.glob("r.*")), "record or log left behind"


def test_stale_record_after_sigkill_reads_stopped(root: Path) -> None:
    """A container killed behind isolate's back is reported stopped, not trusted."""
    assert cli(root, "run", "--name", "s", "-d", "--", "sleep", "1000").returncode == 0
    pid, _ = ps(root)["s"]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: ps(root)["s"][1] == "stopped")
    assert cli(root, "rm", "s").returncode == 0


def test_pid_reuse_is_detected(root: Path) -> None:
    """A record whose pid now names another process (other start time) reads stopped."""
    assert cli(root, "run", "--name", "p", "-d", "--", "sleep", "1000").returncode == 0
    record_path = root / "p.json"
    original = record_path.read_text()
    record = json.loads(original)
    other = subprocess.Popen(["sleep", "1000"])
    try:
        record["pid"] = other.pid           # a live process, but not the container's
        record_path.write_text(json.dumps(record))
        assert ps(root)["p"] == (other.pid, "stopped")
        assert cli(root, "kill", "p").returncode == 125
        assert other.poll() is None, "kill acted on a process that is not the container"
    finally:
        other.kill()
        other.wait()
        record_path.write_text(original)   # so that the fixture finds and removes the container


def test_foreground_named_run_records_its_exit(root: Path) -> None:
    """run --name without -d waits, exits with the status and records it."""
    assert cli(root, "run", "--name", "fg", "--", "sh", "-c", "exit 4").returncode == 4
    record = json.loads((root / "fg.json").read_text())
    assert record["exit_code"] == 4 and ps(root)["fg"][1] == "stopped"


def test_names_are_unique_while_running(root: Path) -> None:
    """A second run with a running container's name fails; a stopped one's is reused."""
    assert cli(root, "run", "--name", "u", "-d", "--", "sleep", "1000").returncode == 0
    r = cli(root, "run", "--name", "u", "-d", "--", "sleep", "1000")
    assert r.returncode == 125 and "already running" in r.stderr
    assert cli(root, "kill", "u").returncode == 0
    assert wait_until(lambda: ps(root)["u"][1] == "stopped")
    assert cli(root, "run", "--name", "u", "-d", "--", "true").returncode == 0


def test_detached_output_goes_to_the_log(root: Path) -> None:
    """A detached container's stdout and stderr land in <root>/<name>.log."""
    assert cli(root, "run", "--name", "l", "-d", "--", "sh", "-c", "echo out; echo err >&2").returncode == 0
    log = root / "l.log"
    assert wait_until(lambda: log.exists() and sorted(log.read_text().split()) == ["err", "out"])


def test_bad_names_are_refused(root: Path) -> None:
    """A name that could escape the state directory is a usage error."""
    r = cli(root, "run", "--name", "../x", "-d", "--", "true")
    assert r.returncode == 125 and "name" in r.stderr
    assert not (root.parent / "x.json").exists()


def test_detached_container_keeps_its_limits_until_rm(root: Path) -> None:
    """run -d with limits: the cgroup outlives the starter (the limits stay
    in force), and rm -f kills the container and removes the cgroup."""
    from conftest import cgroup_dirs
    before = cgroup_dirs()
    r = cli(root, "run", "--name", "lim", "-d", "--pids-limit", "10", "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    made = cgroup_dirs() - before
    assert made and all(os.path.basename(d).startswith("isolate-") for d in made)
    assert any(open(os.path.join(d, "cgroup.procs")).read().split() for d in made)
    assert cli(root, "rm", "-f", "lim").returncode == 0
    assert cgroup_dirs() == before


# --- exec applies the container's policy (issue 10, item 3) ---------------------

def exec_policy_inside() -> dict[str, Any]:
    """Start a detached container denied socket() with nofile=64 and only
    CAP_KILL; exec into it, as it is and with seccomp explicitly off."""
    states = StateDir(os.path.join("/tmp", marker(), "state"))   # sticky /tmp: any caller may
    config = Config(seccomp=Seccomp.deny(["socket"]), rlimits={"nofile": 64},
                    cap_drop=["ALL"], cap_add=["KILL"])
    try:
        named.start_detached(states, "pol", ["sleep", "1000"], config)
        seen = {}
        for label, weaken in (("kept", {}), ("weakened", {"seccomp": None})):
            r = named.exec_named(states, "pol", [PYTHON, "-c", POLICY_PROBE], capture_output=True,
                                 text=True, timeout=RUN_TIMEOUT, **weaken)
            assert r.returncode == 0, r.stderr
            seen[label] = json.loads(r.stdout)
        return seen
    finally:
        with contextlib.suppress(IsolateError):
            named.remove_named(states, "pol", force=True)
        shutil.rmtree(os.path.dirname(states.root))


def test_exec_gets_exactly_the_containers_seccomp_rlimits_and_capabilities(caller) -> None:
    """A container with Seccomp.deny(["socket"]), nofile=64 and only KILL:
    a process exec'd into it cannot make a socket, has nofile 64, only KILL
    and no_new_privs; seccomp=None given explicitly lifts the filter alone."""
    seen = caller(exec_policy_inside)
    kept = {"socket": errno.EPERM, "nofile": [64, 64], "nnp": "1", "capbnd": f"{1 << 5:016x}"}
    assert seen["kept"] == kept
    assert seen["weakened"] == {**kept, "socket": "ok"}


def test_cli_exec_keeps_ulimit_no_new_privs_and_seccomp(root: Path) -> None:
    """run -d --ulimit (the record holds rlimits) and the default policy:
    exec sees nofile 64:128, no_new_privs and a filter; a container run
    with --allow-new-privs --seccomp unconfined passes that on instead."""
    show = ["sh", "-c", "ulimit -n; ulimit -Hn; grep -E 'NoNewPrivs|Seccomp:' /proc/self/status"]
    r = cli(root, "run", "--name", "lim", "-d", "--ulimit", "nofile=64:128", "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = cli(root, "exec", "lim", "--", *show)
    assert r.stdout.split() == ["64", "128", "NoNewPrivs:", "1", "Seccomp:", "2"], r.stderr
    r = cli(root, "run", "--name", "open", "-d", "--allow-new-privs", "--seccomp", "unconfined",
            "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = cli(root, "exec", "open", "--", *show)
    assert r.stdout.split()[2:] == ["NoNewPrivs:", "0", "Seccomp:", "0"], r.stderr


def test_exec_joins_the_containers_cgroup(root: Path) -> None:
    """A process exec'd into a container with limits is in its cgroup (what
    it reads in /proc/self/cgroup is what PID 1's says), under its limits."""
    require(os.geteuid() == 0, "cgroups need root here")
    r = cli(root, "run", "--name", "cg", "-d", "--pids-limit", "10", "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = cli(root, "exec", "cg", "--", "sh", "-c", "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    pid1, own = ([line for line in part.splitlines() if ":pids:" in line or line.startswith("0::")]
                 for part in r.stdout.split("--\n"))
    assert own == pid1 and pid1
    r = cli(root, "exec", "cg", "--", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11; do sleep 5 & done")
    assert "can't fork" in r.stderr or "cannot fork" in r.stderr.lower(), r.stderr


def test_exec_refuses_a_record_without_the_policy(root: Path) -> None:
    """A record without seccomp, no_new_privs or rlimits (an older isolate's)
    is not exec'd into with less confinement: a one-line error naming them."""
    assert cli(root, "run", "--name", "old", "-d", "--", "sleep", "1000").returncode == 0
    path = root / "old.json"
    record = json.loads(path.read_text())
    for field in ("seccomp", "no_new_privs", "rlimits"):
        record["config"].pop(field, None)
    path.write_text(json.dumps(record))
    r = cli(root, "exec", "old", "--", "true")
    assert r.returncode == 125 and "lacks no_new_privs, rlimits, seccomp" in r.stderr, r.stderr


# --- rm acts on isolate's own cgroups only (issue 10, item 9) ----------------------

@pytest.fixture
def foreign_cgroup(caller) -> Iterator[tuple[str, subprocess.Popen]]:
    """A cgroup that is not isolate's (a service's, say), holding a `sleep`
    of the caller's: (its directory, the sleep)."""
    require(os.geteuid() == 0, "making a cgroup needs root")
    from isolate.cgroups import v1, interface
    base = "/sys/fs/cgroup" if interface.unified() else v1.hierarchies()["pids"]
    directory = os.path.join(base, "victim-" + marker())
    os.mkdir(directory)
    uid = caller(os.geteuid)
    sleeper = subprocess.Popen(["sleep", "1000"], user=uid)
    try:
        Path(directory, "cgroup.procs").write_text(str(sleeper.pid))
        yield directory, sleeper
    finally:
        sleeper.kill()
        sleeper.wait()
        if os.path.isdir(directory):   # else removed by a broken rm: the test says so
            wait_until(lambda: not Path(directory, "cgroup.procs").read_text().strip())
            os.rmdir(directory)


def test_rm_never_kills_in_a_cgroup_its_record_did_not_get_from_isolate(caller, foreign_cgroup):
    """A record whose cgroups name another cgroup: rm -f refuses, naming it,
    and the process in there lives on."""
    directory, sleeper = foreign_cgroup

    def remove() -> str:
        states = StateDir(os.path.join("/tmp", marker(), "state"))
        gone = subprocess.Popen(["true"])
        gone_record = ContainerState.for_process("svc", gone.pid, ["true"], {"cgroups": [directory]})
        gone.wait()
        states.save(gone_record.stopped(0))
        try:
            named.remove_named(states, "svc", force=True)
        except StateError as exc:
            return str(exc)
        finally:
            shutil.rmtree(os.path.dirname(states.root))
        return ""

    message = caller(remove)
    assert directory in message and "not a cgroup isolate made" in message
    assert sleeper.poll() is None and os.path.isdir(directory)
