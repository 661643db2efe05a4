"""Settings that keep a workload from reaching the kernel: capabilities,
no_new_privs and resource limits.  (The attacks these defend against are in
test_escapes.py.)
"""
from __future__ import annotations

import resource

import pytest

import isolate
from isolate.security import capabilities
from conftest import RUN_TIMEOUT, drop_to, run_in_fork, unwrap


def sh(script: str, **config) -> isolate.CompletedProcess:
    return isolate.run(["sh", "-c", script], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, **config)


def status_field(text: str, name: str) -> str:
    return next(line.split()[1] for line in text.splitlines() if line.startswith(name + ":"))


def test_no_new_privs_by_default():
    """The workload runs with no_new_privs set, unless asked otherwise."""
    assert status_field(sh("cat /proc/self/status").stdout, "NoNewPrivs") == "1"
    assert status_field(sh("cat /proc/self/status", no_new_privs=False).stdout, "NoNewPrivs") == "0"


def test_bounding_set_is_exactly_the_kept_set():
    """CapBnd holds the kept capabilities and nothing else."""
    status = sh("cat /proc/self/status", capabilities=["SYS_ADMIN", "CHOWN"]).stdout
    expected = (1 << capabilities.NUMBERS["SYS_ADMIN"]) | (1 << capabilities.NUMBERS["CHOWN"])
    assert int(status_field(status, "CapBnd"), 16) == expected


def test_cap_add_and_cap_drop():
    """cap_add/cap_drop adjust the default set by name, in any spelling."""
    config = isolate.Config(cap_add=["cap_sys_ptrace"], cap_drop=["NET_RAW", "CAP_CHOWN"])
    assert config.capabilities == (capabilities.DEFAULT | {"SYS_PTRACE"}) - {"NET_RAW", "CHOWN"}
    status = sh("cat /proc/self/status", config=config).stdout
    expected = sum(1 << capabilities.NUMBERS[name] for name in config.capabilities)
    assert int(status_field(status, "CapBnd"), 16) == expected
    assert int(status_field(status, "CapEff"), 16) == expected   # root inside: effective = bounding
    assert isolate.Config(cap_drop=["ALL"]).capabilities == frozenset()
    assert isolate.Config(cap_drop=["ALL"], cap_add=["KILL"]).capabilities == {"KILL"}


@pytest.mark.parametrize("field", ["capabilities", "cap_add", "cap_drop"])
def test_unknown_capability_names_raise(field):
    with pytest.raises(isolate.ConfigError) as info:
        isolate.Config(**{field: ["NET_ADMIN", "CAP_FLY"]})
    assert info.value.field == field and "CAP_FLY" in str(info.value)


def test_rlimits_applied():
    """Limits by name reach the workload: one value sets soft and hard,
    a pair sets each, sizes and None (unlimited) are understood."""
    out = sh("ulimit -Sn; ulimit -Hn; ulimit -Sc; ulimit -Hc; ulimit -Sv",
             rlimits={"nofile": (64, 128), "core": 0, "as": "1G"}).stdout.split()
    assert out == ["64", "128", "0", "0", str((1 << 30) // 1024)]


def test_rlimit_above_the_callers_hard_limit_is_refused():
    """Raising a hard limit is refused up front, naming the limit, since the
    child (in a user namespace) could not do it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with pytest.raises(isolate.ConfigError) as info:
        isolate.run(["true"], rlimits={"nofile": hard + 1})
    assert info.value.field == "rlimits.nofile" and str(hard) in str(info.value)


@pytest.mark.parametrize("rlimits, field", [
    ({"nofiles": 1}, "rlimits"),
    ({"nofile": (10, 5)}, "rlimits.nofile"),
    ({"nofile": -1}, "rlimits.nofile"),
    ({"as": "lots"}, "rlimits.as"),
    ({"cpu": "1G"}, "rlimits.cpu"),
])
def test_bad_rlimits_raise(rlimits, field):
    with pytest.raises(isolate.ConfigError) as info:
        isolate.Config(rlimits=rlimits)
    assert info.value.field == field


def test_flags_apply_rootless(rootless):
    """no_new_privs and the rlimits hold for an unprivileged caller too."""
    def body() -> str:
        return sh("grep NoNewPrivs /proc/self/status; ulimit -n", rlimits={"nofile": 50}).stdout

    isolate.run(["true"])   # load everything while still root
    out = unwrap(run_in_fork(body, setup=drop_to(*rootless)))
    assert out.split() == ["NoNewPrivs:", "1", "50"]
