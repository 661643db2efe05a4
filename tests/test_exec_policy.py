"""exec keeps the container's policy (issue 10, item 3): an exec'd process
joins the container's cgroup and gets its seccomp filter, rlimits,
capabilities and no_new_privs, unless the caller explicitly weakens them.
"""
from __future__ import annotations

import json
import os

import pytest

import isolate
from isolate import CgroupLimit, Seccomp

from conftest import POLICY_PROBE, PYTHON, RUN_TIMEOUT, pids_cgroup_available, require

POLICY = dict(seccomp=Seccomp.deny(["socket"]), rlimits={"nofile": 64}, cap_drop=["NET_RAW"])


def probe(c: isolate.Container, **overrides) -> dict:
    r = c.exec([PYTHON, "-c", POLICY_PROBE], capture_output=True, text=True, timeout=RUN_TIMEOUT,
               **overrides)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_exec_applies_the_containers_seccomp_rlimits_and_privileges(caller):
    def body():
        with isolate.Container(["sleep", "60"], **POLICY) as c:
            own = probe(c)
            c.kill()
        with isolate.Container(["sleep", "60"]) as plain:
            default = probe(plain)
            plain.kill()
        return own, default
    own, default = caller(body)
    assert own["socket"] == 1                 # EPERM: the container's filter
    assert own["nofile"] == [64, 64]
    assert own["nnp"] == "1"
    assert own["capbnd"] != default["capbnd"]  # NET_RAW dropped as in the container
    assert default["socket"] == "ok"


def test_exec_may_weaken_the_policy_explicitly(caller):
    def body():
        with isolate.Container(["sleep", "60"], **POLICY) as c:
            result = probe(c, seccomp="default", rlimits={"nofile": 128})
            c.kill()
            return result
    weakened = caller(body)
    assert weakened["socket"] == "ok"
    assert weakened["nofile"] == [128, 128]


def test_exec_joins_the_containers_cgroup_and_its_limits():
    """pids=8 counts the exec'd shell's processes too, and kill() ends them."""
    require(os.geteuid() == 0, "cgroup limits need root here")
    require(pids_cgroup_available(), "the pids controller")
    with isolate.Container(["sleep", "60"], limits=CgroupLimit(pids=8)) as c:
        r = c.exec(["sh", "-c", "cat /proc/self/cgroup"], capture_output=True, text=True,
                   timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stderr
        # Inside the container's cgroup namespace, its own cgroup is "/".
        assert all(line.endswith(":/") for line in r.stdout.splitlines()), r.stdout
        # 20 background sleeps: the 8 processes allowed stop most of them.
        r = c.exec(["sh", "-c", "for i in $(seq 20); do sleep 30 >/dev/null 2>&1 & done"],
                   capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert r.returncode != 0 and "fork" in r.stderr.lower(), r
        started = c.exec(["sleep", "300"], wait=False)
        assert started.pid in _cgroup_pids(c)
        c.kill()
        assert started.wait(timeout=RUN_TIMEOUT) == -9


def _cgroup_pids(c: isolate.Container) -> set[int]:
    pids: set[int] = set()
    for directory in c.cgroup.directories():
        with open(os.path.join(directory, "cgroup.procs")) as f:
            pids.update(int(line) for line in f if line.strip())
    return pids


def test_exec_into_an_exited_container_is_refused():
    with isolate.Container(["true"]) as c:
        c.wait(timeout=RUN_TIMEOUT)
        with pytest.raises(isolate.IsolateError, match="exited"):
            c.exec(["true"])
