"""Inspecting named containers and moving files and images out of them, from
Python: isolate.named.inspect, .stats, .processes, .freezer (and .cgroup),
.copy and .commit, on real detached containers with real cgroups.

The containers run on a busybox image built by tests/image_builder.py and
are started in a forked child (as `isolate run -d` starts them from a
process that exits at once), so that PID 1 is never pytest's child.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest

import isolate
from isolate._spawn import syscalls
from isolate.cgroups import interface
from isolate.errors import ConfigError, IsolateError
from isolate.named import (cgroup, commit, containers as named, copy, freezer, inspect, processes,
                           stats)
from isolate.named.state import RUNNING, STOPPED, StateDir, StateError
from isolate.security import idmaps

from conftest import (RUN_TIMEOUT, drop_to, marker, require, run_in_fork, unique_sleep_arg, unwrap,
                      wait_until)
from image_builder import build_docker_archive, busybox_config, busybox_layers, directory, file

#: A second layer over busybox: a directory the tests change, and a file they delete.
APP_LAYER = [directory("app", 0o755), file("app/data", "v1\n"), file("etc/motd", "image\n")]
LIMITS = isolate.CgroupLimit(memory="64M", pids=50)


@pytest.fixture
def image(tmp_path: Path) -> tuple[isolate.ImageStore, isolate.Image]:
    """A store holding app:1, busybox with APP_LAYER, WorkingDir /app."""
    require(shutil.which("busybox") is not None, "busybox is not installed")
    build_docker_archive(tmp_path / "app.tar", busybox_layers() + [APP_LAYER],
                         busybox_config(WorkingDir="/app", Env=["PATH=/bin", "IMAGE=app"]),
                         ["app:1"])
    store = isolate.ImageStore(tmp_path / "store")
    return store, store.import_archive(tmp_path / "app.tar")


@pytest.fixture
def states(tmp_path: Path):
    """A state directory; its containers are removed after the test (a
    paused one too: remove_named thaws it after its SIGKILL)."""
    require(os.geteuid() == 0, "cgroups (pause, stats) need root here")
    states = StateDir(tmp_path / "state")
    yield states
    for record in states.list():
        named.remove_named(states, record.name, force=True)


def start(states: StateDir, name: str, args: list[str], **config: Any) -> int:
    """Start a detached container in a forked child; its PID 1's pid."""
    def starter() -> int:
        return named.start_detached(states, name, args, isolate.Config(**config)).pid
    return unwrap(run_in_fork(starter, timeout=RUN_TIMEOUT))


def workload_pid(pid1: int) -> int:
    """The host pid of the workload: the init's only child."""
    assert wait_until(lambda: bool(Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split()))
    return int(Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split()[0])


def parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 time as inspect writes it (nanoseconds, Z)."""
    assert text.endswith("Z") and "T" in text, text
    return datetime.datetime.strptime(text[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc)


# --- inspect ----------------------------------------------------------------------------------


def test_inspect_shows_a_running_then_an_exited_container(states, image) -> None:
    """Path, Args, State, Config, HostConfig, GraphDriver and the image of a
    running container; once killed with TERM: exited, ExitCode 143, Pid 0,
    FinishedAt after StartedAt."""
    store, app = image
    pid = start(states, "web", ["busybox", "sleep", "1000"], rootfs=app, limits=LIMITS,
                env={"A": "1"}, hostname="webhost", cap_drop=["NET_RAW"])
    doc = inspect.inspect(states, "web")
    json.dumps(doc)   # JSON-ready
    assert (doc["Name"], doc["Path"], doc["Args"]) == ("web", "busybox", ["sleep", "1000"])
    state = doc["State"]
    assert (state["Status"], state["Running"], state["Paused"], state["Pid"], state["ExitCode"]) \
        == ("running", True, False, pid, 0)
    assert state["FinishedAt"] == inspect.ZERO_TIME
    started = parse_time(state["StartedAt"])
    config = doc["Config"]
    assert {"A=1", "IMAGE=app", "PATH=/bin"} <= set(config["Env"])
    assert (config["Hostname"], config["WorkingDir"], config["User"], config["Image"]) \
        == ("webhost", "/app", "0:0", "app:1")
    assert doc["Image"] == app.id and len(doc["Id"]) == 64
    host = doc["HostConfig"]
    assert (host["Memory"], host["PidsLimit"], host["Seccomp"]) == (64 << 20, 50, "default")
    assert "NET_RAW" not in host["Capabilities"] and "CHOWN" in host["Capabilities"]
    assert host["Cgroups"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["IDMappings"]["UidMap"]
    lower = doc["GraphDriver"]["Data"]["LowerDir"].split(":")
    assert doc["GraphDriver"]["Name"] == "overlay" and lower == list(reversed(app.layers))

    named.kill_named(states, "web", signal.SIGTERM)
    assert wait_until(lambda: states.load("web").status() == STOPPED, RUN_TIMEOUT)
    assert wait_until(lambda: inspect.inspect(states, "web")["State"]["ExitCode"] is not None)
    state = inspect.inspect(states, "web")["State"]
    assert (state["Status"], state["Running"], state["Pid"], state["ExitCode"]) \
        == ("exited", False, 0, 128 + signal.SIGTERM)
    assert parse_time(state["FinishedAt"]) >= started


def test_inspect_of_an_unknown_name_names_it(states) -> None:
    with pytest.raises(StateError, match="no container named 'ghost'"):
        inspect.inspect(states, "ghost")


# --- stats -----------------------------------------------------------------------------------


def test_stats_read_the_cgroup_and_say_how_to_get_one(states, image) -> None:
    """Memory in use > 0 against the 64M limit, at least one process, CPU
    % from two samples; a container without limits has no figures."""
    _, app = image
    start(states, "lim", ["busybox", "sleep", "1000"], rootfs=app, limits=LIMITS)
    start(states, "free", ["sleep", "1000"])
    first = stats.sample(states, "lim")
    second = stats.sample(states, "lim")
    assert first.running and first.stats is not None
    assert 0 < first.memory_usage < first.memory_limit == 64 << 20
    assert 0 < first.memory_percent < 100
    assert first.stats.pids_current >= 1
    assert stats.cpu_percent(first, second) >= 0
    bare = stats.sample(states, "free")
    assert bare.stats is None and bare.memory_usage is None and stats.cpu_percent(bare, bare) is None
    assert bare.memory_limit == stats.host_memory() > 0
    assert "--memory" in freezer.NO_CGROUP


# --- top -------------------------------------------------------------------------------------


def test_processes_lists_the_workload_with_both_pids(states, image) -> None:
    """Init and workload with their pids in the container (1, 2) and on the
    host, the container's user names and the command; an exec'd process too."""
    _, app = image
    token = unique_sleep_arg()
    pid1 = start(states, "top", ["busybox", "sleep", token], rootfs=app)
    workload = workload_pid(pid1)
    listed = {process.pid: process for process in processes.processes(states, "top")}
    assert listed[1].host_pid == pid1 and listed[1].ppid == 0
    assert (listed[2].host_pid, listed[2].ppid) == (workload, 1)
    assert listed[2].command == f"busybox sleep {token}" and listed[2].user == "root"
    nspid = Path(f"/proc/{workload}/status").read_text().split("NSpid:")[1].split("\n")[0].split()
    assert nspid == [str(workload), "2"]
    process = named.exec_named(states, "top", ["busybox", "sleep", token + "1"], wait=False)
    try:
        assert wait_until(lambda: any(p.command.endswith(token + "1") and p.host_pid == process.pid
                                      for p in processes.processes(states, "top")))
    finally:
        process.kill()
        process.wait()
        process.close()


# --- pause -----------------------------------------------------------------------------------


def cpu_used(states: StateDir, name: str) -> int:
    return stats.sample(states, name).stats.cpu_usage_ns


def test_pause_freezes_the_container_and_unpause_thaws_it(states, image) -> None:
    """A busy workload uses no CPU while paused (its cgroup reads frozen,
    inspect says paused, exec is refused); once unpaused it runs again."""
    _, app = image
    start(states, "busy", ["sh", "-c", "while :; do :; done"], rootfs=app,
          limits=isolate.CgroupLimit(cpu=0.2))
    directories = cgroup.cgroup_directories(states.load("busy"))
    freezer.pause_named(states, "busy")
    assert interface.frozen(directories) and cgroup.is_paused(states.load("busy"))
    assert inspect.inspect(states, "busy")["State"]["Status"] == "paused"
    frozen_at = cpu_used(states, "busy")
    with pytest.raises(IsolateError, match="frozen"):
        named.exec_named(states, "busy", ["true"])
    assert not wait_until(lambda: cpu_used(states, "busy") != frozen_at, 0.5)
    with pytest.raises(StateError, match="already paused"):
        freezer.pause_named(states, "busy")
    freezer.unpause_named(states, "busy")
    assert not interface.frozen(directories)
    assert wait_until(lambda: cpu_used(states, "busy") > frozen_at)
    with pytest.raises(StateError, match="not paused"):
        freezer.unpause_named(states, "busy")


def test_signals_reach_a_paused_container(states) -> None:
    """kill_named and stop_named thaw a paused container after their
    signal, as docker does: SIGTERM ends it (stop did not need SIGKILL),
    and SIGKILL too, which on cgroup v1 would wait for a thaw otherwise."""
    for name in ("term", "kill"):
        start(states, name, ["sleep", unique_sleep_arg()], limits=LIMITS)
        freezer.pause_named(states, name)
    assert named.stop_named(states, "term", timeout=RUN_TIMEOUT).exit_code == -signal.SIGTERM
    named.kill_named(states, "kill")
    record = states.load("kill")
    assert (record.status(), record.exit_code) == (STOPPED, -signal.SIGKILL)
    assert not any(cgroup.is_paused(states.load(name)) for name in ("term", "kill"))


def test_pause_without_a_cgroup_says_how_to_get_one(states) -> None:
    start(states, "free", ["sleep", "1000"])
    with pytest.raises(StateError, match="cannot pause container 'free': .*--memory"):
        freezer.pause_named(states, "free")


# --- cp --------------------------------------------------------------------------------------


@pytest.fixture
def app_container(states, image) -> StateDir:
    """'app', running on the image, which holds a symlink to /etc/shadow,
    one to /, and its own /etc/shadow."""
    _, app = image
    start(states, "app", ["busybox", "sleep", "1000"], rootfs=app)
    r = named.exec_named(states, "app", ["sh", "-c", "echo container-shadow > /etc/shadow; "
                                         "ln -s /etc/shadow /app/shadow; ln -s / /app/root; "
                                         "mkdir /app/out"], capture_output=True)
    assert r.returncode == 0, r.stderr
    return states


def test_copy_files_and_directories_both_ways(app_container, tmp_path: Path) -> None:
    """A host directory into the container (a new name, then into an
    existing directory), a file out, a directory out, DIR/. copies contents."""
    states = app_container
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_text("hello\n")
    (source / "sub" / "link").symlink_to("f")
    os.chmod(source / "sub" / "f", 0o640)
    copy.copy_into(states, "app", str(source), "/opt")
    copy.copy_into(states, "app", str(source / "sub" / "f"), "/app/")
    r = named.exec_named(states, "app", ["sh", "-c", "cat /opt/sub/f /opt/sub/link /app/f; "
                                         "ls -ln /opt/sub/f"], capture_output=True, text=True)
    lines = r.stdout.splitlines()
    assert lines[:3] == ["hello"] * 3, r.stderr
    assert lines[3].split()[:4] == ["-rw-r-----", "1", "0", "0"]   # the container's root owns it
    out = tmp_path / "out"
    out.mkdir()
    copy.copy_from(states, "app", "/app/data", str(out))
    copy.copy_from(states, "app", "/opt", str(out / "opt"))
    copy.copy_from(states, "app", "/opt/sub/.", str(out / "contents"))
    assert (out / "data").read_text() == "v1\n"
    assert (out / "opt" / "sub" / "f").read_text() == "hello\n"
    assert os.readlink(out / "opt" / "sub" / "link") == "f"
    assert sorted(os.listdir(out / "contents")) == ["f", "link"]
    assert stat.S_IMODE((out / "opt" / "sub" / "f").stat().st_mode) == 0o640


def test_copy_into_a_host_root_container_is_owned_by_its_root(states, tmp_path: Path) -> None:
    """The host's root copying into a default container's /tmp (a tmpfs of
    its user namespace, where the host's root has no id): the files belong
    to the container's root, as it sees them and as the host does."""
    start(states, "plain", ["sleep", "1000"])
    (tmp_path / "f").write_text("x")
    copy.copy_into(states, "plain", str(tmp_path / "f"), "/tmp/f")
    r = named.exec_named(states, "plain", ["stat", "-c", "%u %g", "/tmp/f"], capture_output=True,
                         text=True)
    assert r.stdout.split() == ["0", "0"], r.stderr
    host = os.stat(f"/proc/{states.load('plain').pid}/root/tmp/f")
    assert host.st_uid != 0 and host.st_uid == idmaps.container_ids("uid")[0][1]


def test_copy_never_reaches_the_hosts_files(app_container, tmp_path: Path) -> None:
    """NAME:../../etc/shadow is refused; a symlink to /etc/shadow is copied
    as a symlink, or followed (-L) to the container's own file; a path
    through a symlink to / stays in the container; a copy into a symlinked
    directory lands in the container, never on the host."""
    states = app_container
    host_shadow = Path("/etc/shadow").read_bytes()
    with pytest.raises(ConfigError, match="above the container's root"):
        copy.copy_from(states, "app", "../../etc/shadow", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    copy.copy_from(states, "app", "/app/shadow", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "/etc/shadow"
    copy.copy_from(states, "app", "/app/shadow", str(tmp_path / "followed"), follow_link=True)
    copy.copy_from(states, "app", "/app/root/etc/shadow", str(tmp_path / "through"))
    copy.copy_from(states, "app", "app/root/etc/../etc/shadow", str(tmp_path / "dots"))
    for name in ("followed", "through", "dots"):
        data = (tmp_path / name).read_bytes()
        # Compared to a bool: a failure must not print the host's shadow.
        theirs = data == b"container-shadow\n" and data != host_shadow
        assert theirs, f"{name}: not the container's /etc/shadow"
    # Into the container through its symlink to /: its own /var/tmp, not the host's.
    target = Path("/var/tmp") / marker()
    named.exec_named(states, "app", ["sh", "-c", f"ln -s {target} /app/out/host"])
    (tmp_path / "payload").write_text("p")
    with pytest.raises(copy.CopyError, match="no such directory"):
        copy.copy_into(states, "app", str(tmp_path / "payload"), "/app/out/host/")
    copy.copy_into(states, "app", str(tmp_path / "payload"), "/app/root/payload")
    assert not target.exists() and not Path("/payload").exists()
    r = named.exec_named(states, "app", ["cat", "/payload"], capture_output=True)
    assert r.stdout == b"p"


def test_copy_refuses_device_nodes_and_missing_paths(app_container, tmp_path: Path) -> None:
    states = app_container
    with pytest.raises(copy.CopyError, match="device node"):
        copy.copy_from(states, "app", "/dev/null", str(tmp_path / "null"))
    with pytest.raises(copy.CopyError, match="no such file"):
        copy.copy_from(states, "app", "/nothing", str(tmp_path / "n"))
    with pytest.raises(StateError, match="no container named 'ghost'"):
        copy.copy_from(states, "ghost", "/etc/hosts", str(tmp_path / "n"))


def test_openat2_in_root_keeps_dots_and_symlinks_inside(tmp_path: Path) -> None:
    """The wrapper: RESOLVE_IN_ROOT resolves '..' and an absolute symlink
    from the directory given, as if it were /."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("inside")
    (tmp_path / "link").symlink_to("/etc/passwd")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        for path in ("../../etc/passwd", "link", "/etc/../../link"):
            fd = syscalls.openat2(root, path, os.O_RDONLY, 0, syscalls.RESOLVE_IN_ROOT)
            with open(fd) as f:
                assert f.read() == "inside", path
        with pytest.raises(OSError) as caught:
            syscalls.openat2(root, "link", os.O_RDONLY, 0, syscalls.RESOLVE_NO_SYMLINKS)
        assert caught.value.errno == errno.ELOOP and caught.value.filename == "link"
    finally:
        os.close(root)


# --- commit ----------------------------------------------------------------------------------


def test_commit_makes_an_image_that_runs_with_the_changes(states, image) -> None:
    """A file changed, one deleted, a directory made: the committed image
    has them, and the container's command, environment and working
    directory as its defaults."""
    store, app = image
    start(states, "c", ["busybox", "sleep", "1000"], rootfs=app, env={"ADDED": "yes"},
          limits=LIMITS)
    r = named.exec_named(states, "c", ["sh", "-c", "echo v2 > /app/data; rm /etc/motd; "
                                       "mkdir -p /new/dir; echo n > /new/dir/file"])
    assert r.returncode == 0
    made = commit.commit(states, "c", store, "app:2")
    assert made.names == ("localhost/app:2",) and store.get("app:2").id == made.id
    assert made.diff_ids[:-1] == app.diff_ids and len(made.layers) == 3
    assert (made.cmd, made.cwd) == (["busybox", "sleep", "1000"], "/app")
    assert made.env["ADDED"] == "yes" and made.env["IMAGE"] == "app"
    assert not cgroup.is_paused(states.load("c"))   # paused meanwhile, thawed after
    r = isolate.run(["sh", "-c", "cat /app/data /new/dir/file; ls /etc; echo $ADDED"],
                    rootfs=made, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["v2", "n", "group", "passwd", "yes"]


def test_commit_refuses_what_has_no_changes_to_give(states, image) -> None:
    """A container without an overlay root; a stopped one whose tmpfs upper
    went with it; a name with a digest."""
    store, app = image
    start(states, "plain", ["sleep", "1000"])
    with pytest.raises(StateError, match="no overlay root"):
        commit.commit(states, "plain", store, "x")
    start(states, "done", ["busybox", "true"], rootfs=app)
    assert wait_until(lambda: states.load("done").status() == STOPPED, RUN_TIMEOUT)
    with pytest.raises(StateError, match="has stopped"):
        commit.commit(states, "done", store, "x")
    with pytest.raises(isolate.ImageError, match="digest"):
        commit.local_name("x@sha256:" + "0" * 64)
    assert commit.local_name("tool") == "localhost/tool:latest"
    assert commit.local_name("quay.io/org/tool:2") == "quay.io/org/tool:2"
    assert states.load("plain").status() == RUNNING


# --- rootless --------------------------------------------------------------------------------


def test_rootless_top_copy_and_commit(host_dir: Path, rootless: tuple[int, int]) -> None:
    """A rootless user's own container: top names its processes, cp goes
    both ways (what lands inside belongs to the container's root, the
    caller), commit makes an image that runs with the change; without a
    cgroup, stats has no figures."""
    require(shutil.which("busybox") is not None, "busybox is not installed")
    uid, gid = rootless
    build_docker_archive(host_dir / "app.tar", busybox_layers() + [APP_LAYER],
                         busybox_config(), ["app:1"])
    os.chmod(host_dir / "app.tar", 0o644)
    home = host_dir / "home"
    home.mkdir()
    os.chown(home, uid, gid)
    isolate.run(["true"])   # the native module and PID 1's memfd, loaded while root

    def body() -> dict[str, Any]:
        tempfile.tempdir = str(home)   # the session's temporary directory is root's alone
        store = isolate.ImageStore(home / "store")
        app = store.import_archive(host_dir / "app.tar")
        states = StateDir(home / "state")
        named.start_detached(states, "r", ["busybox", "sleep", "1000"], isolate.Config(rootfs=app))
        try:
            (home / "in").write_text("from the host\n")
            copy.copy_into(states, "r", str(home / "in"), "/app/in")
            copy.copy_from(states, "r", "/app/data", str(home / "out"))
            listed = [(p.pid, p.user, p.command) for p in processes.processes(states, "r")]
            shown = named.exec_named(states, "r", ["ls", "-ln", "/app/in"], capture_output=True,
                                     text=True).stdout.split()[2:4]
            made = commit.commit(states, "r", store, "app:2")
            r = isolate.run(["cat", "/app/in"], rootfs=made, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
            return {"top": listed, "owner": shown, "out": (home / "out").read_text(),
                    "committed": r.stdout, "stats": stats.sample(states, "r").stats}
        finally:
            named.remove_named(states, "r", force=True)

    seen = unwrap(run_in_fork(body, setup=drop_to(uid, gid), timeout=2 * RUN_TIMEOUT))
    assert (2, "root", "busybox sleep 1000") in seen["top"]
    assert seen["owner"] == ["0", "0"]
    assert (seen["out"], seen["committed"]) == ("v1\n", "from the host\n")
    assert seen["stats"] is None
