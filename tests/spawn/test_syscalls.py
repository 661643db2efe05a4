"""The thin syscall layer (isolate._spawn.syscalls): real calls, checked results.

Each wrapper must do what its syscall does and, on failure, raise OSError
carrying errno and the path.  Calls that change the calling process run in
a forked child (run_in_fork) so the test process keeps its namespaces.
"""
from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from isolate._spawn import syscalls
from conftest import run_in_fork, unwrap


def _in_new_mount_ns(fn):
    def setup() -> None:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    return unwrap(run_in_fork(fn, setup=setup))


def test_unshare_gives_a_new_namespace() -> None:
    """unshare(CLONE_NEWUTS) moves the caller: its uts inode changes."""
    before = os.readlink("/proc/self/ns/uts")

    def probe() -> str:
        syscalls.unshare(syscalls.CLONE_NEWUTS)
        syscalls.sethostname("sys-test")
        return os.readlink("/proc/self/ns/uts") + " " + os.uname().nodename

    inode, name = unwrap(run_in_fork(probe)).split()
    assert inode != before and name == "sys-test"
    assert os.uname().nodename != "sys-test"


def test_mount_umount_and_setattr(tmp_path) -> None:
    """mount a tmpfs, make it read-only with mount_setattr, unmount it."""
    def probe() -> list[str]:
        seen = []
        syscalls.mount("tmpfs", str(tmp_path), "tmpfs", 0, "size=1m")
        (tmp_path / "f").write_text("x")
        seen.append("mounted")
        syscalls.mount_setattr(str(tmp_path), syscalls.MOUNT_ATTR_RDONLY)
        try:
            (tmp_path / "g").write_text("x")
        except OSError as exc:
            seen.append(errno.errorcode[exc.errno])
        syscalls.umount2(str(tmp_path), syscalls.MNT_DETACH)
        seen.append(str((tmp_path / "f").exists()))
        return seen

    assert _in_new_mount_ns(probe) == ["mounted", "EROFS", "False"]


def test_failures_raise_oserror_with_errno_and_path(tmp_path) -> None:
    """A failing call names the syscall, errno and the path."""
    missing = str(tmp_path / "missing")
    with pytest.raises(OSError) as info:
        syscalls.umount2(missing)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == missing
    with pytest.raises(OSError) as info:
        syscalls.mount("tmpfs", missing, "tmpfs")
    assert info.value.errno == errno.ENOENT and "mount" in str(info.value)
    with pytest.raises(OSError) as info:
        syscalls.setns(-1)
    assert info.value.errno == errno.EBADF


def test_pivot_root(tmp_path) -> None:
    """pivot_root into a tmpfs: '/' then holds only what we put there."""
    def probe() -> list[str]:
        new_root = str(tmp_path)
        syscalls.mount("tmpfs", new_root, "tmpfs")
        os.mkdir(os.path.join(new_root, "old"))
        os.mkdir(os.path.join(new_root, "marker"))
        syscalls.pivot_root(new_root, os.path.join(new_root, "old"))
        os.chdir("/")
        syscalls.umount2("/old", syscalls.MNT_DETACH)
        return sorted(os.listdir("/"))

    assert _in_new_mount_ns(probe) == ["marker", "old"]


def test_setns_joins_a_namespace() -> None:
    """setns on a child's uts namespace fd makes us see its hostname."""
    def probe() -> str:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            syscalls.unshare(syscalls.CLONE_NEWUTS)
            syscalls.sethostname("joined")
            os.write(w, b"x")
            time.sleep(30)
            os._exit(0)
        os.read(r, 1)
        fd = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY)
        try:
            syscalls.setns(fd, syscalls.CLONE_NEWUTS)
        finally:
            os.close(fd)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return os.uname().nodename

    assert unwrap(run_in_fork(probe)) == "joined"


def test_pidfd_open_and_send_signal() -> None:
    """A pidfd signals exactly its process."""
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    fd = syscalls.pidfd_open(pid)
    try:
        syscalls.pidfd_send_signal(fd, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
