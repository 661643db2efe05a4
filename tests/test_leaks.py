"""Nothing leaks: fds, host mounts, processes (zombies too), temp dirs; parent death kills.

Each test snapshots everything a container could leave behind, spawns many
containers (succeeding, failing, timing out, killed) and compares.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import psutil
import pytest

import isolate
from conftest import (
    RUN_TIMEOUT,
    assert_no_leaks,
    pid_alive,
    pids_with_cmdline,
    snapshot,
    unique_sleep_arg,
    wait_until,
)


@pytest.fixture
def baseline() -> Iterator[dict]:
    """A snapshot taken after one warm-up run (lazy imports may open files once)."""
    isolate.run(["true"], capture_output=True, timeout=RUN_TIMEOUT)
    yield snapshot()


def test_200_spawns_leak_nothing(baseline: dict):
    """200 successful runs (half with pipes) leave no fd, mount, process or temp dir."""
    for i in range(200):
        r = isolate.run(["true"], capture_output=bool(i % 2), timeout=RUN_TIMEOUT)
        assert r.returncode == 0
    assert_no_leaks(baseline, snapshot())


def test_containers_with_mounts_leak_nothing(baseline: dict):
    """Containers with extra bind/tmpfs mounts and all stdio kinds leave nothing behind."""
    mounts = [isolate.Tmpfs("/srv"), isolate.Bind("/usr", "/mnt")]
    for _ in range(20):
        r = isolate.run(["cat"], input=b"x", capture_output=True, mounts=mounts,
                        timeout=RUN_TIMEOUT)
        assert r.stdout == b"x"
        isolate.run(["true"], stdin=isolate.DEVNULL, stdout=isolate.DEVNULL,
                    stderr=isolate.STDOUT, timeout=RUN_TIMEOUT)
    assert_no_leaks(baseline, snapshot())


def test_failures_leak_nothing(baseline: dict):
    """Config errors, missing executables and in-child failures leave nothing behind."""
    for _ in range(30):
        with pytest.raises(isolate.ConfigError):
            isolate.run([], capture_output=True)
        with pytest.raises(isolate.ExecutableNotFound):
            isolate.run(["no-such-binary-xyz"], capture_output=True, timeout=RUN_TIMEOUT)
        with pytest.raises(isolate.SpawnError):
            isolate.run(["/etc/passwd"], capture_output=True, timeout=RUN_TIMEOUT)
        assert isolate.run(["false"], capture_output=True, timeout=RUN_TIMEOUT).returncode == 1
    assert_no_leaks(baseline, snapshot())


def test_timeouts_leak_nothing(baseline: dict):
    """Timed-out containers are killed completely and leave nothing behind."""
    token = unique_sleep_arg()
    for _ in range(10):
        with pytest.raises(isolate.TimeoutExpired):
            isolate.run(["sh", "-c", f"sleep {token} & sleep {token}"], capture_output=True,
                        timeout=0.2)
    assert wait_until(lambda: not pids_with_cmdline(token)), pids_with_cmdline(token)
    assert_no_leaks(baseline, snapshot())


def workload_pids(init_pid: int) -> list[int]:
    """Host pids of everything running under the container's init."""
    try:
        return [p.pid for p in psutil.Process(init_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_sigkill_of_workload_leaks_nothing(baseline: dict):
    """SIGKILL of the workload from the host: status -9, and nothing left behind."""
    for _ in range(10):
        token = unique_sleep_arg()
        with isolate.Container(["sleep", token], stdout=isolate.PIPE) as c:
            assert wait_until(lambda: pids_with_cmdline(token))
            victim = pids_with_cmdline(token)[0]
            os.kill(victim, signal.SIGKILL)
            assert c.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL
    assert_no_leaks(baseline, snapshot())


def test_closing_running_containers_leaks_nothing(baseline: dict):
    """Leaving the with-block while the container runs kills and reaps everything."""
    token = unique_sleep_arg()
    for _ in range(10):
        with isolate.Container(["sh", "-c", f"sleep {token} & sleep {token}"],
                               stdin=isolate.PIPE, stdout=isolate.PIPE, stderr=isolate.PIPE):
            assert wait_until(lambda: len(pids_with_cmdline(token)) >= 2)
    assert wait_until(lambda: not pids_with_cmdline(token))
    assert_no_leaks(baseline, snapshot())


PARENT_SCRIPT = textwrap.dedent("""
    import sys, time
    import isolate
    c = isolate.Container(["sleep", sys.argv[1]])
    c.start()
    print(c.pid, flush=True)
    time.sleep(1000)
""")


def spawn_parent(token: str) -> tuple[subprocess.Popen, int]:
    """Start a Python process that starts a container; return it and the container's pid."""
    package_root = str(Path(isolate.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=package_root)
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, token],
                              stdout=subprocess.PIPE, env=env)
    line = parent.stdout.readline()
    assert line.strip().isdigit(), f"parent script failed to start a container: {line!r}"
    return parent, int(line)


def test_parent_sigkill_kills_container():
    """SIGKILL of the Python process that started a container kills the whole container."""
    token = unique_sleep_arg()
    parent, init_pid = spawn_parent(token)
    try:
        assert wait_until(lambda: pids_with_cmdline(token)), "container workload never ran"
        doomed = sorted({init_pid, *workload_pids(init_pid), *pids_with_cmdline(token)})
        parent.kill()
        parent.wait(timeout=RUN_TIMEOUT)
        assert wait_until(lambda: not any(pid_alive(p) for p in doomed)), \
            f"container outlived its parent: {[p for p in doomed if pid_alive(p)]}"
        assert not pids_with_cmdline(token)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        for pid in pids_with_cmdline(token):
            os.kill(pid, signal.SIGKILL)
