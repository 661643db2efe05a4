"""Named containers from the command line: run --name/-d, exec, ps, kill, rm.

Each test drives `python -m isolate --root TMP ...` in real subprocesses, so
a detached container really outlives the process that started it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RUN_TIMEOUT, pid_alive, wait_until

REPO = Path(__file__).resolve().parent.parent


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the isolate CLI with state in `root`; text output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "isolate", "--root", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)


def ps(root: Path) -> dict[str, tuple[int, str]]:
    """name -> (pid, status) from `isolate ps`."""
    rows = cli(root, "ps").stdout.splitlines()[1:]
    return {row.split()[0]: (int(row.split()[1]), row.split()[2]) for row in rows}


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
