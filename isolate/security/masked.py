"""Paths of /proc and /sys a container must not see or write.

The same lists as runc's defaults: files that show the host's kernel
memory, keys or timers are masked (/dev/null over a file, an empty
read-only tmpfs over a directory), and the kernel's tunables are bound
read-only.  Root inside a user namespace mapped to the host's root would
otherwise pass the permission checks of, say, /proc/sysrq-trigger.

Each path is masked exactly where it is named, through no symlink, and must
be there when the container starts (a missing one fails the spawn): paths
under /proc and /sys that this kernel lacks, or where the root shows no
proc or sysfs, are left out of the plan beforehand.
"""
from __future__ import annotations

MASKED: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)
READONLY: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)
