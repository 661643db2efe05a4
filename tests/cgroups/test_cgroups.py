"""CgroupLimit on the real kernel: limits hold, stats move, OOM is reported,
and no cgroup directory outlives its container.

These run on this machine's cgroup layout (v1 or hybrid here), and CI runs
them again in a cgroup-v2-only VM (../shared/tools/cgroup2-vm).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings

import pytest

import isolate
from isolate import CgroupLimit
from isolate.cgroups import interface
from conftest import (PIDS_CGROUP_ROOT, PYTHON, RUN_TIMEOUT, assert_no_leaks, drop_to,
                      marker, pid_alive, pids_cgroup_available, require, run_in_fork, snapshot, unwrap,
                      wait_until)

#: How much slower this machine runs than a normal one: .ci/run sets 20 for
#: the emulated cgroup-v2 VM.  It scales timeouts and loop counts, never a
#: bound on how fast something must be.
SLOW = int(os.environ.get("ISOLATE_TEST_SLOWDOWN", "1"))


def py(code: str, **config) -> isolate.CompletedProcess:
    return isolate.run([PYTHON, "-c", code], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT * SLOW, **config)


def test_memory_bomb_is_oom_killed_and_reported():
    """A workload allocating 1 GiB under a 64 MiB limit (no swap) is killed
    by the OOM killer; the result says so, the parent lives on."""
    r = py("x = bytearray(1 << 30); print('survived')",
           limits=CgroupLimit(memory="64M", memory_swap="64M"))
    assert r.returncode == -signal.SIGKILL
    assert r.oom_killed is True
    assert "survived" not in r.stdout
    assert r.stats is not None and r.stats.oom_kills >= 1
    assert r.stats.memory_peak is None or r.stats.memory_peak <= 64 << 20


def test_no_oom_without_pressure():
    r = py("x = bytearray(8 << 20)", limits=CgroupLimit(memory="256M"))
    assert r.returncode == 0 and r.oom_killed is False


FORK_BOMB = """
import os, time
children = failed = 0
for _ in range(100):
    try:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        children += 1
    except OSError:
        failed += 1
print(children, failed, flush=True)
"""


def test_fork_bomb_stops_at_pids_max():
    """With pids=20, forks beyond 20 processes fail (EAGAIN); the host can
    still fork."""
    r = py(FORK_BOMB, limits=CgroupLimit(pids=20))
    children, failed = map(int, r.stdout.split())
    assert children < 20 and failed == 100 - children
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0


BUSY = """
import time
end = time.monotonic() + float(__import__("sys").argv[1])
while time.monotonic() < end:
    pass
"""


def test_cpu_quota_holds_a_busy_loop():
    """cpu=0.2: a busy loop gets about 20% of one CPU over 2 s."""
    seconds = 2.0 * SLOW
    with isolate.Container([PYTHON, "-c", BUSY, str(seconds)],
                           limits=CgroupLimit(cpu=0.2)) as c:
        start, t0 = c.stats().cpu_usage_ns, time.monotonic()
        assert c.wait(timeout=RUN_TIMEOUT * SLOW) == 0
        used = (c.stats().cpu_usage_ns - start) / 1e9
        elapsed = time.monotonic() - t0
    share = used / elapsed
    assert 0.08 < share < 0.40, (used, elapsed)


def test_cpuset_pins():
    """cpuset='0': the workload may run on CPU 0 only."""
    r = py("import os; print(sorted(os.sched_getaffinity(0)))", limits=CgroupLimit(cpuset="0"))
    assert r.stdout.strip() == "[0]"


def test_stats_move():
    """Memory in use and CPU time grow as the workload works."""
    code = ("import sys, time\nsys.stdin.readline()\nx = bytearray(48 << 20)\n"
            "end = time.monotonic() + 0.3\nwhile time.monotonic() < end: pass\n"
            "print('done', flush=True)\nsys.stdin.readline()")
    with isolate.Container([PYTHON, "-c", code], stdin=isolate.PIPE, stdout=isolate.PIPE,
                           limits=CgroupLimit(memory="512M")) as c:
        before = c.stats()
        c.process.stdin.write(b"go\n")
        c.process.stdin.flush()
        assert c.process.stdout.readline() == b"done\n"
        after = c.stats()
        c.process.stdin.write(b"end\n")
        c.process.stdin.flush()
        assert c.wait(timeout=RUN_TIMEOUT * SLOW) == 0
    assert after.memory_current - before.memory_current > 40 << 20
    assert after.cpu_usage_ns - before.cpu_usage_ns > 100_000_000
    assert after.pids_current >= 2   # PID 1 and the workload


def _limit_file(c: isolate.Container) -> str:
    if interface.unified():
        return os.path.join(c.cgroup.path, "memory.max")
    return os.path.join(c.cgroup.dirs["memory"], "memory.limit_in_bytes")


def test_update_changes_the_kernels_limit():
    with isolate.Container(["sleep", "30"], limits=CgroupLimit(memory="64M", pids=10)) as c:
        path = _limit_file(c)
        assert int(open(path).read()) == 64 << 20
        c.update(CgroupLimit(memory="128M"))
        assert int(open(path).read()) == 128 << 20
        c.kill()


COUNTER = """
import sys, time
n = 0
while True:
    n += 1
    if n % 1000 == 0:
        with open("/tmp/count", "w") as f:
            f.write(str(n))
"""


def test_freeze_stops_a_counter():
    """While frozen the counter stands still; thawed, it moves again."""
    def count(c: isolate.Container) -> int:
        # Read from the host: an exec'd process would join the frozen cgroup.
        try:
            with open(f"/proc/{c.pid}/root/tmp/count") as f:
                return int(f.read() or 0)
        except FileNotFoundError:
            return 0

    with isolate.Container([PYTHON, "-c", COUNTER], limits=CgroupLimit(pids=100)) as c:
        assert wait_until(lambda: count(c) > 0, timeout=10 * SLOW)
        c.freeze()
        frozen = count(c)
        time.sleep(0.3 * SLOW)
        assert count(c) == frozen
        with pytest.raises(isolate.IsolateError, match="frozen"):
            c.exec(["true"])
        c.thaw()
        assert wait_until(lambda: count(c) > frozen, timeout=10 * SLOW)
        c.kill()


@pytest.mark.cgroup_v2
def test_a_start_that_cannot_finish_times_out():
    """A process placed in a frozen cgroup freezes before it can exec: the
    start's timeout kills it and raises SpawnTimeout (cgroup v2 only: v1's
    freezer holds SIGKILL too).  exec itself refuses a frozen container,
    so the cgroup is joined here below exec's check."""
    with isolate.Container(["sleep", "60"], limits=CgroupLimit(pids=10)) as c:
        c.freeze()
        try:
            late = isolate.Container(["true"], namespaces=(), init=False)
            late._joined_cgroups = tuple(c.cgroup.directories())
            with pytest.raises(isolate.SpawnTimeout):
                late.start(timeout=1 * SLOW)
        finally:
            c.thaw()
            c.kill()


def test_kill_reaches_every_process_in_the_cgroup():
    """Without a PID namespace, kill() still gets a process the workload
    left running in the background (it is in the cgroup)."""
    with isolate.Container(["sh", "-c", "sleep 300 & exec sleep 301"],
                           namespaces=isolate.ALL_NAMESPACES - {"pid"},
                           limits=CgroupLimit(pids=10)) as c:
        assert wait_until(lambda: len(cgroup_pids(c)) == 2, timeout=10 * SLOW)
        pids = cgroup_pids(c)
        c.kill()
        c.wait(timeout=RUN_TIMEOUT)
        # pid_alive: a process may vanish between two looks at /proc.
        assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10 * SLOW)


def cgroup_pids(c: isolate.Container) -> list[int]:
    from isolate.cgroups import files
    return files.procs(c.cgroup.procs_paths()[0].rsplit("/", 1)[0])


def test_child_is_in_its_cgroup_before_it_runs():
    """The workload's very first view of /proc/self/cgroup is its cgroup
    (and, through the cgroup namespace, it is the root there)."""
    r = isolate.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True,
                    limits=CgroupLimit(pids=10), timeout=RUN_TIMEOUT * SLOW)
    lines = [line.split(":", 2) for line in r.stdout.splitlines()]
    pids_line = [p for _, c, p in lines if (c == "pids" or (not c and interface.unified()))]
    assert pids_line == ["/"], r.stdout


def test_no_cgroup_left_behind():
    """After 200 runs, a failed start, a SIGKILLed workload, a timeout and
    an OOM kill, no cgroup directory remains."""
    limits = CgroupLimit(memory="64M", memory_swap="64M", pids=50)
    isolate.run(["true"], limits=limits)
    before = snapshot()
    for _ in range(200 // SLOW):
        isolate.run(["true"], limits=limits, timeout=RUN_TIMEOUT * SLOW)
    with pytest.raises(isolate.SpawnError):
        isolate.run(["true"], limits=limits, cwd="/proc/nonexistent")
    with isolate.Container(["sleep", "60"], limits=limits) as c:
        os.kill(cgroup_pids(c)[-1], signal.SIGKILL)
        c.wait(timeout=RUN_TIMEOUT)
    with pytest.raises(isolate.TimeoutExpired):
        isolate.run(["sleep", "60"], limits=limits, timeout=0.5 * SLOW)
    assert py("x = bytearray(1 << 30)", limits=limits).oom_killed
    assert_no_leaks(before, snapshot())


@pytest.mark.parametrize("kwargs, field", [
    ({"memory": "lots"}, "CgroupLimit.memory"),
    ({"memory": -1}, "CgroupLimit.memory"),
    ({"memory_swap": "64M"}, "CgroupLimit.memory_swap"),
    ({"memory": "128M", "memory_swap": "64M"}, "CgroupLimit.memory_swap"),
    ({"cpu": 0}, "CgroupLimit.cpu"),
    ({"cpu": "half"}, "CgroupLimit.cpu"),
    ({"cpu_weight": 0}, "CgroupLimit.cpu_weight"),
    ({"pids": 0}, "CgroupLimit.pids"),
    ({"io_weight": 10001}, "CgroupLimit.io_weight"),
    ({"io_max": {"sda": {"rbps": 1}}}, "CgroupLimit.io_max"),
    ({"io_max": {"8:0": {"speed": 1}}}, "CgroupLimit.io_max"),
    ({"cpuset": "0-"}, "CgroupLimit.cpuset"),
    ({"cpuset": "3-1"}, "CgroupLimit.cpuset"),
    ({"on_unavailable": "ignore"}, "CgroupLimit.on_unavailable"),
])
def test_bad_limits_raise(kwargs, field):
    with pytest.raises(isolate.ConfigError) as info:
        CgroupLimit(**kwargs)
    assert info.value.field == field


def test_sizes_and_parent_are_checked():
    assert CgroupLimit(memory="1G", memory_swap=2 << 30).memory == 1 << 30
    with pytest.raises(isolate.ConfigError) as info:
        isolate.Config(limits=CgroupLimit(pids=1), cgroup_parent="relative")
    assert info.value.field == "cgroup_parent"
    with pytest.raises(isolate.ConfigError) as info:
        isolate.Config(cgroup_parent="/x")
    assert info.value.field == "cgroup_parent"


def test_named_parent():
    """cgroup_parent puts the container's cgroup under that path."""
    parent = f"/isolate-test-parent-{os.getpid()}"
    mounts = _hierarchy_roots()
    for root in mounts:
        os.mkdir(root + parent)
    try:
        with isolate.Container(["sleep", "30"], limits=CgroupLimit(pids=5),
                               cgroup_parent=parent) as c:
            assert all(p.startswith(tuple(r + parent + "/" for r in mounts))
                       for p in c.cgroup.procs_paths())
            c.kill()
    finally:
        for root in mounts:
            os.rmdir(root + parent)


@pytest.mark.cgroup_v2
def test_v2_no_internal_processes():
    """In a leaf cgroup that holds the caller (a systemd service's cgroup),
    v2 forbids giving controllers to a child cgroup: the default placement
    fails with a CgroupError that says so and what to do, and a named
    parent without processes works.  CI runs this once in the VM's root
    cgroup (the test makes such a leaf) and once under
    --cgroup /system.slice/x.service (the leaf is the service's)."""
    from isolate.cgroups import files
    own = files.own_path()
    leaf = None if own != "/" else f"/isolate-test-svc-{os.getpid()}"
    parent = os.path.dirname(own) if leaf is None else "/"

    def body() -> dict:
        out = {}
        try:
            isolate.run(["true"], limits=CgroupLimit(pids=10), timeout=RUN_TIMEOUT * SLOW)
            out["default"] = "ran"
        except isolate.CgroupError as exc:
            out["default"] = str(exc)
        r = isolate.run(["true"], limits=CgroupLimit(pids=10), cgroup_parent=parent,
                        timeout=RUN_TIMEOUT * SLOW)
        out["parent"] = r.returncode
        return out

    if leaf is None:
        out = body()
    else:
        os.mkdir("/sys/fs/cgroup" + leaf)
        try:
            def enter() -> None:
                with open(f"/sys/fs/cgroup{leaf}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
            out = unwrap(run_in_fork(body, setup=enter, timeout=120 * SLOW))
        finally:
            wait_until(lambda: not open(f"/sys/fs/cgroup{leaf}/cgroup.procs").read().strip())
            os.rmdir("/sys/fs/cgroup" + leaf)
    assert out["default"].startswith("cannot enable pids for the children of /sys/fs/cgroup/")
    assert "it holds processes" in out["default"] and "cgroup_parent=" in out["default"]
    assert out["parent"] == 0


@pytest.mark.cgroup_v2
def test_rootless_in_a_delegated_subtree(rootless):
    """An unprivileged caller living in a subtree delegated to it (as
    systemd's Delegate= does: the directory and its cgroup.procs,
    cgroup.subtree_control and cgroup.threads are its own) gets its
    limits, with cgroup_parent naming the subtree."""
    uid, gid = rootless
    subtree = f"/isolate-test-deleg-{os.getpid()}"
    path = "/sys/fs/cgroup" + subtree
    os.mkdir(path)
    os.mkdir(path + "/leaf")
    for name in ("", "/cgroup.procs", "/cgroup.subtree_control", "/cgroup.threads",
                 "/leaf", "/leaf/cgroup.procs"):
        os.chown(path + name, uid, gid)

    def enter() -> None:
        with open(path + "/leaf/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
        drop_to(uid, gid)()

    def body() -> tuple[int, str, str]:
        with isolate.Container(["sleep", "30"], limits=CgroupLimit(pids=10, memory="64M"),
                               cgroup_parent=subtree) as c:
            where = c.cgroup.path
            pids_max = open(where + "/pids.max").read().strip()
            c.kill()
            return c.wait(timeout=RUN_TIMEOUT * SLOW), where, pids_max

    isolate.run(["true"])
    try:
        returncode, where, pids_max = unwrap(run_in_fork(body, setup=enter, timeout=120 * SLOW))
    finally:
        wait_until(lambda: not open(path + "/leaf/cgroup.procs").read().strip())
        leftovers = [n for n in os.listdir(path) if n.startswith("isolate-")]
        os.rmdir(path + "/leaf")
        os.rmdir(path)
    assert returncode == -signal.SIGKILL
    assert os.path.dirname(where) == path and pids_max == "10"
    assert leftovers == []


def _hierarchy_roots() -> list[str]:
    if interface.unified():
        return ["/sys/fs/cgroup"]
    from isolate.cgroups.v1 import ALWAYS, hierarchies
    mounts = hierarchies()
    return sorted({mounts[c] for c in (*ALWAYS, "pids") if c in mounts})


def test_unprivileged_caller_without_a_writable_cgroup(rootless):
    """Rootless with no writable cgroup: "fail" raises CgroupError naming
    the cgroup; "warn" runs without limits and warns, saying why."""
    require(not _writable_by(rootless), "the rootless user has a writable cgroup here")

    def body() -> dict:
        out = {}
        try:
            isolate.run(["true"], limits=CgroupLimit(pids=10))
        except isolate.CgroupError as exc:
            out["fail"] = str(exc)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = isolate.run(["true"], limits=CgroupLimit(pids=10, on_unavailable="warn"))
        out["warn"] = (r.returncode, [str(w.message) for w in caught])
        return out

    isolate.run(["true"])
    out = unwrap(run_in_fork(body, setup=drop_to(*rootless)))
    assert "create cgroup /sys/fs/cgroup/" in out["fail"] and "Permission denied" in out["fail"]
    returncode, messages = out["warn"]
    assert returncode == 0 and len(messages) == 1
    assert messages[0].startswith("running without cgroup limits: create cgroup /sys/fs/cgroup/")


def _writable_by(ids: tuple[int, int]) -> bool:
    def probe() -> bool:
        base = "/sys/fs/cgroup" + (cgroups_own("") if interface.unified() else "/pids" + cgroups_own("pids"))
        return os.access(base, os.W_OK)
    return unwrap(run_in_fork(probe, setup=drop_to(*ids)))


def cgroups_own(controller: str) -> str:
    from isolate.cgroups import files
    return files.own_path(controller or None)


@pytest.mark.cgroup_v1
def test_kill_all_empties_a_cgroup_without_the_freezer():
    """files.kill_all (v1 without a freezer, v2 without cgroup.kill)
    kills a shell that keeps forking, and whatever it forked."""
    require(pids_cgroup_available(), "needs root and a cgroup v1 pids hierarchy")
    from isolate.cgroups import files
    group = PIDS_CGROUP_ROOT / marker()
    group.mkdir()
    try:
        (group / "pids.max").write_text("500")   # a bound, never reached: sh would exit at it
        shell = subprocess.Popen(["sh", "-c", "while :; do sleep 300 & sleep 0.01; done"],
                                 preexec_fn=lambda: (group / "cgroup.procs").write_text("0"))
        assert wait_until(lambda: len(files.procs(str(group))) >= 10, timeout=10 * SLOW)
        files.kill_all(str(group))
        assert not files.procs(str(group))
        assert shell.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL
    finally:
        group.rmdir()
