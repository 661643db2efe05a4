"""Shared helpers for the isolate test suite.

Every test here runs against the real kernel: real namespaces, mounts and
processes.  Nothing that the library does with a syscall is faked.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import pwd
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil
import pytest

try:
    from hypothesis import settings as _hyp_settings

    _hyp_settings.register_profile("isolate", database=None, print_blob=True)
    _hyp_settings.load_profile("isolate")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass

CI = os.environ.get("CI") == "true"

#: The repository's root (tests live in folders beneath tests/).
REPO = Path(__file__).resolve().parent.parent

#: The interpreter to run inside containers: the host root's own.
#: sys.executable may be a venv under /tmp (the container's /tmp is
#: private) or an interpreter under /root or /home (pyenv), which a default
#: container hides.
PYTHON = os.path.realpath("/usr/bin/python3") if os.path.exists("/usr/bin/python3") \
    else os.path.realpath(sys.executable)

#: Run inside a container: what confines this process (socket() allowed,
#: RLIMIT_NOFILE, no_new_privs, bounding set), printed as JSON.
POLICY_PROBE = """
import json, resource, socket
try:
    socket.socket().close()
    sock = "ok"
except OSError as exc:
    sock = exc.errno
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"socket": sock, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
                  "nnp": status["NoNewPrivs"].strip(), "capbnd": status["CapBnd"].strip()}))
"""

#: Generous bound for any single container run, only there to avoid hangs.
RUN_TIMEOUT = 30.0

#: Upper bound when polling for an asynchronous kernel effect (process gone...).
SETTLE_TIMEOUT = 10.0


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cgroup_v2: needs a cgroup v2 (unified) host; "
                            "CI runs these in ../shared/tools/cgroup2-vm")
    config.addinivalue_line("markers", "cgroup_v1: needs a cgroup v1 (or hybrid) host, "
                            "which the main CI run is")


def pytest_collection_modifyitems(config, items) -> None:
    """Deselect (not skip) the tests of the other cgroup version: CI runs
    both, v1 on this host and v2 in its VM lane, and the summary counts them."""
    from isolate.cgroups import interface
    other = "cgroup_v1" if interface.unified() else "cgroup_v2"
    deselected = [item for item in items if item.get_closest_marker(other)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(other)]


def require(condition: object, reason: str) -> None:
    """Skip the calling test unless ``condition`` holds; in CI, fail instead.

    Where CI=true a missing feature must turn the run red, so a green CI means
    every feature was exercised.
    """
    if condition:
        return
    if CI:
        pytest.fail(f"required feature missing (CI=true, not skipping): {reason}")
    pytest.skip(reason)


def marker() -> str:
    """A unique token to recognise this test's processes, files or mounts."""
    return "isolate-test-" + uuid.uuid4().hex[:12]


def unique_sleep_arg() -> str:
    """A ``sleep`` duration that no other process on the host will share.

    ``sleep 1000.<random>`` lets a test find its container's processes on the
    host by command line alone.
    """
    return f"1000.{uuid.uuid4().int % 10**9:09d}"


def pids_with_cmdline(token: str) -> list[int]:
    """Host pids whose command line contains ``token`` (zombies excluded)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(token in part for part in proc.info["cmdline"] or ()):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def host_ns(name: str) -> str:
    """The test process's namespace link for ``name`` (e.g. ``'net:[4026531840]'``)."""
    return os.readlink(f"/proc/self/ns/{name}")


def host_mountinfo() -> list[str]:
    """The host's (the test process's) mount table lines."""
    return Path("/proc/self/mountinfo").read_text().splitlines()


def open_fds() -> set[str]:
    """This process's open fds, each as ``"N -> target"``."""
    result = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            result.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except FileNotFoundError:  # the fd listdir itself used
            pass
    return result


def child_processes() -> list[str]:
    """Every descendant of the test process, zombies included, described."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            out.append(f"{child.pid} {child.status()} {child.cmdline()}")
        except psutil.NoSuchProcess:
            continue
    return out


#: Entries other programs on a shared dev machine create concurrently.
FOREIGN_TEMP = ("pytest-of", "isolate-bench", "isolate-test")


@pytest.fixture(scope="session", autouse=True)
def private_tempdir() -> Iterable[str]:
    """Point tempfile at a directory only this test session uses.

    Leak checks then see exactly what isolate (through tempfile) leaves there,
    undisturbed by other programs writing to /tmp at the same time.
    """
    import shutil

    path = tempfile.mkdtemp(prefix="isolate-tests-session-")
    old = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield path
    finally:
        tempfile.tempdir = old
        shutil.rmtree(path, ignore_errors=True)


def temp_entries() -> set[str]:
    """Entries in the places a runtime could leave temporary dirs or files."""
    entries = set()
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm", "/run"):
        try:
            entries.update(os.path.join(base, e) for e in os.listdir(base))
        except FileNotFoundError:
            continue
    return entries


def cgroup_dirs() -> set[str]:
    """isolate's cgroups where it makes them: beneath this process's own
    cgroup in every hierarchy (v1) or in the unified one (v2)."""
    found = set()
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    with open("/proc/self/cgroup") as f:
        own = [line.rstrip("\n").split(":", 2) for line in f]
    for fields in mounts:
        tail = fields[fields.index("-") + 1:]
        if tail[0] == "cgroup2" and fields[4] != "/sys/fs/cgroup/unified":
            paths = [p for _, c, p in own if not c]
        elif tail[0] == "cgroup":
            paths = [p for _, c, p in own if set(c.split(",")) & set(tail[2].split(","))]
        else:
            continue
        for path in paths:
            base = fields[4] + path
            found.update(os.path.join(base, n) for n in os.listdir(base) if n.startswith("isolate-"))
    return found


def snapshot() -> dict[str, Any]:
    """Everything a container could leak: fds, mounts, processes, temp
    entries, cgroups."""
    return {
        "cgroups": cgroup_dirs(),
        "fds": open_fds(),
        "mounts": host_mountinfo(),
        "children": child_processes(),
        "temp": {e for e in temp_entries()
                 if not any(f in os.path.basename(e) for f in FOREIGN_TEMP)},
    }


def assert_no_leaks(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Fail naming exactly what appeared (or vanished) between two snapshots."""
    problems = []
    for key in ("fds", "temp", "cgroups"):
        added = sorted(set(after[key]) - set(before[key]))
        if added:
            problems.append(f"new {key}: {added}")
    if after["mounts"] != before["mounts"]:
        new = [m for m in after["mounts"] if m not in before["mounts"]]
        gone = [m for m in before["mounts"] if m not in after["mounts"]]
        problems.append(f"host mount table changed; new lines: {new}; gone: {gone}")
    if after["children"]:
        problems.append(f"leftover child processes: {after['children']}")
    assert not problems, "; ".join(problems)


# --- running code in a forked child (rootless, confined) -------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE = 4
CLONE_NEWUSER = 0x10000000


def prctl_set_dumpable() -> None:
    """Make the current process dumpable again (setuid cleared it)."""
    if _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "prctl(PR_SET_DUMPABLE)")


def libc_unshare(flags: int) -> None:
    """unshare(2) through libc (os.unshare needs Python 3.12)."""
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "unshare")


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """A picklable summary of an exception raised in a forked child."""
    return {
        "type": type(exc).__name__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "str": str(exc),
        "field": getattr(exc, "field", None),
        "step": getattr(exc, "step", None),
        "errno": getattr(exc, "errno", None),
        "traceback": traceback.format_exc(),
    }


def run_in_fork(
    fn: Callable[[], Any],
    setup: Callable[[], None] | None = None,
    timeout: float = 60.0,
    on_fork: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``fn`` in a forked child after ``setup``; return its outcome.

    ``on_fork(pid)`` runs in the parent right after the fork (to help the
    child's setup, e.g. by writing its id maps).

    The outcome is ``{"ok": True, "value": ...}`` or
    ``{"ok": False, "exc": describe_exception(...)}``.  The child is SIGKILLed
    (and the test fails) if it does not answer within ``timeout`` seconds.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(rfd)
            try:
                if setup is not None:
                    setup()
                outcome = {"ok": True, "value": fn()}
            except BaseException as exc:  # noqa: BLE001 - reported to parent
                outcome = {"ok": False, "exc": describe_exception(exc)}
            data = pickle.dumps(outcome)
            with os.fdopen(wfd, "wb") as f:
                f.write(data)
        except BaseException:  # noqa: BLE001
            code = 70
        finally:
            os._exit(code)
    os.close(wfd)
    if on_fork is not None:
        try:
            on_fork(pid)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(rfd)
            raise
    return _collect_fork(pid, rfd, timeout)


def _collect_fork(pid: int, rfd: int, timeout: float) -> dict[str, Any]:
    """Read a forked child's pickled outcome and reap it, bounded in time."""
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([rfd], [], [], max(left, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"forked helper did not finish within {timeout}s")
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
    _, status = os.waitpid(pid, 0)
    assert chunks, f"forked helper died without answering (wait status {status})"
    return pickle.loads(b"".join(chunks))


def unwrap(outcome: dict[str, Any]) -> Any:
    """Return a forked child's value, or fail showing its exception."""
    if not outcome["ok"]:
        exc = outcome["exc"]
        pytest.fail(f"child raised {exc['type']}: {exc['str']}\n{exc['traceback']}")
    return outcome["value"]


# --- a pids cgroup in which no process can be created -----------------------

PIDS_CGROUP_ROOT = Path("/sys/fs/cgroup/pids")


def pids_cgroup_available() -> bool:
    """True when a cgroup v1 pids hierarchy (or v2 with pids) is writable here."""
    return (PIDS_CGROUP_ROOT / "cgroup.procs").exists() and os.geteuid() == 0


def run_without_clone(fn: Callable[[], Any], timeout: float = 60.0) -> dict[str, Any]:
    """Run ``fn`` in a child confined to a pids cgroup with ``pids.max = 1``.

    In there every fork/clone fails with EAGAIN, so if ``fn`` raises a
    validation error the validation provably happened before any process was
    created.
    """
    group = PIDS_CGROUP_ROOT / marker()
    group.mkdir()
    try:
        (group / "pids.max").write_text("1")

        def confine() -> None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

        return run_in_fork(fn, setup=confine, timeout=timeout)
    finally:
        wait_until(lambda: not (group / "cgroup.procs").read_text().strip())
        group.rmdir()


@pytest.fixture
def host_dir() -> Iterable[Path]:
    """A fresh host directory visible inside default containers.

    (pytest's tmp_path lives under /tmp, which every container replaces with
    its own private tmpfs, so it cannot be used to share files.)
    """
    path = Path(tempfile.mkdtemp(prefix="isolate-test-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def give_to_container_root(path: Path | str) -> None:
    """Let a default container's root write `path`: a root caller's
    containers run as unprivileged host ids (isolate.security.idmaps), not as the
    host's root; a rootless caller's container root is the caller."""
    if os.geteuid() == 0:
        from isolate.security import idmaps
        os.chown(path, idmaps.container_ids("uid")[0][1], idmaps.container_ids("gid")[0][1])


#: Config keywords that make a root caller's container root the host's root
#: again (what a test of the host-root case needs to show a defence holds
#: even then); empty for a rootless caller.
HOST_ROOT_MAPS = ({"uid_map": [(0, 0, 1)], "gid_map": [(0, 0, 1)]} if os.geteuid() == 0 else {})


# --- the unprivileged user for rootless tests --------------------------------

ROOTLESS_USER = "isolate-rootless"


def drop_to(uid: int, gid: int) -> Callable[[], None]:
    """A run_in_fork setup turning the child into uid/gid, dumpable again
    (setuid cleared it; /proc/self/uid_map must stay ours to write)."""
    def setup() -> None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        prctl_set_dumpable()
    return setup


@pytest.fixture(scope="session")
def rootless_ids() -> tuple[int, int]:
    """(uid, gid) of an unprivileged system user, created if missing."""
    require(os.geteuid() == 0, "creating the rootless test user needs root")
    try:
        pw = pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", ROOTLESS_USER], check=True)
        pw = pwd.getpwnam(ROOTLESS_USER)
    return pw.pw_uid, pw.pw_gid


@pytest.fixture(scope="session")
def rootless(rootless_ids: tuple[int, int]) -> tuple[int, int]:
    """The rootless user's ids, once we know the host lets it create a user namespace."""
    def probe() -> bool:
        libc_unshare(CLONE_NEWUSER)
        return True
    require(run_in_fork(probe, setup=drop_to(*rootless_ids))["ok"],
            "the host forbids unprivileged user namespaces")
    return rootless_ids


@pytest.fixture(params=["root", "rootless"])
def caller(request) -> Callable[[Callable[[], Any]], Any]:
    """Call a function as root, or in a child dropped to the rootless user."""
    import isolate
    isolate.run(["true"])   # load the native module and PID 1's memfd before any snapshot
    if request.param == "root":
        return lambda fn: fn()
    ids = request.getfixturevalue("rootless")
    return lambda fn: unwrap(run_in_fork(fn, setup=drop_to(*ids)))


# --- a minimal root filesystem ------------------------------------------------

def busybox_rootfs(parent: Path) -> Path:
    """A minimal root directory under `parent`: a static busybox (with sh)
    and the usual mount points."""
    import shutil

    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox is not installed (apt-get install busybox-static)")
    root = parent / "root"
    for d in ("bin", "proc", "dev", "tmp", "sys"):
        (root / d).mkdir(parents=True)
    shutil.copy2(str(busybox), root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    return root
