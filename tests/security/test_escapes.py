"""Escapes that runc, crun and bubblewrap have shipped, each as an attack
that must fail here.  docs/security.md maps every test to its CVE class.

Each attack runs twice: as root, and as the unprivileged user (rootless),
through the `caller` fixture (conftest).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import threading

import isolate
from conftest import (HOST_ROOT_MAPS, PYTHON, RUN_TIMEOUT, assert_no_leaks, busybox_rootfs, run_in_fork,
                      snapshot, unwrap)


def python_inside(code: str, **config) -> dict:
    """Run Python code in a container; it prints one JSON object."""
    r = isolate.run([PYTHON, "-c", code], capture_output=True, text=True,
                    timeout=RUN_TIMEOUT, **config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


#: Inside a container: try an operation, record "ok" or the errno's name.
TRY = """
import errno, json, os
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
"""


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- CVE-2019-5736: overwriting the runtime's binary through /proc/PID/exe ---

def test_proc_exe_not_writable(caller):
    """Neither /proc/self/exe (the host's python, bound read-only) nor
    /proc/1/exe (PID 1: undumpable, a sealed memfd) can be opened for writing,
    also by way of an O_PATH descriptor reopened through /proc/self/fd."""
    before = sha256(PYTHON)
    code = TRY + """
def reopen(path):
    fd = os.open(path, os.O_PATH)
    os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
print(json.dumps({p: [attempt(lambda: os.open(p, os.O_WRONLY)), attempt(lambda: reopen(p))]
                  for p in ("/proc/self/exe", "/proc/1/exe")}))
"""
    result = caller(lambda: python_inside(code))
    assert all(outcome != "ok" for outcomes in result.values() for outcome in outcomes), result
    assert sha256(PYTHON) == before


def test_pid1_exe_is_a_sealed_copy_even_with_all_capabilities():
    """With every capability PID 1 can be inspected, but its executable is
    isolate's own memfd, which cannot be written: no host binary behind it."""
    code = TRY + """
print(json.dumps({"exe": os.readlink("/proc/1/exe"),
                  "write": attempt(lambda: os.open("/proc/1/exe", os.O_WRONLY))}))
"""
    result = python_inside(code, capabilities="ALL")
    assert result["exe"].startswith("/memfd:isolate-init")
    assert result["write"] != "ok"


# --- CVE-2016-9962: reaching the runtime's memory through PID 1 or a joiner ---

def test_pid1_memory_and_fds_unreachable(caller):
    """PID 1 is undumpable: its memory, descriptors and root are closed to the
    workload, and ptrace fails."""
    code = TRY + """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def ptrace_attach():
    if libc.ptrace(16, 1, None, None) != 0:   # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
fds = os.listdir("/proc/1/fd")
print(json.dumps({
    "mem": attempt(lambda: os.open("/proc/1/mem", os.O_RDONLY)),
    "fd": attempt(lambda: [os.open(f"/proc/1/fd/{fd}", os.O_WRONLY) for fd in fds]) if fds else "none",
    "root": attempt(lambda: os.listdir("/proc/1/root/")),
    "ptrace": attempt(ptrace_attach),
}))
"""
    result = caller(lambda: python_inside(code))
    assert result == {"mem": "EACCES", "fd": "EACCES", "root": "EACCES", "ptrace": "EPERM"}, result


SCANNER = """
import json, os, sys, time
me = str(os.getpid())
found, end = [], time.monotonic() + float(sys.argv[1])
print("ready", flush=True)
while time.monotonic() < end:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid in (me, "1"):
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
            os.close(fd)
            if exe == sys.argv[2]:
                found.append(pid)
        except OSError:
            pass
print(json.dumps(found), flush=True)
"""


def test_joining_process_unreachable():
    """While exec() joins a running container, the joining process shares
    the caller's memory until it execs.  A process inside, with every
    capability, scans /proc for it all along: it must never get at its
    memory (the caller holds its memory undumpable meanwhile)."""
    # The scanner is a Python the container has (the caller's may be in a
    # hidden home); it looks for processes running the caller's.
    with isolate.Container([PYTHON, "-c", SCANNER, "8", PYTHON], stdout=isolate.PIPE,
                           capabilities="ALL") as c:
        assert c.process.stdout.readline() == b"ready\n"
        for _ in range(150):
            assert c.exec(["true"], timeout=RUN_TIMEOUT).returncode == 0
        found = json.loads(c.process.stdout.readline())
        c.wait(timeout=RUN_TIMEOUT)
    assert found == []


# --- CVE-2024-21626: a leaked descriptor or cwd pointing at the host ---------

def test_leaked_descriptor_is_no_way_out(caller, host_dir):
    """A host directory the caller left open (and inheritable) is closed
    before the workload's cwd and executable are resolved: neither
    cwd=/proc/self/fd/N nor an executable path through it works, and the
    workload sees only 0-2."""
    (host_dir / "escape").write_text("#!/bin/sh\necho escaped\n")
    (host_dir / "escape").chmod(0o755)

    def attack() -> dict:
        fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
        os.set_inheritable(fd, True)
        out = {}
        for name, kwargs in (("cwd", {"cwd": f"/proc/self/fd/{fd}"}),
                             ("exe", {"args": [f"/proc/self/fd/{fd}/escape"]})):
            args = kwargs.pop("args", ["pwd"])
            try:
                r = isolate.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT, **kwargs)
                out[name] = r.stdout
            except isolate.IsolateError as exc:
                out[name] = type(exc).__name__
        r = isolate.run(["sh", "-c", "ls /proc/$$/fd; readlink /proc/$$/cwd"],
                        capture_output=True, text=True, timeout=RUN_TIMEOUT)
        out["fds"] = r.stdout.split()
        os.close(fd)
        return out

    out = caller(attack)
    assert out["cwd"] == "SpawnError", out
    assert out["exe"] in ("SpawnError", "ExecutableNotFound"), out
    assert out["fds"] == ["0", "1", "2", "/"]


def test_library_descriptors_are_close_on_exec():
    """Every descriptor the library holds while a container runs is O_CLOEXEC."""
    before = set(os.listdir("/proc/self/fd"))
    with isolate.Container(["sleep", "10"], stdin=isolate.PIPE, stdout=isolate.PIPE) as c:
        new = set(os.listdir("/proc/self/fd")) - before
        flags = {}
        for fd in new:
            try:
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    flags[fd] = int(f.read().split("flags:")[1].split()[0], 8)
            except FileNotFoundError:
                pass   # the listing's own descriptor
        c.kill()
    assert len(flags) >= 3   # pidfd, report pipe, stdin and stdout pipes
    assert {fd: bool(f & os.O_CLOEXEC) for fd, f in flags.items()} == {fd: True for fd in flags}


# --- CVE-2022-27650: capabilities inherited through exec ---------------------

def test_no_inheritable_or_ambient_capabilities(caller):
    """CapInh and CapAmb are empty: a non-root workload gets nothing back
    from file capabilities or exec."""
    code = """
import json
status = dict(line.split(":\\t") for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({k: int(status[k], 16) for k in ("CapInh", "CapAmb", "CapEff")}))
"""
    assert caller(lambda: python_inside(code, user=0)) | {"CapEff": None} == \
        {"CapInh": 0, "CapAmb": 0, "CapEff": None}
    nonroot = caller(lambda: python_inside(code, user=1000))
    assert nonroot == {"CapInh": 0, "CapAmb": 0, "CapEff": 0}


# --- CVE-2021-30465: a mount target that is (or becomes) a symlink ----------

def test_symlinked_mount_target_stays_in_root(caller, host_dir):
    """A rootfs whose mount target is a symlink to "/" or to a host path:
    the target resolves inside the rootfs (where the mount lands, or the
    run is refused because the path does not exist there), and nothing is
    created on the host."""
    root = busybox_rootfs(host_dir)
    victim = host_dir / "victim"
    victim.mkdir()
    name = f"isolate-escape-{os.getpid()}"
    (root / "up").symlink_to("/")
    (root / "out").symlink_to(str(victim))
    os.chmod(root, 0o777)   # the rootless user creates the mount point

    def attack(target: str) -> str:
        try:
            return isolate.run(["/bin/busybox", "cat", "/proc/self/mountinfo"], rootfs=root,
                               mounts=[isolate.Tmpfs(target)], rootfs_readonly=False,
                               capture_output=True, text=True, timeout=RUN_TIMEOUT).stdout
        except isolate.SpawnError as exc:
            return f"refused: {exc.step}"

    before = snapshot()
    up = caller(lambda: attack(f"/up/{name}"))
    out = caller(lambda: attack(f"/out/{name}"))
    assert f"/{name}" in {line.split()[4] for line in up.splitlines()}, up
    assert out == f"refused: mkdir('/out/{name}')", out    # the victim's path is not in the rootfs
    assert list(victim.iterdir()) == []
    assert not os.path.lexists(f"/{name}")
    assert_no_leaks(before, snapshot())


_libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2


def test_mount_target_swapped_during_setup(host_dir):
    """A process outside keeps swapping a directory with a symlink to a host
    directory (renameat2 RENAME_EXCHANGE) while containers mount over it
    and create a file in it: nothing ever lands on the host."""
    root = busybox_rootfs(host_dir)
    victim = host_dir / "victim"
    victim.mkdir()
    (root / "mnt").mkdir()
    (root / "swap").symlink_to(str(victim))
    source = host_dir / "file"
    source.write_text("bound\n")
    mounts = [isolate.Tmpfs("/mnt/t"), isolate.Bind(source, "/mnt/f")]
    stop = threading.Event()
    isolate.run(["true"])   # PID 1's memfd is opened once, on first use

    def swap() -> None:
        a, b = os.fsencode(root / "mnt"), os.fsencode(root / "swap")
        while not stop.is_set():
            _libc.renameat2(-100, a, -100, b, RENAME_EXCHANGE)

    swapper = threading.Thread(target=swap)
    before = snapshot()
    swapper.start()
    outcomes = set()
    try:
        for _ in range(60):
            try:
                isolate.run(["/bin/busybox", "true"], rootfs=root, mounts=mounts,
                            rootfs_readonly=False, timeout=RUN_TIMEOUT)
                outcomes.add("ran")
            except isolate.SpawnError:
                outcomes.add("refused")
    finally:
        stop.set()
        swapper.join()
    assert outcomes <= {"ran", "refused"} and outcomes
    assert list(victim.iterdir()) == []
    assert_no_leaks(before, snapshot())


# --- CVE-2025-31133 and the /dev classes: symlinks in the rootfs's /dev ------

def test_dev_symlinks_in_rootfs(caller, host_dir):
    """/dev/null and /dev/pts/0 replaced by symlinks to host files: the
    container's /dev is a fresh tmpfs, its devices the host's, and masked
    paths are covered by the host's /dev/null, never the rootfs's."""
    root = busybox_rootfs(host_dir)
    victim = host_dir / "victim"
    victim.write_text("untouched\n")
    (root / "dev" / "null").symlink_to(str(victim))
    (root / "dev" / "pts").mkdir()
    (root / "dev" / "pts" / "0").symlink_to(str(victim))
    script = ("echo pwned > /dev/null; echo pwned > /dev/pts/0; "
              "busybox stat -c '%F %t:%T' /dev/null /proc/timer_list; ls /dev/pts")
    os.chmod(host_dir, 0o755)
    out = caller(lambda: isolate.run(["/bin/busybox", "sh", "-c", script], rootfs=root,
                                     capture_output=True, text=True, timeout=RUN_TIMEOUT).stdout)
    assert out.split("\n")[:2] == ["character special file 1:3"] * 2
    assert out.split()[-1] == "ptmx"
    assert victim.read_text() == "untouched\n"


def test_dev_itself_a_symlink(caller, host_dir):
    """A rootfs whose /dev is a symlink to a host directory: the container's
    /dev is built inside the rootfs (or the run is refused), never there."""
    root = busybox_rootfs(host_dir)
    victim = host_dir / "victim"
    victim.mkdir()
    (root / "dev").rmdir()
    (root / "dev").symlink_to(str(victim))
    os.chmod(host_dir, 0o755)

    def attack() -> str:
        try:
            return isolate.run(["/bin/busybox", "stat", "-c", "%t:%T", "/dev/null"], rootfs=root,
                               capture_output=True, text=True, timeout=RUN_TIMEOUT).stdout
        except isolate.SpawnError as exc:
            return f"refused: {exc}"

    before = snapshot()
    out = caller(attack)
    assert out == "1:3\n" or out.startswith("refused: mount('tmpfs', '/dev'"), out
    assert list(victim.iterdir()) == []
    assert_no_leaks(before, snapshot())


# --- CVE-2017-5226: TIOCSTI into the caller's terminal ---------------------

def _tiocsti_from_container(**config) -> str:
    """In a new session whose controlling terminal is a pty, run a container
    on that terminal that pushes a command into its input queue."""
    def body() -> str:
        master, slave = os.openpty()
        os.setsid()
        tty = os.open(os.ttyname(slave), os.O_RDWR)   # becomes our controlling terminal
        code = ("import fcntl, termios\n"
                "try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('injected')\n"
                "except OSError as e:\n    print(e.errno)\n")
        r = isolate.run([PYTHON, "-c", code], stdin=tty, capture_output=True, text=True,
                        timeout=RUN_TIMEOUT, **config)
        return r.stdout.strip()
    return unwrap(run_in_fork(body))


def test_tiocsti_blocked_by_new_session():
    """The workload runs in a session of its own, so the caller's terminal
    is not its controlling terminal and TIOCSTI fails (EPERM) even with
    the seccomp filter off; sharing the session shows the difference."""
    import errno
    assert _tiocsti_from_container(seccomp=None) == str(errno.EPERM)
    assert _tiocsti_from_container(seccomp=None, new_session=False) == "injected"


def test_tiocsti_blocked_by_seccomp():
    """Even in the caller's session, the default seccomp filter refuses TIOCSTI."""
    import errno
    assert _tiocsti_from_container(new_session=False) == str(errno.EPERM)


# --- masked and read-only paths ---------------------------------------------

def test_masked_and_readonly_paths(caller):
    """Masked files read empty, masked directories are empty, and the
    kernel's tunables cannot be written even where a namespace owns them."""
    from isolate.security import masked
    present = [p for p in masked.MASKED if os.path.exists(p)]
    assert present, "no masked path exists on this kernel"
    code = TRY + f"""
present = {present!r}
def content(p):
    return os.listdir(p) if os.path.isdir(p) else open(p, "rb").read().decode()
print(json.dumps({{
    "masked": {{p: content(p) for p in present}},
    "hostname": attempt(lambda: open("/proc/sys/kernel/hostname", "w").write("x")),
    "sysrq": attempt(lambda: open("/proc/sysrq-trigger", "w").write("h")),
    # Root inside, mapped to the host's root, passes the permission check of
    # the host's kernel.core_pattern (a helper the kernel runs as host root).
    # Writing back its own value changes nothing if this ever succeeds.
    "core_pattern": attempt(lambda: open("/proc/sys/kernel/core_pattern", "w").write(
        open("/proc/sys/kernel/core_pattern").read())),
}}))
"""
    result = caller(lambda: python_inside(code))
    assert all(v in ("", []) for v in result["masked"].values()), result
    assert result["hostname"] == result["core_pattern"] == "EROFS"
    assert result["sysrq"] in ("EROFS", "ENOENT")   # ENOENT: a kernel without magic sysrq


def test_masking_can_be_turned_off():
    """masked_paths=() and readonly_paths=() leave /proc as the kernel shows it."""
    code = TRY + """
print(json.dumps({"timer_list": len(open("/proc/timer_list").read()),
                  "hostname": attempt(lambda: open("/proc/sys/kernel/hostname", "w").write("x"))}))
"""
    # As the host's root (a root caller may map it): only the masks stood in the way.
    result = python_inside(code, masked_paths=(), readonly_paths=(), **HOST_ROOT_MAPS)
    assert result == {"timer_list": result["timer_list"], "hostname": "ok"}
    assert result["timer_list"] > 0
