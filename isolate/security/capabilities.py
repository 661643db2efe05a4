"""Linux capabilities by name, and the set a workload keeps by default.

The workload runs as root of its user namespace, which would give it every
capability over the container's own namespaces: enough to remount the
read-only root read-write, for one.  Like Docker, isolate keeps a small
default set and drops the rest from the bounding set before exec.
"""
from __future__ import annotations

from collections.abc import Iterable

from isolate.errors import ConfigError

#: Capability numbers from linux/capability.h.
NUMBERS: dict[str, int] = {name: number for number, name in enumerate((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"))}

#: What a workload keeps unless told otherwise: the same set as Docker's.
DEFAULT: frozenset[str] = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"})


def parse(names: Iterable[str] | str | None, field: str = "capabilities") -> frozenset[str]:
    """Canonical names ("SYS_ADMIN") from "CAP_SYS_ADMIN"/"sys_admin"; "ALL" for
    all; None for the default set."""
    if names is None:
        return DEFAULT
    if isinstance(names, str):
        names = [names]
    result = set()
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(field, f"expected capability names, got {name!r}")
        canonical = name.upper().removeprefix("CAP_")
        if canonical == "ALL":
            result.update(NUMBERS)
        elif canonical in NUMBERS:
            result.add(canonical)
        else:
            raise ConfigError(field, f"unknown capability {name!r}")
    return frozenset(result)


def parser(field: str):
    """An attrs converter for a set of names added to or dropped from the kept set."""
    return lambda names: parse(names if names is not None else (), field)


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(NUMBERS.values())


def drop_mask(keep: frozenset[str], last: int) -> int:
    """A bit for every capability up to `last` that is not kept."""
    kept = {NUMBERS[name] for name in keep}
    return sum(1 << cap for cap in range(last + 1) if cap not in kept)
