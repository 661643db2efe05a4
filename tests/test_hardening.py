"""Defaults that keep a workload from reaching the kernel or the host.

A first part of the hardening work: no_new_privs, and no inheritable or
ambient capabilities.  (The capability bounding set is tested in
test_isolation.py.)
"""
from __future__ import annotations

import isolate
from isolate import capabilities
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


def test_no_inheritable_or_ambient_capabilities():
    """CapInh and CapAmb are empty; CapBnd is exactly the kept set."""
    status = sh("cat /proc/self/status", capabilities=["SYS_ADMIN", "CHOWN"]).stdout
    assert int(status_field(status, "CapInh"), 16) == 0
    assert int(status_field(status, "CapAmb"), 16) == 0
    expected = (1 << capabilities.NUMBERS["SYS_ADMIN"]) | (1 << capabilities.NUMBERS["CHOWN"])
    assert int(status_field(status, "CapBnd"), 16) == expected


def test_flags_apply_rootless(rootless):
    """The same flags hold for an unprivileged caller."""
    def body() -> str:
        return sh("grep -E 'NoNewPrivs|CapInh|CapAmb' /proc/self/status").stdout

    isolate.run(["true"])   # load everything while still root
    out = unwrap(run_in_fork(body, setup=drop_to(*rootless)))
    assert out.split() == ["CapInh:", "0" * 16, "CapAmb:", "0" * 16, "NoNewPrivs:", "1"]
