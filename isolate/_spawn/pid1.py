"""The container init program, as a sealed in-memory copy.

isolate/_pid1 (built from _native/pid1.c) becomes PID 1 of every container
that has isolate's init.  It is exec'd from a memfd sealed against writes,
not from its file: /proc/1/exe inside a container then names a copy that
nobody can modify, so a workload cannot overwrite a host binary through it
(the CVE-2019-5736 class of attack on runc).
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading

PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_pid1")
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
# Linux 6.3+ may create memfds non-executable (vm.memfd_noexec) unless
# asked for MFD_EXEC; older kernels reject the flag with EINVAL.
_MFD_EXEC = 0x10

_lock = threading.Lock()
_fd: int | None = None


def init_fd() -> int:
    """A close-on-exec fd of the sealed copy, made once per process."""
    global _fd
    with _lock:
        if _fd is None:
            _fd = _sealed_copy(PROGRAM)
    return _fd


def _sealed_copy(path: str) -> int:
    with open(path, "rb") as program:
        data = program.read()
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create("isolate-init", flags | _MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = os.memfd_create("isolate-init", flags)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
