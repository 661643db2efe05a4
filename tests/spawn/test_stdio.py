"""stdin/stdout/stderr: inherit, PIPE, DEVNULL, files, fds, STDOUT merging, big data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import isolate
from conftest import PYTHON, RUN_TIMEOUT

BIG = 3 * 1024 * 1024  # > 1 MiB, well past any pipe buffer


def payload(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes of the given size."""
    block = bytes(range(256)) * 4 + os.urandom(1024)
    return (block * (size // len(block) + 1))[:size]


def test_inherit_stdout(capfd: pytest.CaptureFixture[str]):
    """stdout=None: the workload writes straight to the caller's fd 1 and fd 2."""
    r = isolate.run(["sh", "-c", "echo to-out; echo to-err >&2"], timeout=RUN_TIMEOUT)
    out, err = capfd.readouterr()
    assert r.returncode == 0 and r.stdout is None
    assert (out, err) == ("to-out\n", "to-err\n")


def test_pipe_stdout_only():
    """stdout=PIPE captures stdout while stderr stays uncaptured (None)."""
    r = isolate.run(["echo", "hi"], stdout=isolate.PIPE, timeout=RUN_TIMEOUT)
    assert (r.stdout, r.stderr) == (b"hi\n", None)


def test_devnull_stdout():
    """stdout=DEVNULL connects the workload's fd 1 to /dev/null."""
    script = "import os, sys; print('lost'); sys.stderr.write(os.readlink('/proc/self/fd/1'))"
    r = isolate.run([PYTHON, "-c", script],
                    stdout=isolate.DEVNULL, stderr=isolate.PIPE, timeout=RUN_TIMEOUT)
    assert r.stdout is None
    assert r.stderr == b"/dev/null"


def test_devnull_stdin():
    """stdin=DEVNULL gives the workload immediate EOF."""
    r = isolate.run(["cat"], stdin=isolate.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT)
    assert (r.returncode, r.stdout) == (0, b"")


def test_pipe_stdin_without_input_is_eof():
    """stdin=PIPE with no input: the workload sees EOF rather than hanging."""
    r = isolate.run(["cat"], stdin=isolate.PIPE, capture_output=True, timeout=RUN_TIMEOUT)
    assert (r.returncode, r.stdout) == (0, b"")


def test_stdout_to_file_object(tmp_path: Path):
    """stdout=<file object> writes into that file."""
    out = tmp_path / "out"
    with out.open("wb") as f:
        r = isolate.run(["echo", "to-file"], stdout=f, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and r.stdout is None
    assert out.read_bytes() == b"to-file\n"


def test_stdio_as_int_fds(tmp_path: Path):
    """Raw fds work for stdin and stderr."""
    src, err = tmp_path / "in", tmp_path / "err"
    src.write_bytes(b"from-fd")
    fd_in = os.open(src, os.O_RDONLY)
    fd_err = os.open(err, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        r = isolate.run(["sh", "-c", "cat >&2"], stdin=fd_in, stderr=fd_err,
                        timeout=RUN_TIMEOUT)
    finally:
        os.close(fd_in)
        os.close(fd_err)
    assert r.returncode == 0
    assert err.read_bytes() == b"from-fd"


def test_stdin_from_file_object(tmp_path: Path):
    """stdin=<file object> feeds the file to the workload."""
    src = tmp_path / "in"
    src.write_bytes(b"line1\nline2\n")
    with src.open("rb") as f:
        r = isolate.run(["wc", "-l"], stdin=f, capture_output=True, timeout=RUN_TIMEOUT)
    assert r.stdout.strip() == b"2"


def test_stderr_to_stdout():
    """stderr=STDOUT merges stderr into the stdout pipe, in order."""
    r = isolate.run(["sh", "-c", "echo one; echo two >&2; echo three"],
                    stdout=isolate.PIPE, stderr=isolate.STDOUT, timeout=RUN_TIMEOUT)
    assert r.stdout == b"one\ntwo\nthree\n"
    assert r.stderr is None


def test_text_mode_both_streams():
    """text=True decodes both captured streams."""
    r = isolate.run(["sh", "-c", "printf 'a\\n'; printf 'b\\n' >&2"], capture_output=True,
                    text=True, timeout=RUN_TIMEOUT)
    assert (r.stdout, r.stderr) == ("a\n", "b\n")


def test_big_input_echoed_back():
    """> 1 MiB in and out through run(input=...) without deadlock, byte-exact."""
    data = payload(BIG)
    r = isolate.run(["cat"], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0
    assert len(r.stdout) == BIG and r.stdout == data


def test_big_stdout_and_stderr_concurrently():
    """The workload floods stderr while echoing stdin to stdout; all arrives."""
    data = payload(BIG)
    script = f"head -c {BIG} /dev/zero >&2 & cat; wait"
    r = isolate.run(["sh", "-c", script], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0
    assert r.stdout == data
    assert r.stderr == b"\0" * BIG


def test_big_output_without_input():
    """> 1 MiB of output alone is fully captured."""
    r = isolate.run(["head", "-c", str(BIG), "/dev/zero"], capture_output=True, timeout=60)
    assert len(r.stdout) == BIG


def test_container_communicate_big():
    """Container.communicate() moves > 1 MiB both ways."""
    data = payload(BIG)
    with isolate.Container(["cat"], stdin=isolate.PIPE, stdout=isolate.PIPE,
                           stderr=isolate.PIPE) as c:
        out, err = c.communicate(data, timeout=60)
        assert (out, err) == (data, b"")
        assert c.wait(timeout=RUN_TIMEOUT) == 0


def test_process_communicate():
    """Process.communicate() works like Popen.communicate()."""
    with isolate.Container(["sh", "-c", "cat; echo e >&2"], stdin=isolate.PIPE,
                           stdout=isolate.PIPE, stderr=isolate.PIPE) as c:
        out, err = c.process.communicate(b"in", timeout=RUN_TIMEOUT)
        assert (out, err) == (b"in", b"e\n")
        assert c.process.returncode == 0


def test_process_pipes_are_binary_files():
    """Process.stdin/stdout are binary file objects usable line by line."""
    with isolate.Container(["sh", "-c", "read l; echo got:$l"], stdin=isolate.PIPE,
                           stdout=isolate.PIPE) as c:
        c.process.stdin.write(b"x\n")
        c.process.stdin.flush()
        assert c.process.stdout.readline() == b"got:x\n"
        c.process.stdin.close()
        assert c.wait(timeout=RUN_TIMEOUT) == 0


def test_only_stdio_and_pass_fds_leak_in(tmp_path: Path):
    """The workload sees fds 0-2 and pass_fds only, never the caller's other fds."""
    fd = os.open(tmp_path, os.O_RDONLY)
    keep, other = 100, 101  # high numbers, so ls's own fd cannot collide
    os.dup2(fd, keep, inheritable=True)
    os.dup2(fd, other, inheritable=True)
    os.close(fd)
    try:
        r = isolate.run(["sh", "-c", "ls /proc/self/fd"], pass_fds=[keep],
                        capture_output=True, timeout=RUN_TIMEOUT)
    finally:
        os.close(keep)
        os.close(other)
    fds = {int(x) for x in r.stdout.split()}
    # ls itself holds one more fd open while listing the directory
    assert {0, 1, 2, keep} <= fds and other not in fds
    assert len(fds - {0, 1, 2, keep}) <= 1
