"""Nothing a container does may kill, stop or hang the process that embeds
isolate (issue 10, item 4).

Each scenario runs in a separate interpreter: if the container took its
caller down with it, that interpreter dies or hangs, and the test sees it
instead of dying or hanging itself.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from isolate import CgroupLimit, ConfigError

from conftest import PYTHON, pids_cgroup_available, require

#: How long a scenario may take before we call it a hang (a bound on a
#: hang, not a measure of speed).
HANG_BOUND = 120


def run_scenario(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (as this test's user); it prints
    "survived" last if its process lived through everything."""
    script = textwrap.dedent(code) + "\nprint('survived', flush=True)\n"
    try:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=HANG_BOUND)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the caller hung for {HANG_BOUND} s: {exc.stdout!r} {exc.stderr!r}")


def assert_survived(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.rstrip().endswith("survived"), result.stdout


def test_memory_limit_too_small_to_start_is_refused():
    """memory=100k used to get the caller SIGKILLed (the OOM killer chose the
    setup process, which shares its memory); now it is a ConfigError."""
    with pytest.raises(ConfigError, match="CgroupLimit.memory"):
        CgroupLimit(memory="100k")
    result = run_scenario("""
        import isolate
        try:
            isolate.run(["true"], limits=isolate.CgroupLimit(memory="100k"))
        except isolate.ConfigError as e:
            print("refused:", e)
    """)
    assert_survived(result)
    assert "refused: CgroupLimit.memory" in result.stdout


def test_oom_in_the_container_never_kills_the_caller():
    """At the smallest memory limit, workloads that blow it at once (some
    while the container is still starting) are OOM-killed, the caller never."""
    require(os.geteuid() == 0, "cgroup limits need root here")
    result = run_scenario(f"""
        import isolate
        limits = isolate.CgroupLimit(memory="6M")   # the least it accepts
        for _ in range(15):
            r = isolate.run([{PYTHON!r}, "-c", "x = bytearray(64 << 20)"], limits=limits,
                            capture_output=True)
            assert r.returncode == -9 and r.oom_killed, (r.returncode, r.stderr)
        r = isolate.run(["sh", "-c", "x=$(head -c 50000000 /dev/zero | tr '\\\\0' a); echo $x"],
                        limits=limits, init=False, capture_output=True)
        assert r.oom_killed, r
    """)
    assert_survived(result)


#: In the container: keep stopping every other process, up to the next few
#: pids to come, such as a process being exec'd.
STOPPER = """
import os, signal
me = os.getpid()
while True:
    with open("/proc/sys/kernel/ns_last_pid") as f:
        last = int(f.read())
    for pid in range(2, last + 4):
        if pid != me:
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                pass
"""


@pytest.mark.parametrize("namespaces", ["all", "all but time"])
def test_a_container_that_stops_new_processes_cannot_hang_exec(namespaces):
    """exec used to hang until the container was killed when a process in
    it stopped the new one before it exec'd; now each exec returns (or
    raises) within its timeout, and the caller goes on."""
    kinds = "isolate.ALL_NAMESPACES" + (" - {'time'}" if namespaces != "all" else "")
    result = run_scenario(f"""
        import isolate
        outcomes = set()
        with isolate.Container([{PYTHON!r}, "-c", {STOPPER!r}], namespaces={kinds}) as c:
            for _ in range(20):
                try:
                    # Long enough that the stopper, racing it, gets its turn.
                    c.exec(["sleep", "0.2"], timeout=3)
                    outcomes.add("ran")
                except isolate.TimeoutExpired:
                    outcomes.add("timeout")
                except isolate.SpawnError as e:
                    assert "stopped" in str(e), e
                    outcomes.add("stopped")
            c.kill()
        print(sorted(outcomes))
    """)
    assert_survived(result)
    # The attack did land: some exec was stopped, before or after it exec'd.
    assert "stopped" in result.stdout or "timeout" in result.stdout, result.stdout


def test_exec_oom_in_the_container_never_kills_the_caller():
    """An exec'd process joins the container's cgroup while it still shares
    the caller's memory: a container at its limit must not get the caller
    killed through it."""
    require(os.geteuid() == 0, "cgroup limits need root here")
    require(pids_cgroup_available(), "the pids controller")
    # Python processes that each blow the limit (the OOM killer never rests),
    # and offer themselves as its victims, so that the loop goes on.
    hog = (f"while :; do {PYTHON} -c 'open(\"/proc/self/oom_score_adj\", \"w\").write(\"1000\"); "
           f"bytearray(64 << 20)' 2>/dev/null; done")
    result = run_scenario(f"""
        import time
        import isolate
        limits = isolate.CgroupLimit(memory="24M")
        for kinds in (isolate.ALL_NAMESPACES, isolate.ALL_NAMESPACES - {{"time"}}):
            with isolate.Container(["sh", "-c", {hog!r}], limits=limits, namespaces=kinds) as c:
                # At least 15 execs, and on until the OOM killer has struck
                # (the hog may take a while to start), within 60 s.
                deadline = time.monotonic() + 60
                for n in range(1000):
                    if n >= 15 and (c.oom_killed or time.monotonic() > deadline):
                        break
                    try:
                        c.exec(["true"], timeout=10)
                    except (isolate.SpawnError, isolate.TimeoutExpired):
                        pass
                    except isolate.IsolateError:
                        break   # the OOM killer took the hog's shell too: the container ended
                assert c.oom_killed, c.stats()
                c.kill()
    """)
    assert_survived(result)
