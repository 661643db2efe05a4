"""isolate.Namespace: identity, entered(), create/pin/unpin, and run(join=...).

Everything here uses real namespaces: /proc/PID/ns files, setns(2) from a
thread, bind-mounted (pinned) namespace files, containers that join them.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import isolate
from conftest import (
    drop_to,
    PYTHON,
    RUN_TIMEOUT,
    host_mountinfo,
    host_ns,
    open_fds,
    run_in_fork,
    unique_sleep_arg,
    unwrap,
    wait_until,
)

KINDS = ("user", "mount", "pid", "uts", "ipc", "net", "cgroup", "time")
PROC_NAME = {"mount": "mnt"}            # isolate kind -> /proc/PID/ns name, where they differ
THREAD_JOINABLE = ("net", "uts", "ipc", "cgroup")
NOT_THREAD_JOINABLE = ("user", "mount", "pid", "time")

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

#: A TCP server answering "pong:" + what it got; prints its port once listening.
SERVER = r"""
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"pong:" + c.recv(100))
    c.close()
"""

#: Connects to the server, prints its answer and this process's net namespace.
CLIENT = r"""
import os, socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as c:
    c.sendall(sys.argv[2].encode())
    print(c.recv(100).decode())
print(os.readlink("/proc/self/ns/net"))
"""


# --- helpers ---------------------------------------------------------------

def proc_name(kind: str) -> str:
    """The name of ``kind`` under /proc/PID/ns."""
    return PROC_NAME.get(kind, kind)


def thread_interfaces() -> list[str]:
    """Interface names of the calling thread's net namespace (not the thread group leader's)."""
    lines = Path("/proc/thread-self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


def lo_is_up() -> bool:
    """Whether ``lo`` is UP in the calling thread's net namespace (SIOCGIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
    return bool(struct.unpack("16sH22x", ifr)[1] & IFF_UP)


def set_lo_down() -> None:
    """Clear IFF_UP on ``lo`` in the calling thread's net namespace (needs root)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", ifr)[1] & ~IFF_UP
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags))


def read_line(stream: Any, timeout: float = RUN_TIMEOUT) -> str:
    """One line from a pipe, bounded in time (fails instead of hanging)."""
    fd = stream.fileno()
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no complete line within {timeout}s (got {data!r})"
        chunk = os.read(fd, 1)
        assert chunk, f"EOF before a complete line (got {data!r})"
        data += chunk
    return data.decode().strip()


def bring_lo_up(ns: isolate.Namespace) -> None:
    """Set ``lo`` up in a joined net namespace, from a container (joined ones are used as is)."""
    isolate.run(["ip", "link", "set", "lo", "up"], join=[ns],
                namespaces=isolate.ALL_NAMESPACES - {"user"}, capabilities=["NET_ADMIN"],
                capture_output=True, check=True, timeout=RUN_TIMEOUT)


def mount_points() -> set[str]:
    """The host's mount points (field 5 of mountinfo)."""
    return {line.split()[4] for line in host_mountinfo()}


def force_unpin(path: Path) -> None:
    """Remove a pin made by another process (test cleanup): lazy unmount, unlink."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(os.fsencode(path), 2)   # MNT_DETACH; ignore "not mounted"
    path.unlink(missing_ok=True)


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a new thread, return its result or re-raise its exception."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["exc"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join(RUN_TIMEOUT)
    assert not t.is_alive(), "thread did not finish"
    if "exc" in result:
        raise result["exc"]
    return result["value"]


def sleeper(**config: Any) -> isolate.Container:
    """A container that just sleeps until closed."""
    return isolate.Container(["sleep", unique_sleep_arg()], **config)


# --- identity --------------------------------------------------------------

def test_of_self_equals_current():
    """Namespace.of(own pid) and Namespace.current() name the same namespace, /proc's (dev, inode)."""
    st = os.stat("/proc/self/ns/net")
    with isolate.Namespace.of(os.getpid(), "net") as a, isolate.Namespace.current("net") as b:
        assert a == b
        assert a.kind == b.kind == "net"
        assert (a.dev, a.inode) == (b.dev, b.inode) == (st.st_dev, st.st_ino)
        assert a.fd != b.fd, "each object owns its own fd"
        assert a != object() and not (a == "net")


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "time"])
def test_container_namespace_differs_from_ours(kind: str):
    """A default container's namespace of every kind differs from ours, and matches /proc/PID/ns."""
    with sleeper() as c:
        with isolate.Namespace.of(c.pid, kind) as theirs, isolate.Namespace.current(kind) as ours:
            assert theirs.kind == kind
            assert theirs != ours
            assert theirs.inode == os.stat(f"/proc/{c.pid}/ns/{proc_name(kind)}").st_ino


def test_container_time_namespace_is_its_own_once_init_runs():
    """A container's PID 1 gets a new time namespace, effective at its exec of the init.

    (start() returns while PID 1 may still be exec'ing the init program,
    docs/api.md says so; once /proc/PID/comm reads isolate-init it is there.)"""
    with isolate.Namespace.current("time") as ours:
        for _ in range(20):
            with sleeper() as c:
                comm = Path(f"/proc/{c.pid}/comm")
                assert wait_until(lambda: comm.read_text() == "isolate-init\n")
                with isolate.Namespace.of(c.pid, "time") as theirs:
                    assert theirs != ours


def test_mnt_alias_is_mount():
    """"mnt" (the /proc name) is an alias: it yields kind "mount", equal to Namespace.of(pid, "mount")."""
    with isolate.Namespace.of(os.getpid(), "mnt") as a, \
            isolate.Namespace.of(os.getpid(), "mount") as b, \
            isolate.Namespace.current("mnt") as c:
        assert a.kind == b.kind == c.kind == "mount"
        assert a == b == c


@pytest.mark.parametrize("kind", ["bogus", "network", "", "pid_for_children"])
def test_bad_kind_raises_config_error(kind: str):
    """An unknown kind raises ConfigError naming the field "kind", from of(), current() and create()."""
    for call in (lambda: isolate.Namespace.of(os.getpid(), kind),
                 lambda: isolate.Namespace.current(kind),
                 lambda: isolate.Namespace.create(kind)):
        with pytest.raises(isolate.ConfigError) as info:
            call()
        assert info.value.field == "kind"


@pytest.mark.parametrize("kind", KINDS)
def test_from_path_reads_kind_from_kernel(kind: str):
    """from_path() learns the kind from the kernel (NS_GET_NSTYPE), not from the file name."""
    with isolate.Namespace.from_path(f"/proc/self/ns/{proc_name(kind)}") as ns, \
            isolate.Namespace.current(kind) as cur:
        assert ns.kind == kind
        assert ns == cur


def test_from_path_of_non_namespace_raises(tmp_path: Path):
    """from_path() of a regular file or a missing path raises NamespaceError (an OSError)."""
    regular = tmp_path / "plain"
    regular.write_text("not a namespace")
    before = open_fds()
    for path in (regular, tmp_path / "missing"):
        with pytest.raises(isolate.NamespaceError) as info:
            isolate.Namespace.from_path(path)
        assert isinstance(info.value, OSError) and isinstance(info.value, isolate.IsolateError)
    assert open_fds() == before, "a failed from_path() must not leak its fd"


def test_of_dead_pid_raises():
    """Namespace.of() for a pid that no longer exists raises NamespaceError."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(isolate.NamespaceError):
        isolate.Namespace.of(proc.pid, "net")


def test_fd_is_cloexec_and_closed():
    """The object owns an O_CLOEXEC fd to the namespace; close()/with releases it."""
    before = open_fds()
    ns = isolate.Namespace.of(os.getpid(), "uts")
    assert fcntl.fcntl(ns.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert os.readlink(f"/proc/self/fd/{ns.fd}") == host_ns("uts")
    ns.close()
    ns.close()   # idempotent
    assert open_fds() == before
    with isolate.Namespace.current("ipc"):
        pass
    assert open_fds() == before


def test_no_fd_leak_after_1000_of_calls():
    """1000 Namespace.of() calls (each closed by `with`), across every kind, leave no fd behind."""
    before = open_fds()
    pid = os.getpid()
    for i in range(1000):
        kind = KINDS[i % len(KINDS)]
        with isolate.Namespace.of(pid, kind) as ns:
            assert ns.kind == kind
    assert open_fds() == before


# --- entered() -------------------------------------------------------------

def test_entered_created_net_sees_only_lo_and_returns():
    """A thread entering a fresh net namespace sees only `lo`; it is back in its own afterwards."""
    def body() -> tuple:
        host_ifaces = thread_interfaces()
        with isolate.Namespace.create("net") as ns, isolate.Namespace.current("net") as home:
            assert ns != home
            with ns.entered():
                with isolate.Namespace.current("net") as inside:
                    assert inside == ns
                inside_ifaces = thread_interfaces()
                inside_index = [name for _, name in socket.if_nameindex()]
            with isolate.Namespace.current("net") as after:
                assert after == home
        return host_ifaces, inside_ifaces, inside_index, thread_interfaces()

    host_ifaces, inside_ifaces, inside_index, after_ifaces = in_thread(body)
    assert inside_ifaces == ["lo"]
    assert inside_index == ["lo"]
    assert after_ifaces == host_ifaces


def test_created_net_is_set_up_like_a_container_net():
    """Namespace.create("net") is a container's net namespace: only `lo`, and it is UP."""
    def body() -> tuple[bool, list[str]]:
        with isolate.Namespace.create("net") as ns, ns.entered():
            return lo_is_up(), [name for _, name in socket.if_nameindex()]

    assert in_thread(body) == (True, ["lo"])


def test_entered_container_net_reaches_its_server():
    """Entering a container's net namespace, a thread connects to a server on the container's 127.0.0.1."""
    with isolate.Container([PYTHON, "-c", SERVER, "0"], stdout=isolate.PIPE) as c:
        port = int(read_line(c.process.stdout))

        def body() -> bytes:
            with isolate.Namespace.of(c.pid, "net") as ns, ns.entered():
                assert lo_is_up(), "a created container net namespace has lo up"
                with socket.create_connection(("127.0.0.1", port), timeout=RUN_TIMEOUT) as s:
                    s.sendall(b"ping")
                    return s.recv(100)

        assert in_thread(body) == b"pong:ping"


def test_entered_in_a_thread_leaves_other_threads_alone():
    """While a worker thread is inside, the main thread (and the process's leader) stay home."""
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    with isolate.Namespace.create("net") as ns, isolate.Namespace.current("net") as home:
        def worker() -> None:
            try:
                with ns.entered():
                    entered.set()
                    release.wait(RUN_TIMEOUT)
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)
                entered.set()

        t = threading.Thread(target=worker)
        t.start()
        try:
            assert entered.wait(RUN_TIMEOUT)
            with isolate.Namespace.current("net") as mine, \
                    isolate.Namespace.of(os.getpid(), "net") as leader, \
                    isolate.Namespace.of(t.native_id, "net") as theirs:
                assert mine == home and leader == home
                assert theirs == ns
        finally:
            release.set()
            t.join(RUN_TIMEOUT)
    assert not errors, errors


def test_entered_restores_on_exception():
    """When the body raises, the exception propagates unchanged and the thread is back home."""
    class Boom(Exception):
        pass

    def body() -> bool:
        with isolate.Namespace.create("net") as ns, isolate.Namespace.current("net") as home:
            with pytest.raises(Boom):
                with ns.entered():
                    raise Boom("inside")
            with isolate.Namespace.current("net") as after:
                return after == home

    assert in_thread(body) is True


@pytest.mark.parametrize("kind", THREAD_JOINABLE)
def test_entered_thread_joinable_kinds(kind: str):
    """net, uts, ipc and cgroup of a running container can be entered by a thread, and left."""
    with sleeper(hostname="entered-uts") as c:
        def body() -> tuple:
            host_name = socket.gethostname()
            with isolate.Namespace.of(c.pid, kind) as target, \
                    isolate.Namespace.current(kind) as home:
                with target.entered() as got:
                    with isolate.Namespace.current(kind) as inside:
                        joined = inside == target
                    name_inside = socket.gethostname()
                with isolate.Namespace.current(kind) as after:
                    back = after == home
            return joined, back, got is target, host_name, name_inside, socket.gethostname()

        joined, back, returns_self, host_name, name_inside, name_after = in_thread(body)
        assert joined and back
        assert returns_self, "entered() yields the namespace itself"
        assert name_after == host_name
        if kind == "uts":
            assert name_inside == "entered-uts"


@pytest.mark.parametrize("kind", NOT_THREAD_JOINABLE)
def test_entered_refused_kinds_point_at_run_join(kind: str):
    """entered() on user/mount/pid/time raises NamespaceError mentioning run(join=...), joining nothing."""
    with sleeper() as c, isolate.Namespace.of(c.pid, kind) as target, \
            isolate.Namespace.current(kind) as home:
        with pytest.raises(isolate.NamespaceError) as info:
            with target.entered():
                pytest.fail("the body must not run")
        message = str(info.value)
        assert "run(" in message and "join" in message, message
        with isolate.Namespace.current(kind) as after:
            assert after == home


# --- create, pin, unpin -----------------------------------------------------

@pytest.mark.parametrize("kind", [k for k in KINDS if k != "pid"])
def test_create_makes_a_new_namespace(kind: str):
    """create(kind) returns a new namespace of that kind, held by the object's fd."""
    with isolate.Namespace.create(kind) as ns, isolate.Namespace.current(kind) as ours:
        assert ns.kind == kind
        assert ns != ours
        assert os.readlink(f"/proc/self/fd/{ns.fd}") == f"{proc_name(kind)}:[{ns.inode}]"


def test_create_pid_raises():
    """create("pid") raises (a PID namespace dies with its first process), creating nothing."""
    before = open_fds()
    with pytest.raises(isolate.IsolateError):
        isolate.Namespace.create("pid")
    assert open_fds() == before


def test_pin_survives_close_and_unpin_removes_it(tmp_path: Path):
    """A pinned namespace outlives its object's fd (same inode via from_path); unpin removes file and mount."""
    (tmp_path / "netns").mkdir()
    pin = tmp_path / "netns" / "blue"
    mounts_before = host_mountinfo()
    ns = isolate.Namespace.create("net", pin=pin)
    try:
        inode, dev = ns.inode, ns.dev
        assert str(pin) in mount_points()
        ns.close()
        with isolate.Namespace.from_path(pin) as again:
            assert again.kind == "net"
            assert (again.dev, again.inode) == (dev, inode)
            with isolate.Namespace.current("net") as ours:
                assert again != ours
    finally:
        ns.unpin()
    assert not pin.exists()
    assert str(pin) not in mount_points()
    assert host_mountinfo() == mounts_before


def test_pin_twice_unpin_removes_both(tmp_path: Path):
    """pin() can add more pins of the same namespace; unpin() removes every one this object made."""
    blue, also = tmp_path / "blue", tmp_path / "also"
    mounts_before = host_mountinfo()
    with isolate.Namespace.create("uts", pin=blue) as ns:
        try:
            ns.pin(also)
            for path in (blue, also):
                with isolate.Namespace.from_path(path) as pinned:
                    assert pinned == ns and pinned.kind == "uts"
        finally:
            ns.unpin()
    assert not blue.exists() and not also.exists()
    assert host_mountinfo() == mounts_before


def test_pin_survives_the_creating_process(tmp_path: Path):
    """A namespace pinned by a process that has since exited is still there, same inode."""
    pin = tmp_path / "pinned-by-child"

    def create() -> tuple[str, int, int]:
        ns = isolate.Namespace.create("net", pin=pin)
        return ns.kind, ns.dev, ns.inode   # exit without close() or unpin()

    try:
        kind, dev, inode = unwrap(run_in_fork(create))
        with isolate.Namespace.from_path(pin) as ns:
            assert (ns.kind, ns.dev, ns.inode) == (kind, dev, inode)
    finally:
        force_unpin(pin)


# --- run(join=...) ----------------------------------------------------------

def test_two_containers_share_pinned_net_namespace(tmp_path: Path):
    """Two containers joining one pinned net namespace talk over its loopback."""
    (tmp_path / "netns").mkdir()
    pin = tmp_path / "netns" / "blue"
    blue = isolate.Namespace.create("net", pin=pin)
    try:
        blue.close()   # the pin alone keeps it alive
        with isolate.Namespace.from_path(pin) as shared:
            bring_lo_up(shared)
            with isolate.Container([PYTHON, "-c", SERVER, "0"], join=[shared],
                                   stdout=isolate.PIPE) as server:
                port = int(read_line(server.process.stdout))
                with isolate.Namespace.of(server.pid, "net") as server_net:
                    assert server_net == shared
                r = isolate.run([PYTHON, "-c", CLIENT, str(port), "hello"], join=[shared],
                                capture_output=True, timeout=RUN_TIMEOUT)
                assert r.returncode == 0, r.stderr
                answer, client_net = r.stdout.decode().split()
                assert answer == "pong:hello"
                assert client_net == f"net:[{shared.inode}]"
                assert client_net != host_ns("net")
    finally:
        blue.unpin()
    assert not pin.exists()


def test_joined_net_namespace_is_used_as_is():
    """A joined net namespace gets no set-up: the workload sees only a `lo` that stays DOWN."""
    with isolate.Namespace.create("net") as ns:
        def down() -> None:
            with ns.entered():
                set_lo_down()

        in_thread(down)
        r = isolate.run(["sh", "-c", "readlink /proc/self/ns/net; cat /proc/self/net/dev"],
                        join=[ns], capture_output=True, timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        link, *dev = r.stdout.decode().splitlines()
        assert link == f"net:[{ns.inode}]"
        assert [line.split(":")[0].strip() for line in dev[2:]] == ["lo"]

        def lo_state() -> bool:
            with ns.entered():
                return lo_is_up()

        assert in_thread(lo_state) is False, "joining must not bring lo up"


def test_join_mixes_joined_and_created_kinds():
    """Joining a container's uts namespace: its hostname, while every other namespace is new."""
    with sleeper(hostname="joined-uts") as c, isolate.Namespace.of(c.pid, "uts") as uts:
        r = isolate.run(["sh", "-c", "hostname; readlink /proc/self/ns/uts /proc/self/ns/net"],
                        join=[uts], capture_output=True, timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        hostname, uts_link, net_link = r.stdout.decode().split()
        assert hostname == "joined-uts"
        assert uts_link == f"uts:[{uts.inode}]"
        with isolate.Namespace.of(c.pid, "net") as their_net:
            assert net_link not in (host_ns("net"), f"net:[{their_net.inode}]")


def test_join_user_and_pid_of_a_container():
    """Joining a container's user and pid namespaces: the workload is a member, PID 1 is its init."""
    with sleeper() as c, isolate.Namespace.of(c.pid, "user") as user, \
            isolate.Namespace.of(c.pid, "pid") as pid:
        r = isolate.run(["sh", "-c", "cat /proc/1/comm; echo $$; readlink /proc/self/ns/pid"],
                        join=[pid, user], capture_output=True, timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        comm, my_pid, pid_link = r.stdout.decode().split()
        assert pid_link == f"pid:[{pid.inode}]"
        assert int(my_pid) > 2, "a member of the container's pid namespace, not a new PID 1"
        assert comm == "isolate-init", "/proc inside must show the joined pid namespace"


def test_join_time_namespace_of_a_container():
    """A container's time namespace can be joined (the joiner forks for it): the workload is in it."""
    with isolate.Container(["sleep", unique_sleep_arg()]) as c:
        comm = Path(f"/proc/{c.pid}/comm")
        assert wait_until(lambda: comm.read_text() == "isolate-init\n")   # time ns applies at exec
        with isolate.Namespace.of(c.pid, "time") as t, isolate.Namespace.current("time") as ours:
            assert t != ours
            r = isolate.run(["readlink", "/proc/self/ns/time"], join=[t], capture_output=True,
                            timeout=RUN_TIMEOUT)
            assert r.stdout.decode().strip() == f"time:[{t.inode}]"


def test_join_accepts_only_namespaces():
    """join= holds Namespace objects; anything else is a ConfigError naming "join"."""
    with pytest.raises(isolate.ConfigError) as info:
        isolate.Config(join=["net"])
    assert info.value.field == "join"


# --- rootless ----------------------------------------------------------------



def test_rootless_create_and_identity(rootless: tuple[int, int], host_dir: Path):
    """Unprivileged: create("net") makes a new namespace; identity works; pin() is refused cleanly."""
    host_dir.chmod(0o777)
    pin = host_dir / "pin"
    isolate.run(["true"], timeout=RUN_TIMEOUT)   # load lazily imported parts while root
    with isolate.Namespace.create("uts"):
        pass

    def body() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with isolate.Namespace.create("net") as ns, isolate.Namespace.current("net") as ours, \
                isolate.Namespace.of(os.getpid(), "net") as mine:
            out["new"] = ns != ours and ns.kind == "net"
            out["same"] = ours == mine
            try:
                ns.pin(pin)
                out["pin"] = "no error"
                ns.unpin()
            except isolate.NamespaceError:
                out["pin"] = "NamespaceError"
        out["pin_left"] = pin.exists()
        return out

    out = unwrap(run_in_fork(body, setup=drop_to(*rootless)))
    assert out == {"new": True, "same": True, "pin": "NamespaceError", "pin_left": False}
