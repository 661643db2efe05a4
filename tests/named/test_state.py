"""The persistent state of named containers (isolate.named.state).

Real files in fresh directories, real processes: a record is checked against
the kernel's /proc, so stale state is made by really killing processes, and
pid reuse by recording a live pid with a start time it does not have.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Callable, Iterator

import attrs
import psutil
import pytest

import isolate
from isolate.security import seccomp
from isolate.named.state import (RUNNING, STOPPED, ContainerExists, ContainerNotFound, ContainerState,
                           StateDir, StateError, check_name, default_root, exec_fields,
                           pid_start_time)

from conftest import require, run_in_fork, unique_sleep_arg, unwrap, wait_until


# --- helpers -----------------------------------------------------------------

@pytest.fixture
def states(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `sleep` processes (or a given argv); every one is killed and reaped at the end."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv or ["sleep", unique_sleep_arg()])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def record(name: str, proc: subprocess.Popen, **fields) -> ContainerState:
    return ContainerState.for_process(name, proc.pid, proc.args, **fields)


def reaped_pid(spawn) -> int:
    """A pid whose process has exited and been reaped."""
    proc = spawn(["true"])
    proc.wait()
    return proc.pid


def dir_entries(states: StateDir) -> set[str]:
    return set(os.listdir(states.root))


# --- records -----------------------------------------------------------------

def test_record_round_trips_through_the_file(states, spawn):
    proc = spawn()
    state = ContainerState.for_process(
        "web", proc.pid, ["sleep", b"caf\xc3\xa9", b"raw\xff"],
        config={"env": {"GREETING": "héllo"}, "cwd": "/srv", "user": 1000, "namespaces": ["pid", "net"]})
    states.save(state)

    loaded = states.load("web")
    assert loaded == state
    assert loaded.argv == ("sleep", "café", os.fsdecode(b"raw\xff"))   # undecodable bytes kept
    assert os.fsencode(loaded.argv[2]) == b"raw\xff"
    assert hash(loaded) == hash(state)   # frozen and hashable despite the dict field
    on_disk = json.loads(Path(states.path("web")).read_text())
    assert on_disk["version"] == 1
    assert on_disk["name"] == "web" and on_disk["pid"] == proc.pid
    assert on_disk["config"]["env"] == {"GREETING": "héllo"}
    assert Path(states.path("web")).name == "web.json"


def test_record_is_immutable_and_copies_its_config(spawn):
    proc = spawn()
    config = {"env": {"A": "1"}}
    state = record("web", proc, config=config)
    config["env"]["A"] = "changed"
    assert state.config == {"env": {"A": "1"}}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        state.pid = 1   # type: ignore[misc]


def test_record_from_an_isolate_config_keeps_what_exec_needs(spawn):
    proc = spawn()
    config = isolate.Config(env={"KEY": "value"}, cwd="/tmp", user=5, group=6, hostname="box",
                            namespaces=["user", "mount", "pid", "uts"])
    state = record("web", proc, config=config)
    assert state.config["env"] == dict(config.env)
    assert state.config["cwd"] == "/tmp"
    assert (state.config["user"], state.config["group"]) == (5, 6)
    assert state.config["hostname"] == "box"
    assert state.config["rootfs"] is None
    assert state.config["namespaces"] == ["mount", "pid", "user", "uts"]
    json.dumps(state.config)   # JSON-safe as it is


PROFILES = [
    "default", None, isolate.Seccomp.deny(["socket"]),
    isolate.Seccomp(seccomp.KILL, [
        seccomp.Rule("socket", seccomp.Errno(errno.EACCES), [seccomp.Arg(0, "&=", 1, 0xFFFFFFFF)]),
        seccomp.Rule("personality", "allow", [seccomp.Arg(0, "==", 2**64 - 1)]),
        seccomp.Rule("read", seccomp.ALLOW)], arches=["x86_64", "i386"]),
]


@pytest.mark.parametrize("profile", PROFILES, ids=["default", "none", "deny", "custom"])
def test_record_keeps_the_policy_exec_must_apply(states, spawn, profile):
    """seccomp (default, none or a profile), no_new_privs, rlimits (unlimited
    included) and capabilities go through the file and back to an equal Config."""
    config = isolate.Config(seccomp=profile, no_new_privs=False, cap_drop=["ALL"], cap_add=["KILL"],
                            rlimits={"nofile": (64, 128), "core": None, "as": "1G"})
    states.save(record("web", spawn(), config=config))
    again = isolate.Config(**exec_fields(states.load("web").config))
    for field in ("seccomp", "no_new_privs", "rlimits", "capabilities", "env", "cwd", "user", "group"):
        assert getattr(again, field) == getattr(config, field), field


@pytest.mark.parametrize("damage, why", [
    (lambda c: c.pop("seccomp"), "lacks seccomp"),
    (lambda c: c.pop("rlimits"), "lacks rlimits"),
    (lambda c: c.update(seccomp={"default_action": {"colour": "red"}, "rules": []}), "unknown part"),
    (lambda c: c.update(seccomp={"default_action": {"name": "explode"}, "rules": []}), "explode"),
])
def test_a_damaged_policy_is_refused_not_dropped(spawn, damage, why):
    saved = record("web", spawn(), config=isolate.Config(seccomp=isolate.Seccomp.deny(["bpf"]))).config
    damage(saved)
    with pytest.raises(isolate.IsolateError, match=why):
        isolate.Config(**exec_fields(saved))


@pytest.mark.parametrize("config, why", [
    ({"ids": {1, 2}}, "a set"),
    ({"ratio": math.nan}, "NaN"),
    ({"obj": object()}, "an object"),
    ("env=1", "not a mapping"),
])
def test_config_must_be_json_safe(spawn, config, why):
    proc = spawn()
    with pytest.raises(isolate.ConfigError) as info:
        record("web", proc, config=config)
    assert info.value.field == "config", why


@pytest.mark.parametrize("field, value", [("pid", 0), ("pid", -5), ("pid", True),
                                          ("start_time", -1), ("start_time", "12")])
def test_invalid_numbers_name_their_field(field, value):
    fields = {"name": "web", "pid": 1, "start_time": 0, "argv": ["x"], field: value}
    with pytest.raises(isolate.ConfigError) as info:
        ContainerState(**fields)
    assert info.value.field == field


def test_start_time_is_read_past_a_command_name_with_parentheses(spawn, tmp_path):
    # comm may contain ") (" and spaces; the parser must split after the last ')'.
    odd = tmp_path / "a) b (c"
    shutil.copy(shutil.which("sleep"), odd)
    proc = spawn([str(odd), unique_sleep_arg()])
    assert psutil.Process(proc.pid).name() == "a) b (c"
    ticks = os.sysconf("SC_CLK_TCK")
    p = psutil.Process(proc.pid)
    expected = round((p.create_time() - psutil.boot_time()) * ticks)
    assert pid_start_time(proc.pid) == expected
    assert record("odd", proc).status() == RUNNING


def test_start_time_of_a_missing_process_raises(spawn):
    pid = reaped_pid(spawn)
    with pytest.raises(ProcessLookupError):
        pid_start_time(pid)
    with pytest.raises(ProcessLookupError):
        ContainerState.for_process("gone", pid, ["true"])


# --- status: stale records are detected, not trusted ------------------------

def test_running_process_then_killed_and_reaped_is_stopped(states, spawn):
    proc = spawn()
    states.save(record("web", proc))
    assert states.load("web").status() == RUNNING
    proc.kill()
    proc.wait()
    assert states.load("web").status() == STOPPED
    assert states.load("web").status() == "stopped"


def test_zombie_counts_as_stopped(states, spawn):
    proc = spawn()
    states.save(record("web", proc))
    os.kill(proc.pid, signal.SIGKILL)   # not reaped: the pid stays, as a zombie
    assert wait_until(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE)
    assert os.path.exists(f"/proc/{proc.pid}")
    assert states.load("web").status() == STOPPED
    proc.wait()


def test_pid_reuse_is_detected_by_start_time(states, spawn):
    proc = spawn()
    real = pid_start_time(proc.pid)
    # The pid is alive, but the record's process started at another time:
    # this is what a recycled pid looks like.
    for wrong in (real + 1, real - 1, 0):
        impostor = ContainerState(name="web", pid=proc.pid, start_time=wrong, argv=["sleep"])
        assert impostor.status() == STOPPED
    assert ContainerState(name="web", pid=proc.pid, start_time=real, argv=["sleep"]).status() == RUNNING


def test_record_from_another_boot_is_stopped(spawn):
    proc = spawn()
    state = record("web", proc)
    assert state.status() == RUNNING
    assert attrs.evolve(state, boot_id="00000000-0000-0000-0000-000000000000").status() == STOPPED


def test_dead_pid_is_stopped(spawn):
    pid = reaped_pid(spawn)
    assert ContainerState(name="web", pid=pid, start_time=1, argv=["true"]).status() == STOPPED


def test_recorded_exit_means_stopped_and_is_kept(states, spawn):
    proc = spawn()
    states.save(record("web", proc))
    new = states.update("web", lambda s: s.stopped(exit_code=3))
    assert new.exit_code == 3 and new.finished is not None
    loaded = states.load("web")
    assert loaded == new
    assert loaded.status() == STOPPED   # even though the pid still lives
    assert proc.poll() is None


def test_sigkilled_container_is_reported_stopped(states):
    with isolate.Container(["sleep", unique_sleep_arg()]) as c:
        states.save(ContainerState.for_process("web", c.pid, c.args, c.config))
        saved = states.load("web")
        assert saved.pid == c.pid
        assert saved.config["namespaces"]   # what exec will join
        assert saved.status() == RUNNING
        c.process.kill()
        c.wait()
        assert states.load("web").status() == STOPPED


def test_record_survives_the_process_that_wrote_it(states):
    # The writer starts a sleep in its own session, records it, and exits:
    # the record and the process outlive it, as with `isolate run -d`.
    writer = textwrap.dedent("""
        import subprocess, sys
        from isolate.named.state import ContainerState, StateDir
        # Its own stdio, or our capture would wait for the sleep to close it.
        proc = subprocess.Popen(["sleep", sys.argv[2]], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        StateDir(sys.argv[1]).save(ContainerState.for_process("web", proc.pid, proc.args))
        print(proc.pid)
    """)
    out = subprocess.run([sys.executable, "-c", writer, states.root, unique_sleep_arg()],
                         check=True, capture_output=True, text=True,
                         cwd=Path(isolate.__file__).parent.parent).stdout
    pid = int(out)
    try:
        loaded = StateDir(states.root).load("web")
        assert loaded.pid == pid
        assert loaded.status() == RUNNING
    finally:
        os.kill(pid, signal.SIGKILL)
    # Its parent is gone, so init reaps it; a zombie already counts as stopped.
    assert wait_until(lambda: states.load("web").status() == STOPPED)


# --- names -------------------------------------------------------------------

BAD_NAMES = ["", ".hidden", "-dash", "_under", "a/b", "..", "../etc/passwd", "a b", "tab\t",
             "new\nline", "x" * 129, "caf\u00e9", "nul\0", "web.json/", 5, None, b"web"]
GOOD_NAMES = ["a", "7", "web", "web-1.prod_2", "A" * 128, "x.json"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused_everywhere(states, name):
    with pytest.raises(isolate.ConfigError) as info:
        check_name(name)
    assert info.value.field == "name"
    for call in (lambda: ContainerState(name=name, pid=1, start_time=0, argv=["x"]),
                 lambda: states.load(name), lambda: states.remove(name), lambda: states.path(name)):
        with pytest.raises(isolate.ConfigError) as info:
            call()
        assert info.value.field == "name"
    assert dir_entries(states) <= {".lock"}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_stored_under_their_name(states, spawn, name):
    assert check_name(name) == name
    states.save(record(name, spawn()))
    assert os.path.exists(os.path.join(states.root, name + ".json"))
    assert states.load(name).name == name
    assert [s.name for s in states.list()] == [name]


# --- duplicates, listing, removal ---------------------------------------------

def test_name_of_a_running_container_cannot_be_taken(states, spawn):
    first, second = spawn(), spawn()
    states.save(record("web", first))
    with pytest.raises(ContainerExists) as info:
        states.save(record("web", second))
    assert isinstance(info.value, StateError) and isinstance(info.value, isolate.IsolateError)
    assert "web" in str(info.value) and str(first.pid) in str(info.value)
    assert states.load("web").pid == first.pid   # untouched


def test_saving_the_same_process_again_updates_its_record(states, spawn):
    proc = spawn()
    states.save(record("web", proc))
    changed = attrs.evolve(states.load("web"), config={"note": "second"})
    states.save(changed)
    assert states.load("web").config == {"note": "second"}


def test_name_of_a_stopped_container_can_be_reused(states, spawn):
    old, new = spawn(), spawn()
    states.save(record("web", old))
    old.kill()
    old.wait()
    states.save(record("web", new))
    assert states.load("web").pid == new.pid
    assert states.load("web").status() == RUNNING


def test_list_is_sorted_and_ignores_foreign_entries(states, spawn):
    assert states.list() == []
    for name in ("zeta", "alpha", "Mid", "beta.2"):
        states.save(record(name, spawn()))
    root = Path(states.root)
    (root / "netns").mkdir()                    # Namespace pins live beside the records
    (root / "notes.txt").write_text("hello")
    (root / ".web.abc123.tmp").write_text("{")   # what a crashed writer leaves
    (root / "bad name.json").write_text("{")

    listed = states.list()
    assert [s.name for s in listed] == sorted(["zeta", "alpha", "Mid", "beta.2"])
    assert all(isinstance(s, ContainerState) for s in listed)
    assert {s.name for s in listed} == {"zeta", "alpha", "Mid", "beta.2"}
    assert "alpha" in states and "nope" not in states


def test_remove_deletes_a_stopped_record(states, spawn):
    proc = spawn()
    states.save(record("web", proc))
    proc.kill()
    proc.wait()
    states.remove("web")
    assert "web" not in states
    assert not os.path.exists(states.path("web"))
    with pytest.raises(ContainerNotFound) as info:
        states.load("web")
    assert isinstance(info.value, LookupError) and "web" in str(info.value)
    with pytest.raises(ContainerNotFound):
        states.remove("web")
    assert states.list() == []


def test_remove_refuses_a_running_container_unless_forced(states, spawn):
    proc = spawn()
    states.save(record("web", proc))
    with pytest.raises(StateError, match="running"):
        states.remove("web")
    assert states.load("web").pid == proc.pid
    states.remove("web", force=True)
    assert "web" not in states
    assert proc.poll() is None   # removing a record never touches the process


@pytest.mark.parametrize("content, why", [
    (b"{\"name\": \"web\", ", "truncated JSON"),
    (b"[]", "not an object"),
    (json.dumps({"version": 99, "name": "web", "pid": 1, "start_time": 0, "argv": []}).encode(),
     "unknown version"),
    (json.dumps({"version": 1, "name": "web", "pid": 0, "start_time": 0, "argv": []}).encode(),
     "invalid pid"),
    (json.dumps({"version": 1, "name": "db", "pid": 1, "start_time": 0, "argv": []}).encode(),
     "another name"),
    (json.dumps({"version": 1, "name": "web"}).encode(), "missing fields"),
])
def test_an_unreadable_record_is_an_error_naming_the_file(states, content, why):
    Path(states.path("web")).write_bytes(content)
    with pytest.raises(StateError) as info:
        states.load("web")
    assert states.path("web") in str(info.value), why
    with pytest.raises(StateError):
        states.list()
    with pytest.raises(StateError):
        states.remove("web")
    states.remove("web", force=True)
    assert "web" not in states


def test_update_must_keep_the_name(states, spawn):
    states.save(record("web", spawn()))
    with pytest.raises(StateError):
        states.update("web", lambda s: attrs.evolve(s, name="db"))
    with pytest.raises(ContainerNotFound):
        states.update("nope", lambda s: s)
    assert [s.name for s in states.list()] == ["web"]


# --- atomic writes --------------------------------------------------------------

def test_readers_never_see_a_partial_record(states, spawn):
    proc = spawn()
    base = record("web", proc, config={"n": 0, "payload": ""})
    states.save(base)
    writes = 300

    def payload(n: int) -> str:
        return "x" * (n * 9973 % 50000)   # sizes go up and down: a torn write shows

    # The writer is another process, so it runs truly in parallel with the
    # reader (threads would take turns on the GIL and hide a torn write).
    writer = os.fork()
    if writer == 0:   # never return into pytest
        code = 1
        try:
            for n in range(1, writes + 1):
                states.save(attrs.evolve(base, config={"n": n, "payload": payload(n)}))
            code = 0
        finally:
            os._exit(code)
    seen: list[int] = []
    problems: list[str] = []
    path = Path(states.path("web"))
    status = None
    while status is None:
        done, wait_status = os.waitpid(writer, os.WNOHANG)
        status = wait_status if done else None
        raw = path.read_bytes()
        try:
            config = json.loads(raw)["config"]
        except ValueError as exc:
            problems.append(f"partial file ({len(raw)} bytes): {exc}")
            continue
        if config["payload"] != payload(config["n"]):
            problems.append(f"version {config['n']} has a foreign payload")
        seen.append(config["n"])
    assert status == 0, "the writer failed"
    assert problems == []
    assert seen, "the reader never read"
    assert seen == sorted(seen)   # versions only move forward
    assert states.load("web").config["n"] == writes
    assert dir_entries(states) == {"web.json", ".lock"}   # no temp file left behind


def test_a_failed_write_leaves_the_old_record_whole(states, spawn):
    proc = spawn()
    old = record("web", proc, config={"size": "small"})
    states.save(old)
    big = attrs.evolve(old, config={"size": "x" * 200_000})

    def write_over_the_limit() -> int:
        # A real write failure: the kernel refuses to grow a file past
        # RLIMIT_FSIZE (EFBIG once SIGXFSZ no longer kills us).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            states.save(big)
        except OSError as exc:
            return exc.errno
        return 0

    assert unwrap(run_in_fork(write_over_the_limit)) == errno.EFBIG
    assert states.load("web") == old
    assert dir_entries(states) == {"web.json", ".lock"}
    states.save(big)   # without the limit, the same write works
    assert states.load("web").config == big.config


# --- the lock ---------------------------------------------------------------------

def increment(states: StateDir, times: int) -> None:
    for _ in range(times):
        states.update("web", lambda s: attrs.evolve(s, config={"count": s.config["count"] + 1}))


def test_threads_do_not_lose_updates(states, spawn):
    states.save(record("web", spawn(), config={"count": 0}))
    threads = [threading.Thread(target=increment, args=(StateDir(states.root), 100)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert states.load("web").config["count"] == 400


def test_processes_do_not_lose_updates(states, spawn):
    states.save(record("web", spawn(), config={"count": 0}))
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:   # never return into pytest
            code = 1
            try:
                increment(StateDir(states.root), 100)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    increment(states, 100)
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    assert statuses == [0, 0, 0]
    assert states.load("web").config["count"] == 400


def lock_is_free(states: StateDir) -> bool:
    """Whether another open file description could take the directory's flock now."""
    fd = os.open(os.path.join(states.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_lock_is_exclusive_and_reentrant(states, spawn):
    assert lock_is_free(states)
    with states.lock():
        assert not lock_is_free(states)
        states.save(record("web", spawn()))   # takes the lock again: must not deadlock
        assert not lock_is_free(states)       # ... nor release the outer hold
        with StateDir(states.root).lock():    # another handle on the same directory
            assert not lock_is_free(states)
        assert not lock_is_free(states)
    assert lock_is_free(states)
    assert states.load("web").status() == RUNNING


def test_lock_is_released_when_the_body_raises(states):
    with pytest.raises(RuntimeError):
        with states.lock():
            assert not lock_is_free(states)
            raise RuntimeError("boom")
    assert lock_is_free(states)


# --- the directory and permissions ------------------------------------------------

def test_directory_and_files_are_private(tmp_path, spawn):
    old = os.umask(0)   # the most permissive umask must not loosen anything
    try:
        states = StateDir(tmp_path / "deep" / "er" / "state")
        states.save(record("web", spawn()))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(states.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(states.path("web")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(states.root, ".lock")).st_mode) == 0o600
    assert os.stat(states.root).st_uid == os.geteuid()


def test_existing_private_directory_is_reused(tmp_path, spawn):
    first = StateDir(tmp_path / "state")
    first.save(record("web", spawn()))
    again = StateDir(str(tmp_path / "state"))
    assert again.root == first.root
    assert [s.name for s in again.list()] == ["web"]


def test_unsafe_existing_directories_are_refused(tmp_path):
    target = tmp_path / "real"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "file").write_text("")
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    for name, why in (("link", "symlink"), ("file", "not a directory"), ("open", "writable")):
        with pytest.raises(StateError) as info:
            StateDir(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
        if name == "open":
            assert "777" in str(info.value), why


def test_directory_of_another_user_is_refused(tmp_path):
    require(os.geteuid() == 0, "needs root to chown a directory to another user")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    with pytest.raises(StateError, match="belongs to uid 65534"):
        StateDir(other)


@pytest.fixture
def user_runtime_dir() -> Iterator[Path]:
    """An empty directory owned by nobody (65534), on a path nobody can reach."""
    # Not tmp_path: its parents are private to root.
    parent = Path(tempfile.mkdtemp(prefix="isolate-test-", dir="/var/tmp"))
    try:
        os.chmod(parent, 0o755)
        runtime = parent / "xdg"
        runtime.mkdir(mode=0o700)
        os.chown(runtime, 65534, 65534)
        yield runtime
    finally:
        shutil.rmtree(parent)


def test_default_root_for_root_and_for_a_user(user_runtime_dir):
    require(os.geteuid() == 0, "needs root to check both defaults (root's, and a user's)")
    assert default_root() == "/run/isolate"
    runtime = user_runtime_dir

    def as_user() -> tuple:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        states = StateDir()
        info = os.stat(states.root)
        del os.environ["XDG_RUNTIME_DIR"]
        return states.root, stat.S_IMODE(info.st_mode), info.st_uid, default_root()

    root, mode, uid, fallback = unwrap(run_in_fork(as_user))
    assert root == str(runtime / "isolate")
    assert (mode, uid) == (0o700, 65534)
    assert fallback == "/tmp/isolate-65534"
