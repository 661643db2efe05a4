"""Container.exec(): a new process inside a running container.

It joins the container's namespaces, cgroup, root and cwd, and
runs with its env, user, group and capabilities, returning a
CompletedProcess like run(), or a Process with wait=False.  All checks run
against real containers and compare with what the kernel shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

import isolate
from conftest import (
    drop_to,
    RUN_TIMEOUT,
    assert_no_leaks,
    marker,
    pids_with_cmdline,
    run_in_fork,
    snapshot,
    unique_sleep_arg,
    unwrap,
    wait_until,
)

#: isolate kind -> /proc/PID/ns name, for every kind exec joins.
JOINED = {"user": "user", "mount": "mnt", "pid": "pid", "uts": "uts", "ipc": "ipc",
          "net": "net", "cgroup": "cgroup", "time": "time"}


# --- helpers ---------------------------------------------------------------

class Sleeper:
    """A running container whose workload is a uniquely recognisable ``sleep``."""

    def __init__(self, script: str = "", **config: Any) -> None:
        self.arg = unique_sleep_arg()
        args = ["sh", "-c", f"{script}\nexec sleep {self.arg}"] if script else ["sleep", self.arg]
        self.container = isolate.Container(args, **config)

    def __enter__(self) -> Sleeper:
        self.container.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.__exit__(*exc)

    def workload_pid(self) -> int:
        """The host pid of the ``sleep`` (once the script has exec'd it)."""
        assert wait_until(lambda: len(pids_with_cmdline(self.arg)) == 1), "workload not found"
        return pids_with_cmdline(self.arg)[0]

    def sh(self, script: str, **kw: Any) -> isolate.CompletedProcess:
        """exec ``sh -c script`` in the container; checked, stdout captured as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("timeout", RUN_TIMEOUT)
        kw.setdefault("text", True)
        r = self.container.exec(["sh", "-c", script], **kw)
        assert isinstance(r, isolate.CompletedProcess)
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        return r

    def lines(self, script: str, **kw: Any) -> list[str]:
        """The stdout lines of ``sh``."""
        return self.sh(script, **kw).stdout.splitlines()


def ns_links(pid: int | str) -> dict[str, str]:
    """readlink of /proc/PID/ns/* for every kind exec joins, from the host."""
    return {kind: os.readlink(f"/proc/{pid}/ns/{name}") for kind, name in JOINED.items()}


def status_field(pid: int | str, field: str) -> str:
    """One field of /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(field)


# --- what exec sees ----------------------------------------------------------

def test_exec_sees_container_pid1_and_processes():
    """exec runs in the container's PID namespace: PID 1 is isolate-init, ps lists only the container."""
    with Sleeper() as s:
        comm, my_pid, *ps = s.lines("cat /proc/1/comm; echo $$; ps -eo pid=,args=")
        assert comm == "isolate-init"
        assert int(my_pid) > 2, "exec is a member of the pid namespace, not a new PID 1 or the workload"
        pids = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in ps}
        assert pids["1"].startswith("isolate-init")
        assert pids["2"] == f"sleep {s.arg}"
        assert len(pids) <= 4, f"only the container's processes should be visible: {ps}"
        assert s.container.process.poll() is None, "exec must not disturb the workload"


def test_exec_into_container_without_init():
    """With init=False the workload is PID 1, and exec sees it there."""
    with Sleeper(init=False) as s:
        assert s.lines("tr '\\0' ' ' < /proc/1/cmdline") == [f"sleep {s.arg} "]


def test_exec_sees_hostname():
    """exec shares the container's UTS namespace: its hostname."""
    with Sleeper(hostname="exec-host") as s:
        assert s.lines("hostname") == ["exec-host"]


def test_exec_sees_container_mounts():
    """exec shares the container's mount namespace: its Tmpfs, its private /tmp, its read-only root."""
    token = marker()
    with Sleeper(f"echo {token} > /tmp/from-workload", mounts=[isolate.Tmpfs("/srv")]) as s:
        s.workload_pid()   # the script ran
        lines = s.lines(f"grep ' /srv ' /proc/self/mountinfo | grep -c tmpfs; "
                        f"cat /tmp/from-workload; echo data > /srv/{token}")
        assert lines == ["1", token]
        assert s.lines(f"cat /srv/{token}") == ["data"], "two execs share the tmpfs"
        r = s.container.exec(["sh", "-c", f"touch /etc/{token}"], capture_output=True,
                             timeout=RUN_TIMEOUT)
        assert r.returncode != 0, "the container's root is read-only for exec too"
    assert not os.path.exists(f"/srv/{token}"), "the host never sees the container's tmpfs"
    assert not os.path.exists(f"/etc/{token}")


def test_exec_same_uid_map():
    """exec runs in the container's user namespace: same uid_map/gid_map, root inside."""
    with Sleeper(uid_map=[(0, 100000, 65536)], gid_map=[(0, 100000, 65536)]) as s:
        uid_map = Path(f"/proc/{s.workload_pid()}/uid_map").read_text().split()
        assert uid_map == ["0", "100000", "65536"]
        uid, gid, *maps = s.lines("id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map")
        assert (uid, gid) == ("0", "0")
        assert [m.split() for m in maps] == [uid_map, uid_map]


@pytest.mark.parametrize("created", [
    pytest.param(isolate.ALL_NAMESPACES, id="all"),
    pytest.param(isolate.ALL_NAMESPACES - {"net"}, id="no-net"),
    pytest.param(isolate.ALL_NAMESPACES - {"user"}, id="no-user"),
    pytest.param(isolate.ALL_NAMESPACES - {"pid", "cgroup"}, id="no-pid-cgroup"),
])
def test_exec_joins_exactly_the_containers_namespaces(created: frozenset[str]):
    """exec's namespaces (time included) are the workload's, whichever the container created."""
    with Sleeper(namespaces=created) as s:
        p = s.container.exec(["sleep", unique_sleep_arg()], wait=False)
        try:
            assert ns_links(p.pid) == ns_links(s.workload_pid())
        finally:
            p.kill()
            p.wait(RUN_TIMEOUT)


def test_exec_same_cgroup():
    """exec is placed in the container's cgroup (same /proc/PID/cgroup as the workload)."""
    with Sleeper() as s:
        p = s.container.exec(["sleep", unique_sleep_arg()], wait=False)
        try:
            assert (Path(f"/proc/{p.pid}/cgroup").read_text()
                    == Path(f"/proc/{s.workload_pid()}/cgroup").read_text())
        finally:
            p.kill()
            p.wait(RUN_TIMEOUT)


def test_exec_inherits_env_cwd_user_group_capabilities():
    """By default exec gets the container's env, cwd, user, group and capability bounding set."""
    with Sleeper(env={"FOO": "bar"}, cwd="/tmp", user=1000, group=1000,
                 capabilities=["NET_ADMIN"]) as s:
        wpid = s.workload_pid()
        foo, path, cwd, uid, gid, capbnd = s.lines(
            'echo "$FOO"; echo "$PATH"; pwd; id -u; id -g; grep CapBnd /proc/self/status')
        assert foo == "bar"
        assert path == isolate.Config().env["PATH"]
        assert cwd == "/tmp"
        assert (uid, gid) == ("1000", "1000")
        assert capbnd.split()[1] == status_field(wpid, "CapBnd") == f"{1 << 12:016x}"


def test_exec_overrides_env_and_cwd():
    """Keywords given to exec override the container's env and cwd."""
    with Sleeper(env={"FOO": "bar"}, cwd="/tmp") as s:
        assert s.lines('echo "$FOO"; pwd', env={"FOO": "baz"}, cwd="/proc") == ["baz", "/proc"]


def test_exec_into_container_that_joined_a_namespace():
    """A container that joined a net namespace: exec runs in that same net namespace, not the host's."""
    with isolate.Namespace.create("net") as blue, Sleeper(join=[blue]) as s:
        assert os.readlink(f"/proc/{s.workload_pid()}/ns/net") == f"net:[{blue.inode}]"
        assert s.lines("readlink /proc/self/ns/net") == [f"net:[{blue.inode}]"]


# --- results and processes ---------------------------------------------------

def test_exec_result_like_run():
    """exec(wait=True) returns a CompletedProcess: returncode, stdout/stderr, text, input, check."""
    with Sleeper() as s:
        c = s.container
        r = c.exec(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True,
                   text=True, timeout=RUN_TIMEOUT)
        assert isinstance(r, isolate.CompletedProcess)
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
        assert list(r.args) == ["sh", "-c", "echo out; echo err >&2; exit 3"]
        r = c.exec(["cat"], input=b"x" * 100000, capture_output=True, timeout=RUN_TIMEOUT)
        assert r.stdout == b"x" * 100000
        with pytest.raises(isolate.CalledProcessError) as info:
            c.exec(["sh", "-c", "exit 5"], check=True, timeout=RUN_TIMEOUT)
        assert info.value.returncode == 5
        assert c.exec(["sh", "-c", "kill -TERM $$"], timeout=RUN_TIMEOUT).returncode == -15
        assert c.process.poll() is None


def test_exec_timeout_raises():
    """exec(timeout=...) raises TimeoutExpired when the command outlives it."""
    with Sleeper() as s:
        arg = unique_sleep_arg()
        with pytest.raises(isolate.TimeoutExpired):
            s.container.exec(["sleep", arg], timeout=0.5)
        assert wait_until(lambda: not pids_with_cmdline(arg)), "the timed-out command was not killed"


def test_exec_missing_executable():
    """exec of a command that does not exist in the container raises ExecutableNotFound."""
    with Sleeper() as s:
        with pytest.raises(isolate.ExecutableNotFound):
            s.container.exec(["no-such-command-" + marker()], timeout=RUN_TIMEOUT)
        assert s.container.process.poll() is None


def test_exec_wait_false_returns_process():
    """exec(wait=False) returns a running Process, a child of the caller, to communicate with."""
    with Sleeper() as s:
        p = s.container.exec(["sh", "-c", "cat; exit 7"], stdin=isolate.PIPE,
                             stdout=isolate.PIPE, wait=False)
        assert isinstance(p, isolate.Process)
        assert p.returncode is None and p.poll() is None
        assert p.pid in [child.pid for child in psutil.Process().children()]
        out, err = p.communicate(b"hello", timeout=RUN_TIMEOUT)
        assert (out, err) == (b"hello", None)
        assert p.returncode == 7
        assert p.pid not in [child.pid for child in psutil.Process().children()], "reaped"
        assert s.container.process.poll() is None, "the container outlives its exec"


def test_exec_wait_false_kill():
    """Killing an exec'd Process reports -SIGKILL and leaves the container running."""
    with Sleeper() as s:
        p = s.container.exec(["sleep", unique_sleep_arg()], wait=False)
        p.kill()
        assert p.wait(RUN_TIMEOUT) == -9
        assert s.container.process.poll() is None


def _exited_by_itself(c: isolate.Container) -> None:
    c.wait(RUN_TIMEOUT)


def _killed(c: isolate.Container) -> None:
    c.kill()
    c.wait(RUN_TIMEOUT)


def _zombie(c: isolate.Container) -> None:
    assert wait_until(lambda: psutil.Process(c.pid).status() == psutil.STATUS_ZOMBIE)


def _closed(c: isolate.Container) -> None:
    c.close()


@pytest.mark.parametrize("finish", [_exited_by_itself, _killed, _zombie, _closed],
                         ids=["exited", "killed", "unreaped", "closed"])
def test_exec_into_exited_container_raises(finish: Callable[[isolate.Container], None]):
    """exec into a container that has ended (waited, killed, not yet reaped, closed) raises IsolateError."""
    args = ["true"] if finish in (_exited_by_itself, _zombie) else ["sleep", unique_sleep_arg()]
    with isolate.Container(args) as c:
        finish(c)
        with pytest.raises(isolate.IsolateError):
            c.exec(["true"], timeout=RUN_TIMEOUT)


def test_exec_leaves_no_leaks():
    """Many execs leave no fd, mount, temp entry or child process behind once the container is closed."""
    before = snapshot()
    with Sleeper() as s:
        for i in range(20):
            r = s.container.exec(["echo", str(i)], capture_output=True, timeout=RUN_TIMEOUT)
            assert r.stdout == f"{i}\n".encode()
        s.container.exec(["sh", "-c", "exit 1"], stdout=isolate.DEVNULL, timeout=RUN_TIMEOUT)
    assert_no_leaks(before, snapshot())


def test_exec_wait_false_leaves_no_leaks():
    """Process handles from exec(wait=False), once waited for, hold nothing after the container closes."""
    before = snapshot()
    with Sleeper() as s:
        p = s.container.exec(["echo", "hi"], stdout=isolate.PIPE, wait=False)
        assert p.communicate(timeout=RUN_TIMEOUT) == (b"hi\n", None)
        q = s.container.exec(["sleep", unique_sleep_arg()], wait=False)   # never waited for
    assert q.wait(RUN_TIMEOUT) == -9, "closing the container kills what runs in it"
    assert_no_leaks(before, snapshot())


# --- rootless ----------------------------------------------------------------



def warm_up() -> None:
    """Load every lazily imported part of run/exec while still root."""
    with Sleeper() as s:
        s.container.exec(["true"], capture_output=True, timeout=RUN_TIMEOUT)
        s.container.exec(["true"], wait=False).wait(RUN_TIMEOUT)


def test_rootless_exec_into_rootless_container(rootless: tuple[int, int]):
    """Unprivileged: exec into one's own container sees its PID 1, hostname, and uid_map (root inside)."""
    uid, _ = rootless
    warm_up()

    def body() -> tuple:
        with Sleeper(hostname="rootless-exec") as s:
            r = s.container.exec(
                ["sh", "-c", "cat /proc/1/comm; hostname; id -u; cat /proc/self/uid_map"],
                capture_output=True, timeout=RUN_TIMEOUT)
            p = s.container.exec(["cat"], stdin=isolate.PIPE, stdout=isolate.PIPE, wait=False)
            out, _ = p.communicate(b"piped", timeout=RUN_TIMEOUT)
            return r.returncode, r.stdout.decode(), r.stderr.decode(), out, p.returncode

    code, stdout, stderr, out, pcode = unwrap(run_in_fork(body, setup=drop_to(*rootless)))
    assert code == 0, stderr
    comm, hostname, inside_uid, *uid_map = stdout.split()
    assert (comm, hostname, inside_uid) == ("isolate-init", "rootless-exec", "0")
    assert uid_map == ["0", str(uid), "1"]
    assert (out, pcode) == (b"piped", 0)
