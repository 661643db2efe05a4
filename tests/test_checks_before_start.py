"""Bad input is refused before anything starts, naming the field and the
value (issue 10, item 11), and leaves nothing behind."""
from __future__ import annotations

import os

import pytest

import isolate
from isolate import Bind, CgroupLimit, ConfigError, ImageError, Tmpfs

from conftest import assert_no_leaks, require, snapshot


def refused(match: str, **config) -> ConfigError:
    """run(["true"], **config) raises a ConfigError matching `match`, and
    nothing is left: no cgroup, mount, fd, process or temp entry."""
    before = snapshot()
    with pytest.raises(ConfigError, match=match) as info:
        isolate.run(["true"], **config)
    assert_no_leaks(before, snapshot())
    return info.value


def closed_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    return fd + 100


def test_pass_fds_that_is_not_open():
    fd = closed_fd()
    error = refused(r"pass_fds: %d is not an open file descriptor" % fd, pass_fds=[fd])
    assert error.field == "pass_fds"


def test_more_cpus_than_the_host_has():
    cpus = os.cpu_count()
    refused(rf"CgroupLimit.cpu: {cpus * 500} CPUs asked for; this host has {cpus}",
            limits=CgroupLimit(cpu=cpus * 500))


def test_cpuset_of_cpus_the_host_lacks():
    refused(r"CgroupLimit.cpuset: '999' names 999, not online", limits=CgroupLimit(cpuset="999"))


def test_memory_below_what_a_container_needs():
    with pytest.raises(ConfigError, match=r"CgroupLimit.memory: '5M' is below the minimum of 6M"):
        CgroupLimit(memory="5M")
    assert CgroupLimit(memory="6M").memory == 6 << 20


def test_update_checks_the_host_too():
    with isolate.Container(["sleep", "30"]) as c:
        with pytest.raises(ConfigError, match="CgroupLimit.cpu"):
            c.update(CgroupLimit(cpu=(os.cpu_count() or 1) * 500))
        c.kill()


@pytest.mark.parametrize("mount", [Bind("/tmp", "/proc"), Bind("/tmp", "/proc/sys"),
                                   Tmpfs("/proc/sys/kernel"), Bind("/dev/null", "/proc/keys")])
def test_mounts_over_proc_are_refused(mount):
    error = refused(r"mounts\[0\].target: /proc", mounts=[mount])
    assert error.field == "mounts[0].target"


def test_lxcfs_style_binds_over_proc_files_stay_allowed(tmp_path):
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal: 1 kB\n")
    os.chmod(tmp_path, 0o755)
    r = isolate.run(["cat", "/proc/meminfo"], mounts=[Bind(fake, "/proc/meminfo")],
                    capture_output=True, text=True)
    assert r.stdout == "MemTotal: 1 kB\n", r


def test_env_values_must_be_text():
    with pytest.raises(ConfigError, match=r"env: value of 'A' must be a str, got int 1"):
        isolate.Config(env={"A": 1})
    with pytest.raises(ConfigError, match=r"env: value of 'A' contains a NUL byte"):
        isolate.Config(env={"A": "x\0y"})


def test_image_store_that_cannot_be_made():
    with pytest.raises(ImageError, match="/proc/nope"):
        isolate.ImageStore("/proc/nope")


def test_pids_limit_of_one_starts():
    """pids=1 used to fail with a bare EAGAIN: the setup process took the
    one pid.  Now the workload runs, and only it counts."""
    require(os.geteuid() == 0, "cgroup limits need root here")
    r = isolate.run(["sh", "-c", "echo ran"], limits=CgroupLimit(pids=1), capture_output=True,
                    text=True)
    assert (r.returncode, r.stdout) == (0, "ran\n"), r
