"""The inspection and transfer verbs on the command line: inspect, stats,
top, pause, unpause, cp, commit, info, version and --version, driven as a
user would (``python -m isolate``) against real detached containers.
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, RUN_TIMEOUT, require, unique_sleep_arg, wait_until
from image_builder import build_docker_archive, busybox_config, busybox_layers, directory, file

#: Exit status of isolate's own failures (a name that names nothing, bad usage).
FAILED = 125


@pytest.fixture
def home(tmp_path: Path):
    """A store holding app:1 (busybox with /app/data) and a state directory;
    the containers started in them are removed after the test (rm -f
    thaws a paused one)."""
    require(shutil.which("busybox") is not None, "busybox is not installed")
    require(os.geteuid() == 0, "cgroups (stats, pause) need root here")
    archive = tmp_path / "app.tar"
    build_docker_archive(archive, busybox_layers() + [[directory("app", 0o755),
                                                       file("app/data", "v1\n")]],
                         busybox_config(Cmd=["busybox", "sleep", "1000"], WorkingDir="/app"),
                         ["app:1"])
    assert isolate(tmp_path, "import", str(archive)).returncode == 0
    yield tmp_path
    for line in isolate(tmp_path, "ps", "-a").stdout.splitlines()[1:]:
        isolate(tmp_path, "rm", "-f", line.split()[0])


def isolate(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m isolate --store HOME/store --root HOME/state ARGS...``, text output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "isolate", "--store", str(home / "store"),
                           "--root", str(home / "state"), *args], capture_output=True, text=True,
                          env=env, cwd=home, timeout=RUN_TIMEOUT)


def run_detached(home: Path, name: str, *args: str) -> None:
    r = isolate(home, "run", "--name", name, "-d", *args)
    assert r.returncode == 0 and r.stdout.strip() == name, r.stderr


def columns(line: str) -> list[str]:
    """A table row: columns are at least 3 spaces apart."""
    return re.split(r" {3,}", line.rstrip())


# --- inspect ---------------------------------------------------------------------------------


def test_inspect_prints_docker_fields_of_running_and_exited_containers(home: Path) -> None:
    run_detached(home, "web", "--image", "app:1", "--memory", "64M", "--env", "A=1")
    run_detached(home, "done", "--image", "app:1", "--", "sh", "-c", "exit 3")
    assert wait_until(lambda: json.loads(isolate(home, "inspect", "done").stdout)[0]
                      ["State"]["Status"] == "exited", RUN_TIMEOUT)
    r = isolate(home, "inspect", "web", "done")
    assert r.returncode == 0, r.stderr
    web, done = json.loads(r.stdout)
    assert (web["Name"], web["Path"], web["Args"]) == ("web", "busybox", ["sleep", "1000"])
    assert web["State"]["Running"] and web["State"]["Pid"] > 0 and web["State"]["ExitCode"] == 0
    assert "A=1" in web["Config"]["Env"] and web["Config"]["WorkingDir"] == "/app"
    assert web["Config"]["Image"] == "app:1" and web["Image"].startswith("sha256:")
    assert web["HostConfig"]["Memory"] == 64 << 20 and web["HostConfig"]["Seccomp"] == "default"
    assert web["LogPath"] == str(home / "state" / "web.log")
    assert (done["State"]["Status"], done["State"]["Pid"], done["State"]["ExitCode"]) \
        == ("exited", 0, 3)
    assert done["State"]["FinishedAt"] >= done["State"]["StartedAt"] != "0001-01-01T00:00:00Z"


def test_inspect_of_an_unknown_name_fails_naming_it(home: Path) -> None:
    """The containers found are printed; each name that names none is an
    error line, and the exit status is 125."""
    run_detached(home, "web", "--image", "app:1")
    r = isolate(home, "inspect", "ghost", "web", "phantom")
    assert r.returncode == FAILED
    assert [doc["Name"] for doc in json.loads(r.stdout)] == ["web"]
    assert r.stderr.splitlines() == [
        f"isolate: no container named 'ghost' (in {home / 'state'})",
        f"isolate: no container named 'phantom' (in {home / 'state'})"]


# --- stats and top ---------------------------------------------------------------------------


def test_stats_no_stream_shows_usage_against_limits(home: Path) -> None:
    """A container with limits: memory > 0 against 64MiB, at least one
    process; one without: "--" and a note that says how to get figures."""
    run_detached(home, "lim", "--image", "app:1", "--memory", "64M", "--pids-limit", "20")
    run_detached(home, "free", "--", "sleep", "1000")
    r = isolate(home, "stats", "--no-stream")
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert columns(header) == ["NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "BLOCK I/O", "PIDS"]
    found = {cells[0]: cells for cells in map(columns, rows)}
    name, cpu, memory, percent, block, pids = found["lim"]
    used, limit = memory.split(" / ")
    assert limit == "64MiB" and float(re.match(r"[0-9.]+", used)[0]) > 0, memory
    assert cpu.endswith("%") and 0 < float(percent.rstrip("%")) < 100 and int(pids) >= 1
    assert re.fullmatch(r"\S+B / \S+B", block)
    assert found["free"][1:] == ["--"] * 5
    assert "free: no figures" in r.stderr and "--memory" in r.stderr


def test_stats_streams_one_table_per_second_on_a_pipe(home: Path) -> None:
    """Without --no-stream: a table per refresh, until interrupted."""
    run_detached(home, "lim", "--image", "app:1", "--memory", "64M")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "isolate", "--store", str(home / "store"),
                                "--root", str(home / "state"), "stats", "lim"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = b""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while seen.count(b"NAME") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
            if ready:
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
    finally:
        process.kill()
        process.communicate(timeout=RUN_TIMEOUT)
    tables = seen.decode().split("NAME")
    assert len(tables) >= 3 and all("lim" in table for table in tables[1:3]), seen
    assert "\x1b" not in seen.decode()   # no redrawing on a pipe


def test_top_lists_the_workload_with_both_pids(home: Path) -> None:
    token = unique_sleep_arg()
    run_detached(home, "top", "--image", "app:1", "--", "busybox", "sleep", token)
    r = isolate(home, "top", "top")
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert columns(header) == ["PID", "HOST PID", "PPID", "USER", "TIME", "COMMAND"]
    workload = next(columns(row) for row in rows if row.endswith(f"sleep {token}"))
    pid, host_pid, ppid, user, cpu_time = workload[:5]
    assert (pid, ppid, user) == ("2", "1", "root") and re.fullmatch(r"\d\d:\d\d:\d\d", cpu_time)
    status = Path(f"/proc/{host_pid}/status").read_text()
    assert re.search(rf"NSpid:\s+{host_pid}\s+2\n", status)
    assert isolate(home, "top", "ghost").returncode == FAILED


# --- pause and unpause -----------------------------------------------------------------------


def test_pause_and_unpause(home: Path) -> None:
    """pause freezes the cgroup (exec is refused, inspect says paused);
    unpause thaws it; a container without a cgroup cannot be paused."""
    run_detached(home, "p", "--image", "app:1", "--memory", "64M")
    run_detached(home, "free", "--", "sleep", "1000")
    r = isolate(home, "pause", "p")
    assert (r.returncode, r.stdout) == (0, "p\n"), r.stderr
    state = json.loads(isolate(home, "inspect", "p").stdout)[0]["State"]
    assert (state["Status"], state["Paused"], state["Running"]) == ("paused", True, True)
    freezer = [d for d in json.loads(isolate(home, "inspect", "p").stdout)[0]["HostConfig"]
               ["Cgroups"] if "freezer" in d]
    for cgroup in freezer:   # cgroup v1; v2 has no freezer hierarchy
        assert Path(cgroup, "freezer.state").read_text().strip() == "FROZEN"
    r = isolate(home, "exec", "p", "--", "true")
    assert r.returncode == FAILED and "frozen" in r.stderr
    r = isolate(home, "unpause", "p")
    assert (r.returncode, r.stdout) == (0, "p\n"), r.stderr
    r = isolate(home, "exec", "p", "--", "cat", "/app/data")
    assert (r.returncode, r.stdout) == (0, "v1\n"), r.stderr
    r = isolate(home, "pause", "free", "p")
    assert r.returncode == FAILED and r.stdout == "p\n"
    assert "cannot pause container 'free'" in r.stderr and "--memory" in r.stderr


# --- cp --------------------------------------------------------------------------------------


def test_cp_copies_files_and_directories_both_ways(home: Path) -> None:
    run_detached(home, "web", "--image", "app:1")
    (home / "src" / "sub").mkdir(parents=True)
    (home / "src" / "sub" / "f").write_text("hello\n")
    r = isolate(home, "cp", "src", "web:/opt")
    assert r.returncode == 0, r.stderr
    r = isolate(home, "exec", "web", "--", "cat", "/opt/sub/f")
    assert r.stdout == "hello\n", r.stderr
    r = isolate(home, "cp", "web:/app", "out")
    assert r.returncode == 0, r.stderr
    assert (home / "out" / "data").read_text() == "v1\n"
    assert isolate(home, "cp", "web:/opt/sub/f", "out/").returncode == 0
    assert (home / "out" / "f").read_text() == "hello\n"


def test_cp_refuses_escapes_and_says_what_is_wrong(home: Path) -> None:
    """../ out of the container is refused; a symlink to /etc/shadow copies
    as a symlink, -L gives the container's file, never the host's; an
    argument without NAME: on either side, or on both, is an error naming
    them; an unknown container is named."""
    run_detached(home, "web", "--image", "app:1")
    r = isolate(home, "exec", "web", "--", "sh", "-c",
                "echo mine > /etc/shadow; ln -s /etc/shadow /app/shadow")
    assert r.returncode == 0, r.stderr
    r = isolate(home, "cp", "web:../../etc/shadow", "stolen")
    assert r.returncode == FAILED and "above the container's root" in r.stderr
    assert not (home / "stolen").exists()
    assert isolate(home, "cp", "web:/app/shadow", "link").returncode == 0
    assert os.readlink(home / "link") == "/etc/shadow"
    assert isolate(home, "cp", "-L", "web:/app/shadow", "followed").returncode == 0
    assert (home / "followed").read_text() == "mine\n"
    r = isolate(home, "cp", "a", "b")
    assert r.returncode == FAILED and "NAME:PATH" in r.stderr and "'a'" in r.stderr
    r = isolate(home, "cp", "web:/a", "web:/b")
    assert r.returncode == FAILED and "two containers" in r.stderr
    r = isolate(home, "cp", "ghost:/etc/hosts", ".")
    assert r.returncode == FAILED and "no container named 'ghost'" in r.stderr


# --- commit ----------------------------------------------------------------------------------


def test_commit_then_run_the_new_image(home: Path) -> None:
    run_detached(home, "web", "--image", "app:1", "--env", "ADDED=yes")
    r = isolate(home, "exec", "web", "--", "sh", "-c", "echo v2 > /app/data; echo new > /new")
    assert r.returncode == 0, r.stderr
    r = isolate(home, "commit", "web", "app:2")
    assert r.returncode == 0 and re.fullmatch(r"sha256:[0-9a-f]{64}\n", r.stdout), r.stderr
    r = isolate(home, "run", "--image", "app:2", "--", "sh", "-c", "cat /app/data /new; echo $ADDED")
    assert (r.returncode, r.stdout) == (0, "v2\nnew\nyes\n"), r.stderr
    r = isolate(home, "images")
    assert any(columns(line)[:2] == ["localhost/app", "2"] for line in r.stdout.splitlines())
    run_detached(home, "plain", "--", "sleep", "1000")
    r = isolate(home, "commit", "plain", "x")
    assert r.returncode == FAILED and "no overlay root" in r.stderr


# --- info, version, help ---------------------------------------------------------------------


def test_info_version_and_help(home: Path) -> None:
    r = isolate(home, "info")
    assert r.returncode == 0, r.stderr
    info = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert info["Kernel"].startswith(f"Linux {os.uname().release}")
    assert info["Cgroup version"] in ("1", "2") and "memory" in info["Cgroup controllers"]
    assert info["Rootless"] == "no" and info["Image store"] == str(home / "store")
    assert info["Container records"] == str(home / "state")
    assert info["Seccomp"].startswith("available (libseccomp ")
    for helper in ("pasta", "slirp4netns"):
        assert info[f"Network helper {helper}"] == (shutil.which(helper) or "not installed")
    import isolate as package
    version = f"isolate {package.__version__} (Python {sys.version.split()[0]}, " \
              f"Linux {os.uname().release})"
    assert isolate(home, "--version").stdout == version + "\n"
    r = isolate(home, "version")
    assert r.stdout.splitlines()[0].split() == ["isolate:", package.__version__]
    assert os.uname().release in r.stdout and sys.version.split()[0] in r.stdout
    for verb, example in (("inspect", "isolate inspect web"), ("stats", "isolate stats --no-stream"),
                          ("top", "isolate top web"), ("pause", "isolate pause web"),
                          ("unpause", "isolate unpause web"), ("cp", "isolate cp web:"),
                          ("commit", "isolate commit web"), ("info", "isolate info"),
                          ("version", "isolate version")):
        r = isolate(home, verb, "--help")
        assert r.returncode == 0 and f"example:\n  {example}" in r.stdout, (verb, r.stdout)
