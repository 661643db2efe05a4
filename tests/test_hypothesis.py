"""Generated configs either run `true` or raise a clean validation/spawn error.

Never a crash (another exception type), a hang (the run is bounded by
timeout=), or a leak (host mounts, fds and child processes are compared after
every example).
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isolate
from conftest import RUN_TIMEOUT, child_processes, host_mountinfo, open_fds, run_in_fork

NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "net", "cgroup", "time")

hostnames = st.one_of(
    st.none(),
    st.text(string.ascii_letters + string.digits + "-.", min_size=1, max_size=64),
    st.text(max_size=70),
)
env_dicts = st.one_of(
    st.none(),
    st.dictionaries(st.text(string.ascii_uppercase + "_", min_size=1, max_size=8),
                    st.text(max_size=20), max_size=5),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
paths = st.one_of(
    st.sampled_from(["/", "/tmp", "/usr", "/usr/bin", "/proc", "/dev", "/etc/passwd",
                     "/nonexistent", "relative", "", "/mnt/../etc", "/tmp/x/y", "//usr//"]),
    st.text(max_size=16).map(lambda s: "/" + s),
)
#: "SCRATCH" stands for a throw-away host directory, the only source bound read-write
#: (a read-write bind of a real host directory could get mount points created in it).
sources = st.sampled_from(["/usr", "/etc", "/etc/hostname", "/var/tmp", "/dev/null",
                           "/nonexistent-src", "relative-src", "/proc/self", "SCRATCH"])
mount_specs = st.tuples(st.sampled_from(["bind", "tmpfs"]), sources, paths, st.booleans(),
                        st.sampled_from([None, 1 << 20, "64M", "bogus", -1]),
                        st.sampled_from([0o755, 0o700, 0o1777, 0o17777, -1]))
ids = st.one_of(st.integers(0, 70000), st.integers(-3, -1),
                st.sampled_from([2**32 - 2, 2**32 - 1, 2**32, 2**40]))
id_maps = st.one_of(
    st.none(),
    st.lists(st.tuples(st.integers(0, 70000), st.integers(0, 70000), st.integers(0, 4)),
             max_size=3),
)


@pytest.fixture(scope="module")
def prepared_rootfs() -> Iterator[str]:
    """A small rootfs directory with every mount point a container needs."""
    base = Path(tempfile.mkdtemp(prefix="isolate-test-root-", dir="/var/tmp"))
    for d in ("proc", "dev", "tmp", "sys", "usr", "mnt", "srv", "opt", "etc"):
        (base / d).mkdir()
    for link in ("bin", "sbin", "lib", "lib64"):
        (base / link).symlink_to(f"usr/{link}")
    os.chmod(base, 0o755)
    yield str(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    """A throw-away host directory that generated read-write binds may use."""
    path = tempfile.mkdtemp(prefix="isolate-test-scratch-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def build_mounts(specs: list[tuple], scratch: str = "/var/tmp") -> list[Any]:
    """Build Bind/Tmpfs objects from generated specs (constructors may raise ConfigError)."""
    mounts = []
    for kind, source, target, readonly, size, mode in specs:
        if kind == "bind":
            if source == "SCRATCH":
                source = scratch
            else:
                readonly = True
            mounts.append(isolate.Bind(source, target, readonly=readonly))
        else:
            mounts.append(isolate.Tmpfs(target, size=size, mode=mode))
    return mounts


@st.composite
def configs(draw: st.DrawFn, rootfs_choices: tuple) -> dict[str, Any]:
    """A random mix of config keywords (some valid, some not)."""
    cfg: dict[str, Any] = {}
    if draw(st.booleans()):
        cfg["namespaces"] = draw(st.sets(st.sampled_from(NAMESPACES + ("bogus",)), max_size=9))
    for key, strategy in [("hostname", hostnames), ("env", env_dicts), ("cwd", paths),
                          ("user", ids), ("group", ids), ("uid_map", id_maps),
                          ("gid_map", id_maps), ("init", st.booleans()),
                          ("new_session", st.booleans()), ("die_with_parent", st.booleans()),
                          ("rootfs", st.sampled_from(rootfs_choices)),
                          ("rootfs_readonly", st.booleans())]:
        if draw(st.booleans()):
            value = draw(strategy)
            if value is not None:
                cfg[key] = value
    cfg["mounts"] = draw(st.lists(mount_specs, max_size=3))
    return cfg


def leak_state() -> tuple:
    """What one example must leave unchanged."""
    return sorted(open_fds()), host_mountinfo()


def run_generated(argv: list[str], cfg: dict[str, Any], scratch: str) -> str:
    """Run argv with cfg; return "ran" or the allowed exception's name; re-raise others."""
    try:
        cfg = dict(cfg, mounts=build_mounts(cfg["mounts"], scratch))
        r = isolate.run(argv, timeout=RUN_TIMEOUT, capture_output=True, **cfg)
    except isolate.TimeoutExpired:
        pytest.fail(f"`true` hung with {cfg!r}")
    except (isolate.ConfigError, isolate.SpawnError) as exc:
        return type(exc).__name__
    assert r.returncode == 0, (cfg, r)
    return "ran"


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_configs_run_or_raise_cleanly(data: st.DataObject, prepared_rootfs: str,
                                               scratch: str):
    """Any generated config runs `true` (status 0) or raises ConfigError/SpawnError,
    leaving fds, host mounts and child processes exactly as they were.

    Each example runs in a forked child, bounded in time, so a hang fails the
    example instead of stalling the suite."""
    rootfs_choices = ("/", prepared_rootfs, "/etc/passwd", "/nonexistent-root", "rel")
    cfg = data.draw(configs(rootfs_choices))
    argv = data.draw(st.sampled_from([["true"], ["/bin/true"], ["/usr/bin/true"]]))
    if cfg.get("rootfs") == prepared_rootfs:
        cfg["mounts"] = [("bind", "/usr", "/usr", True, None, 0o755), *cfg["mounts"]]
    else:
        cfg.pop("rootfs_readonly", None)  # never make a real host directory writable
    outcome = run_in_fork(lambda: run_and_check_leaks(argv, cfg, scratch),
                          timeout=RUN_TIMEOUT)
    if not outcome["ok"]:
        exc = outcome["exc"]
        pytest.fail(f"{exc['type']} with {cfg!r}: {exc['str']}\n{exc['traceback']}")
    assert child_processes() == []


def run_and_check_leaks(argv: list[str], cfg: dict[str, Any], scratch: str) -> str:
    """In a forked child: run one generated config and check it leaked nothing."""
    isolate.run(["true"], timeout=RUN_TIMEOUT)  # lazily created state is not a leak
    before = leak_state()
    result = run_generated(argv, cfg, scratch)
    assert leak_state() == before, f"leaked fds or host mounts with {cfg!r}"
    assert child_processes() == [], child_processes()
    return result


@settings(max_examples=300, deadline=None)
@given(cfg=configs(("/", "/etc/passwd", "/nonexistent-root", "rel")))
def test_config_construction_never_crashes(cfg: dict[str, Any]):
    """Config(...) from generated keywords either builds or raises ConfigError (no other type)."""
    try:
        config = isolate.Config(**dict(cfg, mounts=build_mounts(cfg["mounts"])))
    except isolate.ConfigError as exc:
        assert exc.field, "ConfigError must name a field"
        return
    assert isinstance(config.namespaces, frozenset)
    assert set(config.namespaces) <= set(NAMESPACES)
    assert config.env.get("PATH"), "PATH is always set"
