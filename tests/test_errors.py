"""Bad input raises the documented error, before any process exists; child failures name the step.

"Before any process is created" is proved with the real kernel: the call runs
in a child confined to a pids cgroup with pids.max=1, where every clone/fork
fails with EAGAIN.  A validation error raised there cannot have come from a
spawned child.
"""

from __future__ import annotations

import errno
import stat
from pathlib import Path
from typing import Any, Callable

import pytest

import isolate
from conftest import (
    RUN_TIMEOUT,
    child_processes,
    pids_cgroup_available,
    require,
    run_in_fork,
    run_without_clone,
)


def confined_error(fn: Callable[[], Any]) -> dict[str, Any]:
    """The exception ``fn`` raises when no process can be created; fail if none."""
    require(pids_cgroup_available(), "a writable pids cgroup (root, cgroup v1 pids or v2)")
    outcome = run_without_clone(fn)
    assert not outcome["ok"], f"expected an error, got {outcome['value']!r}"
    return outcome["exc"]


def assert_config_error(exc: dict[str, Any], field_part: str) -> None:
    """``exc`` is a ConfigError whose .field mentions ``field_part``."""
    assert "ConfigError" in exc["mro"], f"{exc['type']}: {exc['str']}\n{exc['traceback']}"
    assert "ValueError" in exc["mro"]
    assert exc["field"] and field_part in exc["field"], (exc["field"], exc["str"])


def test_harness_really_blocks_process_creation():
    """Control: in the confined child a valid run fails (it cannot clone), not ConfigError."""
    exc = confined_error(lambda: isolate.run(["true"], timeout=RUN_TIMEOUT))
    assert "ConfigError" not in exc["mro"]
    assert "OSError" in exc["mro"], exc


BAD_RUNS: dict[str, tuple[Callable[[], Any], str]] = {
    "empty argv": (lambda: isolate.run([]), "args"),
    "argv with NUL": (lambda: isolate.run(["tr\0ue"]), "args"),
    "argv with non-string": (lambda: isolate.run(["true", None]), "args"),
    "unknown namespace": (lambda: isolate.run(["true"], namespaces=["user", "bogus"]),
                          "namespaces"),
    "relative bind target": (lambda: isolate.run(["true"], mounts=[isolate.Bind("/usr", "usr")]),
                             "target"),
    "relative tmpfs target": (lambda: isolate.run(["true"], mounts=[isolate.Tmpfs("mnt/x")]),
                              "target"),
    "missing bind source": (lambda: isolate.run(
        ["true"], mounts=[isolate.Bind("/nonexistent-isolate-src", "/mnt")]), "source"),
    "rootfs is a file": (lambda: isolate.run(["true"], rootfs="/etc/passwd"), "rootfs"),
    "rootfs missing": (lambda: isolate.run(["true"], rootfs="/nonexistent-isolate-root"),
                       "rootfs"),
    "relative cwd": (lambda: isolate.run(["true"], cwd="tmp"), "cwd"),
    "nonexistent cwd": (lambda: isolate.run(["true"], cwd="/nonexistent-isolate-cwd"), "cwd"),
    "cwd is a file": (lambda: isolate.run(["true"], cwd="/etc/passwd"), "cwd"),
    "hostname too long": (lambda: isolate.run(["true"], hostname="h" * 65), "hostname"),
    "negative user": (lambda: isolate.run(["true"], user=-1), "user"),
    "negative group": (lambda: isolate.run(["true"], group=-5), "group"),
    "env key with =": (lambda: isolate.run(["true"], env={"A=B": "c"}), "env"),
    "pass_fds stdio": (lambda: isolate.run(["true"], pass_fds=[1]), "pass_fds"),
    "overlapping uid_map": (lambda: isolate.run(["true"], uid_map=[(0, 107, 2), (1, 3460, 3)]),
                            "uid_map"),
    "user not in uid_map": (lambda: isolate.run(["true"], user=5, uid_map=[(0, 0, 1)]), "u"),
    "group not in gid_map": (lambda: isolate.run(["true"], gid_map=[(5, 107, 2)]), "g"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_input_raises_config_error_before_clone(case: str):
    """Each bad input raises ConfigError naming its field, with no process created."""
    fn, field = BAD_RUNS[case]
    assert_config_error(confined_error(fn), field)


@pytest.mark.parametrize("kwargs,field", [
    ({"namespaces": ["nope"]}, "namespaces"),
    ({"rootfs": "/etc/passwd"}, "rootfs"),
    ({"cwd": "relative"}, "cwd"),
    ({"hostname": ""}, "hostname"),
    ({"user": 2**40}, "user"),
])
def test_config_construction_validates(kwargs: dict, field: str):
    """isolate.Config(...) itself raises ConfigError naming the field."""
    with pytest.raises(isolate.ConfigError) as info:
        isolate.Config(**kwargs)
    assert field in info.value.field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["definitely-not-a-binary-xyz", "/nonexistent/bin/tool"])
def test_missing_executable(name: str):
    """A missing executable raises ExecutableNotFound whose message names it."""
    with pytest.raises(isolate.ExecutableNotFound) as info:
        isolate.run([name], timeout=RUN_TIMEOUT)
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, isolate.SpawnError)
    assert name in str(err)
    assert err.errno == errno.ENOENT


def test_missing_executable_known_before_clone():
    """With the host's root, a missing executable is known before any clone."""
    exc = confined_error(lambda: isolate.run(["definitely-not-a-binary-xyz"]))
    assert "ExecutableNotFound" in exc["mro"], exc
    assert "definitely-not-a-binary-xyz" in exc["str"]


def test_executable_missing_only_inside_rootfs(host_dir: Path):
    """A binary present on the host but absent from the container's rootfs is not found."""
    root = host_dir / "root"
    for d in ("proc", "dev", "tmp", "sys"):
        (root / d).mkdir(parents=True)
    with pytest.raises(isolate.ExecutableNotFound) as info:
        isolate.run(["/bin/sh", "-c", "true"], rootfs=str(root), timeout=RUN_TIMEOUT)
    assert "/bin/sh" in str(info.value)


def test_exec_format_error_names_step(host_dir: Path):
    """An executable file the kernel cannot run fails inside the child with a SpawnError
    naming the exec step and the path (this cannot be validated before clone)."""
    tool = host_dir / "garbage"
    tool.write_bytes(b"\x01\x02\x03 not an executable format\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    with pytest.raises(isolate.SpawnError) as info:
        isolate.run(["/mnt/garbage"], mounts=[isolate.Bind(str(host_dir), "/mnt")],
                    timeout=RUN_TIMEOUT)
    err = info.value
    assert err.errno == errno.ENOEXEC
    assert "/mnt/garbage" in str(err)
    assert "exec" in str(err).lower() and "exec" in err.step.lower()


def test_not_executable_is_spawn_error():
    """A non-executable file as argv[0] raises SpawnError with EACCES naming the path."""
    with pytest.raises(isolate.SpawnError) as info:
        isolate.run(["/etc/passwd"], timeout=RUN_TIMEOUT)
    assert info.value.errno == errno.EACCES
    assert "/etc/passwd" in str(info.value)


def test_mount_failure_in_child_names_step():
    """Binding a file over a directory fails: the error names the mount and its target."""
    with pytest.raises((isolate.SpawnError, isolate.ConfigError)) as info:
        isolate.run(["true"], mounts=[isolate.Bind("/etc/hostname", "/srv")],
                    timeout=RUN_TIMEOUT)
    err = info.value
    if isinstance(err, isolate.ConfigError):
        assert "mounts" in err.field or "target" in err.field or "source" in err.field
    else:
        assert ("mount" in err.step or "bind" in err.step) and "/srv" in err.step, err.step
        assert err.errno in (errno.ENOTDIR, errno.EINVAL)


def test_cwd_missing_inside_container(host_dir: Path):
    """A cwd that exists on the host but not in the container's private /tmp fails cleanly,
    naming the cwd (as ConfigError) or the chdir step (as SpawnError)."""
    name = host_dir.name
    host_tmp_dir = Path("/tmp") / name
    host_tmp_dir.mkdir()
    try:
        with pytest.raises((isolate.SpawnError, isolate.ConfigError)) as info:
            isolate.run(["true"], cwd=str(host_tmp_dir), timeout=RUN_TIMEOUT)
    finally:
        host_tmp_dir.rmdir()
    err = info.value
    if isinstance(err, isolate.ConfigError):
        assert err.field == "cwd"
    else:
        assert "chdir" in err.step and str(host_tmp_dir) in err.step
        assert err.errno == errno.ENOENT


@pytest.mark.parametrize("kwargs", [
    {"uid_map": [(0, 107, 2), (1, 3460, 3)]},
    {"gid_map": [(0, 107, 2), (1, 3460, 3)]},
    {"uid_map": [(0, 0, 1), (0, 0, 1)]},
])
def test_id_map_rejected_by_kernel_does_not_hang(kwargs: dict):
    """An id map the kernel refuses fails promptly with ConfigError/SpawnError (no hang).

    Runs in a forked child so that a hang fails this test instead of the suite.
    """
    outcome = run_in_fork(lambda: isolate.run(["true"], timeout=RUN_TIMEOUT, **kwargs),
                          timeout=RUN_TIMEOUT)
    assert not outcome["ok"], "the kernel accepted an overlapping id map?"
    mro = outcome["exc"]["mro"]
    assert "ConfigError" in mro or "SpawnError" in mro, outcome["exc"]["traceback"]


def test_error_hierarchy():
    """The documented exception hierarchy."""
    assert issubclass(isolate.ConfigError, isolate.IsolateError)
    assert issubclass(isolate.ConfigError, ValueError)
    assert issubclass(isolate.SpawnError, isolate.IsolateError)
    assert issubclass(isolate.SpawnError, OSError)
    assert issubclass(isolate.ExecutableNotFound, isolate.SpawnError)
    assert issubclass(isolate.ExecutableNotFound, FileNotFoundError)
    assert issubclass(isolate.UserNamespaceError, isolate.SpawnError)
    assert issubclass(isolate.UserNamespaceError, PermissionError)
    assert issubclass(isolate.TimeoutExpired, isolate.IsolateError)
    assert issubclass(isolate.CalledProcessError, isolate.IsolateError)
    assert isolate.errors.IsolateError is isolate.IsolateError


def test_no_leftover_after_errors():
    """Sanity: errors leave no child process behind."""
    for case, (fn, _) in BAD_RUNS.items():
        if "map" in case:
            continue  # these may reach the kernel (and have hung): tested in a fork
        with pytest.raises(isolate.ConfigError):
            fn()
    assert child_processes() == []
