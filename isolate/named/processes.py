"""The processes of a running named container (``isolate top``), each with
its pid inside the container and on the host, its user as the container
sees it, its CPU time and its command.

Which processes: those in the container's PID namespace (PID 1's; exec'd
processes join it), or, for a container that shares the host's, PID 1
and its descendants.  Each is read through a descriptor of its /proc
directory, so a process that ends meanwhile is skipped, never confused
with a newcomer that got its pid.  Users are the container's: host uids
through its uid map, named by its own /etc/passwd (read inside its root).
"""
from __future__ import annotations

import os
import stat

import attrs

from isolate.named import inside
from isolate.named.state import StateDir

__all__ = ["ContainerProcess", "processes"]

#: The most of a container's /etc/passwd read to name its users.
_PASSWD_BYTES = 1 << 20
#: /proc/PID/stat's utime and stime count these.
_TICKS = os.sysconf("SC_CLK_TCK")


@attrs.frozen
class ContainerProcess:
    """One process of a container.

    pid: its pid in the container (the last of NSpid).  host_pid: on the
    host.  ppid: its parent's pid in the container (0: outside it).  uid:
    its real uid in the container.  user: that uid's name in the
    container's /etc/passwd, else the number.  cpu_seconds: user and
    system time.  command: its argv joined by spaces ("[comm]" when it has
    none).  All are what the container may have written: print escaped.
    """

    pid: int
    host_pid: int
    ppid: int
    uid: int
    user: str
    cpu_seconds: float
    command: str


def processes(states: StateDir, name: str) -> list[ContainerProcess]:
    """The processes of the running container `name`, by pid in the container."""
    with inside.opened_root(states, name) as pinned:
        if "pid" in pinned.record.config.get("namespaces", []):
            namespace = pinned.open("ns/pid")
            try:
                host_pids = _same_namespace(os.fstat(namespace))
            finally:
                os.close(namespace)
        else:
            host_pids = _descendants(pinned.record.pid)
        uids = pinned.id_map("uid")
        users = _users(pinned.root)
    found = [read for pid in host_pids if (read := _read(pid)) is not None]
    in_container = {host_pid: pid for host_pid, pid, *_ in found}
    listed = []
    for host_pid, pid, host_ppid, host_uid, cpu_seconds, command in found:
        uid = inside.container_id(uids, host_uid)
        listed.append(ContainerProcess(pid, host_pid, in_container.get(host_ppid, 0), uid,
                                       users.get(uid, str(uid)), cpu_seconds, command))
    return sorted(listed, key=lambda process: process.pid)


def _host_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _same_namespace(namespace: os.stat_result) -> list[int]:
    """Host pids whose PID namespace is `namespace` (stat of an ns/pid link)."""
    found = []
    for pid in _host_pids():
        try:
            info = os.stat(f"/proc/{pid}/ns/pid")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue   # gone, or another user's (then not in our container)
        if (info.st_dev, info.st_ino) == (namespace.st_dev, namespace.st_ino):
            found.append(pid)
    return found


def _descendants(top: int) -> list[int]:
    """`top` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid in _host_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(pid)
    found, pending = [], [top]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def _read(host_pid: int) -> tuple[int, int, int, int, float, str] | None:
    """(host pid, pid in the container, host ppid, host uid, CPU seconds,
    command) of a process, or None if it has ended."""
    try:
        proc = os.open(f"/proc/{host_pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        status = dict(line.split(":", 1) for line in _text(proc, "status").splitlines()
                      if ":" in line)
        stat_line = _text(proc, "stat")
        cmdline = _text(proc, "cmdline")
    except (FileNotFoundError, ProcessLookupError):
        return None
    finally:
        os.close(proc)
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    # Fields 14 and 15 (utime, stime) of /proc/PID/stat; the list starts at field 3.
    cpu_seconds = (int(fields[11]) + int(fields[12])) / _TICKS
    args = cmdline.split("\0")
    command = " ".join(args[:-1] if cmdline.endswith("\0") else args)
    if not command:   # a kernel thread, or a process that cleared its argv
        command = f"[{status.get('Name', '').strip()}]"
    return (host_pid, int(status["NSpid"].split()[-1]), int(status["PPid"]),
            int(status["Uid"].split()[0]), cpu_seconds, command)


def _text(proc: int, name: str) -> str:
    with open(os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc), "rb") as f:
        return os.fsdecode(f.read())


def _users(root: int) -> dict[int, str]:
    """uid -> name from the container's /etc/passwd ({} if it has none)."""
    try:
        # O_NONBLOCK: the container may have made it a FIFO.
        fd = inside.open_in(root, "/etc/passwd", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return {}
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}
        text = os.fsdecode(f.read(_PASSWD_BYTES))
    users: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            users.setdefault(int(fields[2]), fields[0])
    return users
