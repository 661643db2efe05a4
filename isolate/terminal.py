"""A container's terminal, seen from the caller: the master end of a pty.

With ``tty=True`` the workload gets a pty from the container's own devpts
(``/dev/ptmx`` inside; _native/child.c, ISO_OP_PTY): a new session whose
controlling terminal is the slave, which is also its stdin, stdout and
stderr.  The master comes back to the caller over a unix socket
(SCM_RIGHTS) and becomes ``Process.pty`` / ``Container.pty``: read the
workload's output from it, write its input (b"\\x03" is Ctrl-C to the
foreground job), resize it.  Reading returns b"" once every process holding
the slave has closed it.
"""
from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
import termios


class Pty:
    """The master end of a container's pty.  Close it (or the Container) when done."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __repr__(self) -> str:
        return f"<isolate.Pty fd={self.fd}>"

    def fileno(self) -> int:
        return self.fd

    def read(self, size: int = 65536) -> bytes:
        """Up to `size` bytes of output; b"" once the container side is closed."""
        try:
            return os.read(self.fd, size)
        except OSError as exc:
            if exc.errno == errno.EIO:   # Linux: no process holds the slave any more
                return b""
            raise

    def write(self, data: bytes) -> int:
        """Send input (as typed: b"\\r" is Enter in the default line discipline)."""
        return os.write(self.fd, data)

    def resize(self, rows: int, cols: int) -> None:
        """Set the window size; the foreground process group gets SIGWINCH."""
        for name, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ValueError(f"{name} must be an integer from 1 to 65535, got {value!r}")
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def size(self) -> tuple[int, int]:
        """(rows, cols) of the window."""
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(self.fd, termios.TIOCGWINSZ, bytes(8)))
        return rows, cols

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def channel() -> tuple[socket.socket, socket.socket]:
    """(ours, the child's): the socket pair the master comes back over."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def receive(sock: socket.socket, timeout: float = 10.0) -> Pty:
    """The master the container sent before it exec'd (so it is already
    queued; the timeout only bounds a broken sender)."""
    fds = array.array("i")
    sock.settimeout(timeout)
    data, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise OSError(errno.EPROTO, "the container sent no terminal")
    os.set_inheritable(fds[0], False)
    return Pty(fds[0])
