"""The seccomp filter in real containers: the default profile refuses what
Docker's refuses, adapts to the kept capabilities, and custom profiles and
actions work.  (tests/security/test_seccomp_compile.py tests the compiler itself.)
"""
from __future__ import annotations

import errno
import json
import signal

import pytest

import isolate
from isolate.security import seccomp
from conftest import PYTHON, RUN_TIMEOUT, drop_to, run_in_fork, unwrap

#: Inside a container: make raw system calls, print {name: errno or 0}.
PROBE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if rc == -1 else 0
calls = {
    "keyctl": lambda: call(250, 0, 0),                      # KEYCTL_GET_KEYRING_ID
    "add_key": lambda: call(248, 0, 0, 0, 0, 0),
    "kexec_load": lambda: call(246, 0, 0, 0, 0),
    "mount": lambda: call(165, 0, 0, 0, 0, 0),
    "unshare_user": lambda: call(272, 0x10000000),
    "clone_newns": lambda: call(56, 0x20000 | 17, 0, 0, 0, 0),
    "clone3": lambda: call(435, 0, 0),
    "open_by_handle_at": lambda: call(304, -1, 0, 0),
    "getpid": lambda: 0 if libc.syscall(ctypes.c_long(39)) == os.getpid() else -1,
}
print(json.dumps({name: fn() for name, fn in calls.items() if name in sys.argv[1:]}))
"""


def probe(*names: str, **config) -> dict:
    r = isolate.run([PYTHON, "-c", PROBE, *names], capture_output=True, text=True,
                    timeout=RUN_TIMEOUT, **config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


DENIED = ["keyctl", "add_key", "kexec_load", "mount", "unshare_user", "clone_newns",
          "open_by_handle_at"]


def test_default_profile_refuses_dangerous_calls():
    """keyctl, add_key, kexec_load, mount, unshare(CLONE_NEWUSER), clone
    with a namespace flag and open_by_handle_at fail with EPERM (from the
    filter: the kernel's own answers would differ, e.g. keyctl works);
    clone3 gets ENOSYS; ordinary calls work."""
    result = probe(*DENIED, "clone3", "getpid")
    assert result == {**{name: errno.EPERM for name in DENIED}, "clone3": errno.ENOSYS, "getpid": 0}


def test_without_the_filter_the_kernel_answers():
    """The control: with seccomp=None, keyctl succeeds and clone3 is the
    kernel's (EFAULT or EINVAL for a NULL argument, not ENOSYS)."""
    result = probe("keyctl", "clone3", seccomp=None)
    assert result["keyctl"] != errno.EPERM
    assert result["clone3"] != errno.ENOSYS


def test_sys_admin_allows_the_mount_family():
    """Keeping SYS_ADMIN lifts the mount/unshare/clone rules, as in Docker."""
    result = probe("mount", "unshare_user", "clone3", "keyctl", cap_add=["SYS_ADMIN"])
    assert result["mount"] != errno.EPERM            # EFAULT: the kernel saw the NULL arguments
    assert result["unshare_user"] in (0, errno.EINVAL)   # EINVAL: a multi-threaded caller
    assert result["clone3"] != errno.ENOSYS
    assert result["keyctl"] == errno.EPERM           # not a capability matter


def test_x32_system_call_kills():
    """An x32 system call (number with bit 0x40000000) kills the process."""
    code = ("import ctypes; libc = ctypes.CDLL(None)\n"
            "libc.syscall(ctypes.c_long(0x40000000 | 39))\nprint('survived')")
    r = isolate.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == -signal.SIGSYS and "survived" not in r.stdout


def test_custom_profiles_and_actions():
    """deny() with an errno, KILL, and allow_only()."""
    assert probe("getpid", "keyctl",
                 seccomp=isolate.Seccomp.deny(["keyctl"], seccomp.Errno(errno.EACCES))) == \
        {"getpid": 0, "keyctl": errno.EACCES}
    r = isolate.run(["sh", "-c", "echo before; cat /dev/null; echo after"], capture_output=True,
                    text=True, timeout=RUN_TIMEOUT,
                    seccomp=isolate.Seccomp.deny(["openat"], seccomp.KILL))
    assert r.returncode == -signal.SIGSYS


#: Enough for /bin/true to start and exit.
TRUE_NEEDS = ["execve", "exit_group", "brk", "mmap", "munmap", "mprotect", "arch_prctl",
              "access", "openat", "newfstatat", "fstat", "read", "close", "pread64",
              "set_tid_address", "set_robust_list", "rseq", "prlimit64", "getrandom"]


@pytest.mark.parametrize("init", [True, False])
def test_allow_only_refuses_everything_else(init):
    """An allow list runs what it allows; left out of it, execve itself
    gets the default action (ENOSYS), reported as the failing step even
    though the filter also forbids the workload to write its report."""
    ok = isolate.run(["/bin/true"], seccomp=isolate.Seccomp.allow_only(TRUE_NEEDS),
                     init=init, timeout=RUN_TIMEOUT)
    assert ok.returncode == 0
    no_exec = isolate.Seccomp.allow_only([name for name in TRUE_NEEDS if name != "execve"])
    with pytest.raises(isolate.SpawnError) as info:
        isolate.run(["/bin/true"], seccomp=no_exec, init=init, timeout=RUN_TIMEOUT)
    assert info.value.errno == errno.ENOSYS and info.value.step.startswith("exec")


def test_filter_without_no_new_privs():
    """Without no_new_privs the filter is installed before the change of
    credentials (it needs CAP_SYS_ADMIN) and still binds a non-root workload."""
    result = probe("keyctl", "getpid", no_new_privs=False, user=1000)
    assert result == {"keyctl": errno.EPERM, "getpid": 0}


def test_bad_profiles_raise_before_clone():
    with pytest.raises(isolate.ConfigError) as info:
        isolate.run(["true"], seccomp=isolate.Seccomp.deny(["no_such_call"]))
    assert info.value.field == "seccomp" and "no_such_call" in str(info.value)
    with pytest.raises(isolate.ConfigError) as info:
        isolate.Config(seccomp="strict")
    assert info.value.field == "seccomp"


def test_default_profile_rootless(rootless):
    """The same refusals for an unprivileged caller."""
    isolate.run(["true"])
    result = unwrap(run_in_fork(lambda: probe(*DENIED, "clone3", "getpid"), setup=drop_to(*rootless)))
    assert result == {**{name: errno.EPERM for name in DENIED}, "clone3": errno.ENOSYS, "getpid": 0}
