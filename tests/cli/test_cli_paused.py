"""Paused containers on the command line, as docker treats them: ps says
"Up ... (Paused)"; kill, stop and rm -f end them (the signal is sent, then
the container thawed, as docker's daemon does, for on cgroup v1 a frozen
process does not even die of SIGKILL before it is thawed).

Every container here has a cgroup (--memory), which pausing needs, and
runs a plain `sleep`, so the outcome shows which signal ended it: 137 for
SIGKILL, 143 for SIGTERM.  A stop that did not thaw would end in
SIGKILL after its -t, or not at all.
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

from conftest import REPO, RUN_TIMEOUT, pid_alive, require, unique_sleep_arg

#: ps's STATUS of a container seconds old.
RECENT = r"(Less than a second|\d+ seconds?|About a minute)"


def isolate(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "isolate", "--root", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)


def ok(root: Path, *args: str) -> str:
    r = isolate(root, *args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def statuses(root: Path) -> dict[str, str]:
    """name -> STATUS, from `isolate ps -a`."""
    rows = ok(root, "ps", "-a").splitlines()[1:]
    return {row.split()[0]: re.split(r" {2,}", row.split(None, 2)[2])[0] for row in rows}


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A state directory; its containers are removed (paused or not) after the test."""
    require(os.geteuid() == 0, "a cgroup (pause) needs root here")
    state = tmp_path / "state"
    yield state
    if state.exists():
        for name in statuses(state):
            isolate(state, "rm", "-f", name)


def paused(root: Path, name: str) -> dict:
    """Start `name` (a sleep with a cgroup), pause it; its inspect document."""
    ok(root, "run", "-d", "--name", name, "--memory", "64M", "--", "sleep", unique_sleep_arg())
    assert ok(root, "pause", name) == f"{name}\n"
    document = json.loads(ok(root, "inspect", name))[0]
    assert document["State"]["Paused"]
    return document


def test_ps_shows_a_paused_container_as_docker_does(root: Path) -> None:
    paused(root, "p")
    ok(root, "run", "-d", "--name", "free", "--memory", "64M", "--", "sleep", "1000")
    shown = statuses(root)
    assert re.fullmatch(rf"Up {RECENT} \(Paused\)", shown["p"]), shown
    assert re.fullmatch(rf"Up {RECENT}", shown["free"]), shown
    ok(root, "unpause", "p")
    assert re.fullmatch(rf"Up {RECENT}", statuses(root)["p"])


def test_kill_ends_a_paused_container(root: Path) -> None:
    pid = paused(root, "k")["State"]["Pid"]
    ok(root, "kill", "k")
    assert not pid_alive(pid)               # kill waited for it, and recorded it
    assert ok(root, "wait", "k") == "137\n"
    assert statuses(root)["k"].startswith("Exited (137)")


def test_kill_with_another_signal_thaws_it_to_take_effect(root: Path) -> None:
    paused(root, "t")
    ok(root, "kill", "-s", "TERM", "t")
    assert ok(root, "wait", "t") == "143\n"


def test_stop_ends_a_paused_container_with_sigterm(root: Path) -> None:
    paused(root, "s")
    assert ok(root, "stop", "-t", "20", "s") == "s\n"
    assert ok(root, "wait", "s") == "143\n"   # SIGTERM did it: no wait for -t, no SIGKILL


def test_rm_force_removes_a_paused_container(root: Path) -> None:
    document = paused(root, "r")
    ok(root, "rm", "-f", "r")
    assert "r" not in statuses(root)
    assert not pid_alive(document["State"]["Pid"])
    assert not any(os.path.exists(cgroup) for cgroup in document["HostConfig"]["Cgroups"])


#: Run by a fresh interpreter: the modules `isolate ps` loads.
PROBE = """
import json, sys
before = set(sys.modules)
from isolate.cli.main import main
assert main(["--root", sys.argv[1], "ps"]) == 0
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_ps_of_a_paused_container_loads_no_spawn_path(root: Path) -> None:
    """Reading the freezer loads the cgroup files' code, not what starts or
    enters containers (tests/test_startup.py checks ps without one)."""
    paused(root, "p")
    r = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "(Paused)" in r.stdout
    loaded = set(json.loads(r.stdout.splitlines()[-1]))
    assert "isolate.named.cgroup" in loaded
    unwanted = {"isolate.named.containers", "isolate.container", "isolate.config",
                "isolate._native", "isolate.security.seccomp", "isolate.images.store", "tarfile"}
    assert not loaded & unwanted, sorted(loaded & unwanted)
