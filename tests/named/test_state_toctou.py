"""The state directory under attack: swapped directories, unsafe ancestors.

An attacker who can write the directory above --root can swap the state
directory with one of their own (renameat2 RENAME_EXCHANGE) between the
check of the directory and the read of a record.  The forged record names
a process of the victim's outside any container; `kill` must never signal
it.  Every attack runs as root and as the unprivileged user.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from isolate.named import containers
from isolate.errors import IsolateError
from isolate.named.state import ContainerState, StateDir, StateError

from conftest import REPO, RUN_TIMEOUT, drop_to, run_in_fork, unique_sleep_arg, unwrap, wait_until

#: A Python every user can run (the test's own may sit in root's home).
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
NOBODY = 65534
#: Bounds of one race: kill attempts and seconds (whichever ends first).
ATTEMPTS, SECONDS = 300, 8.0

#: The attacker: swap two directories until told to stop, bounded in count and time.
SWAPPER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, stop = (os.fsencode(p) for p in sys.argv[1:4])
deadline = time.monotonic() + float(sys.argv[4])
open(os.path.join(os.path.dirname(stop), b"swapping"), "w").close()
for _ in range(5_000_000):
    if time.monotonic() > deadline or os.path.exists(stop):
        break
    libc.renameat2(-100, a, -100, b, 2)   # RENAME_EXCHANGE
"""


@pytest.fixture(params=["root", "rootless"])
def victim(request) -> tuple[Callable[[], None] | None, int, tuple[int, int]]:
    """(setup for run_in_fork, victim uid, attacker (uid, gid)): root attacked
    by the rootless user, or the rootless user attacked by nobody."""
    ids = request.getfixturevalue("rootless_ids")
    if request.param == "root":
        return None, 0, ids
    return drop_to(*ids), ids[0], (NOBODY, NOBODY)


@pytest.fixture
def parent(host_dir: Path) -> Path:
    """An empty directory outside root's private temp dir, mode 0755."""
    return host_dir


def forged_record(name: str, pid: int) -> dict[str, Any]:
    """A record naming `pid` (a live process that is no container) as `name`."""
    return ContainerState.for_process(name, pid, ["sleep"]).to_dict()


def kill_under_swaps(parent: Path) -> dict[str, int]:
    """The victim's side: open the state dir while `parent` is safe, then
    (once `parent` is opened up and an attacker swaps) kill the container
    "web" again and again.  Returns how often each thing happened."""
    states = StateDir(parent / "state")
    legit = subprocess.Popen(["sh", "-c", f"trap '' TERM; exec sleep {unique_sleep_arg()}"])
    target = subprocess.Popen(["sleep", unique_sleep_arg()])
    counts = {"signalled": 0, "refused": 0, "target_killed": 0}
    try:
        wait_until(lambda: Path(f"/proc/{legit.pid}/cmdline").read_bytes().startswith(b"sleep"))
        states.save(ContainerState.for_process("web", legit.pid, ["sleep"]))
        forged = parent / "forged"
        forged.mkdir(mode=0o700)
        (forged / "web.json").write_text(json.dumps(forged_record("web", target.pid)))
        os.chmod(parent, 0o777)   # now the attacker may swap state and forged
        (parent / "ready").touch()
        wait_until(lambda: (parent / "swapping").exists(), RUN_TIMEOUT)
        deadline = time.monotonic() + SECONDS
        for _ in range(ATTEMPTS):
            if time.monotonic() > deadline or target.poll() is not None:
                break
            try:
                # SIGTERM: the legitimate container ignores it; the target dies of it.
                containers.kill_named(states, "web", signal.SIGTERM)
                counts["signalled"] += 1
            except (IsolateError, OSError):
                counts["refused"] += 1
        counts["target_killed"] = int(wait_until(lambda: target.poll() is not None, 0.5))
        return counts
    finally:
        for proc in (legit, target):
            proc.kill()
            proc.wait()


def start_swapper(parent: Path, attacker: tuple[int, int]) -> subprocess.Popen:
    """The attacker, once the victim says ready: swap state/ and forged/."""
    assert wait_until(lambda: (parent / "ready").exists(), RUN_TIMEOUT), "victim never got ready"
    return subprocess.Popen([SYSTEM_PYTHON, "-c", SWAPPER, str(parent / "state"),
                             str(parent / "forged"), str(parent / "stop"), str(SECONDS + 5)],
                            user=attacker[0], group=attacker[1], extra_groups=[])


def test_swapped_state_dir_never_makes_kill_signal_a_host_process(victim, parent):
    """An attacker swapping the state directory with a forged one during
    hundreds of kills never gets the victim's own process outside the
    container signalled: every access goes through the directory opened
    once, not back through the path."""
    setup, uid, attacker = victim
    os.chown(parent, uid, -1)
    swappers: list[subprocess.Popen] = []
    try:
        outcome = run_in_fork(lambda: kill_under_swaps(parent), setup=setup, timeout=RUN_TIMEOUT * 2,
                              on_fork=lambda _pid: swappers.append(start_swapper(parent, attacker)))
    finally:
        (parent / "stop").touch()
        for swapper in swappers:
            swapper.wait(timeout=RUN_TIMEOUT)
    counts = unwrap(outcome)
    assert swappers and swappers[0].returncode == 0
    assert counts["target_killed"] == 0, f"kill signalled the forged record's process: {counts}"
    assert counts["signalled"] > 0, counts


# --- ancestors of the state directory ---------------------------------------------

def open_states(path: Path) -> str:
    """Open and close a StateDir; the error's text, or "" if it opened."""
    try:
        StateDir(path)
    except StateError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("mode, owner, refused", [
    (0o777, "self", True),      # anyone may swap entries: refused
    (0o775, "self", True),      # so may the group
    (0o1777, "self", False),    # sticky, like /tmp: only owners rename their entries
    (0o755, "other", True),     # another user's directory: they may chmod it any time
    (0o755, "root", False),
])
def test_state_dir_under_an_unsafe_ancestor_is_refused(victim, parent, mode, owner, refused):
    """A --root whose parent others could write (without the sticky bit), or
    that another non-root user owns, is refused naming that parent."""
    setup, uid, attacker = victim
    unsafe = parent / "shared"
    (unsafe / "state").mkdir(parents=True, mode=0o700)
    os.chown(unsafe / "state", uid, -1)
    os.chown(unsafe, {"self": uid, "other": attacker[0], "root": 0}[owner], -1)
    os.chmod(unsafe, mode)
    message = unwrap(run_in_fork(lambda: open_states(unsafe / "state"), setup=setup))
    assert bool(message) == refused, message
    if refused:
        assert str(unsafe) in message, message


def test_cli_refuses_a_root_under_a_world_writable_directory(parent):
    """`isolate --root` under a directory anyone may write: exit 125, one
    line naming the directory, and nothing created in it."""
    shared = parent / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "isolate", "--root", str(shared / "state"), "ps"],
                       capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)
    assert r.returncode == 125 and str(shared) in r.stderr and "writable" in r.stderr, r
    assert list(shared.iterdir()) == []


def test_a_fifo_or_symlink_record_is_refused_without_blocking(tmp_path):
    """A record that is a FIFO (would block a reader) or a symlink (would be
    read from elsewhere) is an error naming it, read from the open directory."""
    states = StateDir(tmp_path / "state")
    os.mkfifo(tmp_path / "state" / "pipe.json", 0o600)
    (tmp_path / "elsewhere.json").write_text("{}")
    (tmp_path / "state" / "link.json").symlink_to(tmp_path / "elsewhere.json")
    for name in ("pipe", "link"):
        # In a child, bounded: opening a FIFO for reading blocks until a writer comes.
        outcome = run_in_fork(lambda: states.load(name), timeout=10)
        assert not outcome["ok"] and outcome["exc"]["type"] == "StateError", outcome
        assert name in outcome["exc"]["str"]


def test_state_dir_keeps_working_on_the_directory_it_opened(tmp_path):
    """After the path is renamed away and replaced, the StateDir still reads
    and writes the directory it opened, never the replacement."""
    states = StateDir(tmp_path / "state")
    proc = subprocess.Popen(["sleep", unique_sleep_arg()])
    try:
        states.save(ContainerState.for_process("web", proc.pid, ["sleep"]))
        os.rename(tmp_path / "state", tmp_path / "moved")
        (tmp_path / "state").mkdir(mode=0o700)
        assert states.load("web").pid == proc.pid
        assert [s.name for s in states.list()] == ["web"]
        states.remove("web", force=True)
        assert not (tmp_path / "moved" / "web.json").exists()
        assert list((tmp_path / "state").iterdir()) == []
    finally:
        proc.kill()
        proc.wait()
    assert stat.S_IMODE(os.stat(tmp_path / "moved").st_mode) == 0o700
