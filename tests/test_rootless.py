"""Rootless: the same calls work for an unprivileged user (mapped to root inside).

The test process runs as root, and /root (which holds this interpreter) is
mode 700, so rootless code runs in a forked child of the test process that
drops to an unprivileged system user: the interpreter and isolate are already
loaded, nothing needs to be read from /root again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Callable

import pytest

import isolate
from conftest import (
    drop_to,
    CLONE_NEWUSER,
    RUN_TIMEOUT,
    libc_unshare,
    open_fds,
    pids_with_cmdline,
    prctl_set_dumpable,
    run_in_fork,
    unique_sleep_arg,
    unwrap,
    wait_until,
)

def warm_up() -> None:
    """Load every lazily imported part of isolate while still root."""
    isolate.run(["cat"], input=b"x", capture_output=True, timeout=RUN_TIMEOUT)
    with isolate.Container(["true"], stdout=isolate.PIPE) as c:
        c.communicate(timeout=RUN_TIMEOUT)
    with pytest.raises(isolate.TimeoutExpired):
        isolate.run(["sleep", "10"], timeout=0.05)


def as_user(ids: tuple[int, int], fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` as the rootless user in a forked child; return its outcome."""
    warm_up()
    return run_in_fork(fn, setup=drop_to(*ids), timeout=60)


def test_rootless_run_works(rootless: tuple[int, int]):
    """As an unprivileged user: new pid/uts namespaces, root inside, mapped to the caller."""
    uid, _ = rootless

    def body():
        r = isolate.run(["sh", "-c", "echo $$; id -u; hostname; cat /proc/self/uid_map"],
                        hostname="rootless", capture_output=True, timeout=RUN_TIMEOUT)
        return r.returncode, r.stdout.decode(), os.geteuid()

    code, out, euid = unwrap(as_user(rootless, body))
    assert euid == uid != 0
    pid, inside_uid, hostname, *uid_map = out.split()
    assert code == 0
    assert int(pid) <= 2 and inside_uid == "0" and hostname == "rootless"
    assert uid_map == ["0", str(uid), "1"]


def test_rootless_stdio_and_status(rootless: tuple[int, int]):
    """Rootless runs pass data through pipes and report exit codes and signals."""
    def body():
        a = isolate.run(["cat"], input=b"data" * 100000, capture_output=True, timeout=RUN_TIMEOUT)
        b = isolate.run(["sh", "-c", "exit 3"], timeout=RUN_TIMEOUT)
        c = isolate.run(["sh", "-c", "kill -TERM $$"], timeout=RUN_TIMEOUT)
        return len(a.stdout), b.returncode, c.returncode

    assert unwrap(as_user(rootless, body)) == (400000, 3, -signal.SIGTERM)


def test_rootless_files_owned_by_caller(rootless: tuple[int, int], host_dir: Path):
    """Files root-inside writes through a rw bind belong to the unprivileged caller on the host."""
    uid, gid = rootless
    os.chown(host_dir, uid, gid)
    bind = isolate.Bind(str(host_dir), "/mnt", readonly=False)

    def body():
        return isolate.run(["touch", "/mnt/made"], mounts=[bind], timeout=RUN_TIMEOUT).returncode

    assert unwrap(as_user(rootless, body)) == 0
    st = (host_dir / "made").stat()
    assert (st.st_uid, st.st_gid) == (uid, gid)


def test_rootless_root_inside_cannot_write_host_root_files(rootless: tuple[int, int],
                                                           host_dir: Path):
    """Root inside a rootless container has no power over files of the host's root."""
    victim = host_dir / "root-owned"
    victim.write_text("original\n")
    os.chmod(host_dir, 0o777)  # even a writable directory does not help
    bind = isolate.Bind(str(host_dir), "/mnt", readonly=False)

    def body():
        r = isolate.run(["sh", "-c", "echo evil >> /mnt/root-owned; chmod 666 /mnt/root-owned"],
                        mounts=[bind], capture_output=True, timeout=RUN_TIMEOUT)
        return r.returncode

    assert unwrap(as_user(rootless, body)) != 0
    assert victim.read_text() == "original\n"
    assert victim.stat().st_mode & 0o777 == 0o644


def test_rootless_timeout_and_no_leaks(rootless: tuple[int, int]):
    """Rootless: a timeout kills the container; fds in the caller are unchanged."""
    token = unique_sleep_arg()

    def body():
        before = open_fds()
        for _ in range(20):
            isolate.run(["true"], capture_output=True, timeout=RUN_TIMEOUT)
        try:
            isolate.run(["sleep", token], timeout=0.3)
            timed_out = False
        except isolate.TimeoutExpired:
            timed_out = True
        return timed_out, sorted(open_fds() - before)

    timed_out, new_fds = unwrap(as_user(rootless, body))
    assert timed_out
    assert new_fds == []
    assert wait_until(lambda: not pids_with_cmdline(token))


def test_rootless_without_user_namespace_fails_cleanly(rootless: tuple[int, int]):
    """Without a user namespace an unprivileged caller cannot build a container: clean error."""
    def body():
        isolate.run(["true"], namespaces=["mount", "pid"], timeout=RUN_TIMEOUT)

    outcome = as_user(rootless, body)
    assert not outcome["ok"]
    exc = outcome["exc"]
    assert "IsolateError" in exc["mro"], exc["traceback"]
    assert exc["type"] != "TimeoutExpired"


def forbid_userns_then_drop(uid: int, gid: int) -> dict[str, Any]:
    """In a fork: enter a user namespace whose user.max_user_namespaces is 0, as ``uid``.

    The limit is per user namespace, so the host is untouched.  Returns the
    outcome of ``isolate.run(["true"])`` there.
    """
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def setup() -> None:
        os.close(ready_r)
        os.close(go_w)
        libc_unshare(CLONE_NEWUSER)
        os.write(ready_w, b"1")
        assert os.read(go_r, 1) == b"1"  # the test process wrote our id maps
        Path("/proc/sys/user/max_user_namespaces").write_text("0")
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        prctl_set_dumpable()

    def write_maps(pid: int) -> None:
        os.close(ready_w)
        os.close(go_r)
        assert os.read(ready_r, 1) == b"1", "child failed to unshare its user namespace"
        Path(f"/proc/{pid}/uid_map").write_text(f"0 0 1\n{uid} {uid} 1\n")
        Path(f"/proc/{pid}/gid_map").write_text(f"0 0 1\n{gid} {gid} 1\n")
        os.write(go_w, b"1")

    warm_up()
    try:
        return run_in_fork(lambda: isolate.run(["true"], timeout=RUN_TIMEOUT),
                           setup=setup, on_fork=write_maps)
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            try:
                os.close(fd)
            except OSError:
                pass


def test_user_namespace_refused_raises_user_namespace_error(rootless: tuple[int, int]):
    """When the host refuses user namespaces, UserNamespaceError says so and how to allow it."""
    outcome = forbid_userns_then_drop(*rootless)
    assert not outcome["ok"], "a user namespace was created despite max_user_namespaces=0"
    exc = outcome["exc"]
    assert "UserNamespaceError" in exc["mro"], exc["traceback"]
    assert "PermissionError" in exc["mro"]
    assert "max_user_namespaces" in exc["str"] and "sysctl" in exc["str"], exc["str"]
