"""isolate.named's exports: every name of its table resolves, in a fresh
interpreter, to the object of the module that defines it; none is named
as a submodule (which would replace it once imported); importing the
package loads none of them."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import isolate.named
from conftest import REPO, RUN_TIMEOUT

EXPORTS = isolate.named._EXPORTS


def fresh(code: str) -> str:
    """The output of `code` in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(REPO)}, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_name_resolves_in_a_fresh_interpreter() -> None:
    code = ("import isolate.named as named\n"
            "from isolate.named import *\n"
            "missing = [n for n in named._EXPORTS if n not in globals()]\n"
            "assert not missing, missing\n"
            "assert set(named._EXPORTS) <= set(dir(named))\n"
            "print('ok')\n")
    assert fresh(code) == "ok\n"


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_name_is_the_defining_modules_object(name: str) -> None:
    module, _, attribute = EXPORTS[name].partition(":")
    defining = __import__(f"isolate.named.{module}", fromlist=[attribute or name])
    assert getattr(isolate.named, name) is getattr(defining, attribute or name)


def test_no_name_is_a_submodules() -> None:
    submodules = {info.name for info in pkgutil.iter_modules(isolate.named.__path__)}
    assert {"inspect", "commit", "processes", "logs", "cgroup"} <= submodules
    assert not set(EXPORTS) & submodules
    assert set(isolate.named.__all__) == set(EXPORTS)


def test_the_verbs_of_the_command_line_are_exported() -> None:
    """What the CLI's verbs run, from the modules written for them."""
    assert {"inspect_named", "sample", "cpu_percent", "top_named", "pause_named", "unpause_named",
            "is_paused", "copy_from", "copy_into", "commit_named", "logs_named", "wait_named",
            "start_named", "stop_named", "restart_named", "kill_named", "remove_named",
            "exec_named"} <= set(EXPORTS)


def test_importing_the_package_loads_no_module_of_it() -> None:
    code = ("import sys\nbefore = set(sys.modules)\nimport isolate.named\n"
            "new = set(sys.modules) - before\n"
            "print(sorted(m for m in new if m.startswith('isolate.named.')))\n")
    assert fresh(code) == "[]\n"
