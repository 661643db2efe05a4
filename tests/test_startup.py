"""Start-up cost: ``import isolate`` and the CLI load only what they need.

Each check runs in a fresh interpreter (sys.executable -c ...), which
reports the modules that appeared in sys.modules after the statement under
test; modules the interpreter's own start-up loaded (site, .pth files) do
not count.  Nothing here is timed: benchmarks/startup.py measures.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import isolate
from isolate import namespace
from isolate.cli import options as cli_options

#: Printed by the child: the names new in sys.modules after `code` ran.
PROBE = """
import json, sys
before = set(sys.modules)
{code}
print(json.dumps(sorted(set(sys.modules) - before)))
"""

#: Never needed by `import isolate`, `isolate.run` or `isolate ps`.  (Not
#: zlib, bz2 and lzma: argparse's help formatter imports shutil, which does.)
HEAVY = ("tarfile", "hashlib", "gzip", "secrets", "uuid",
         "isolate.images", "isolate.images.store", "isolate.images.archive",
         "isolate.layers.apply", "isolate.layers.write", "isolate.cli", "isolate.cli.main",
         "isolate.cli.run", "isolate.cli.images", "isolate.cli.completion", "isolate.named",
         "isolate.named.containers")

#: What `import isolate` itself loads: the package and its lazy-export helper.
IMPORT_ISOLATE = {"isolate", "isolate._util", "isolate._util.lazy"}


def loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter loads to run `code`."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_isolate_loads_no_submodule():
    new = loaded_by("import isolate")
    assert {m for m in new if m.startswith("isolate")} == IMPORT_ISOLATE
    # json is imported by the probe itself before `before` is taken, so it is
    # checked by name in the next line's fresh interpreter instead.
    heavy = set(HEAVY) | {"attrs", "attr", "cffi", "pycparser", "subprocess",
                          "isolate.security.seccomp", "isolate.named.state", "isolate.config",
                          "isolate.cgroups", "isolate.cgroups.interface"}
    assert not new & heavy, sorted(new & heavy)


def test_import_isolate_does_not_import_json():
    # Without the probe (which needs json), in an interpreter of its own.
    code = "import sys, isolate; print('json' in sys.modules, 'hashlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "False"]


def test_run_loads_no_image_store_archive_or_state():
    new = loaded_by("import isolate; assert isolate.run(['true']).returncode == 0")
    assert not new & set(HEAVY), sorted(new & set(HEAVY))
    assert not new & {"isolate.named.state", "isolate.cgroups.interface", "isolate.cgroups.v1",
                      "isolate.cgroups.v2"}


def test_cli_ps_loads_neither_images_nor_seccomp_nor_spawn_path(tmp_path):
    root = tmp_path / "state"
    new = loaded_by(f"from isolate.cli.main import main; "
                    f"assert main(['--root', {str(root)!r}, 'ps']) == 0")
    unwanted = (set(HEAVY) - {"isolate.cli", "isolate.cli.main", "isolate.named"}) | {
        "isolate.security.seccomp", "isolate.config", "isolate.container", "isolate._native",
        "cffi", "pycparser", "isolate.cgroups.interface", "subprocess"}
    assert not new & unwanted, sorted(new & unwanted)


def test_cli_help_loads_only_the_cli():
    new = loaded_by("from isolate.cli.main import build_parser; build_parser()[0].format_help()")
    assert {m for m in new if m.startswith("isolate")} == IMPORT_ISOLATE | {
        "isolate.cli", "isolate.cli.main", "isolate.cli.options", "isolate.cli.output",
        "isolate.errors"}
    assert "attrs" not in new


def test_cli_namespaces_are_namespace_kinds():
    assert cli_options.NAMESPACES == tuple(namespace.KINDS)


def test_every_name_in_all_resolves_in_a_fresh_interpreter():
    code = ("import isolate\n"
            "from isolate import *\n"
            "missing = [n for n in isolate.__all__ if n not in globals()]\n"
            "assert not missing, missing\n"
            "assert set(isolate.__all__) <= set(dir(isolate))\n")
    loaded_by(code)


@pytest.mark.parametrize("name", isolate.__all__)
def test_public_name_is_the_defining_modules_object(name):
    module, _, attribute = isolate._EXPORTS[name].partition(":")
    attribute = attribute or name
    defining = __import__(f"isolate.{module}", fromlist=[attribute])
    assert getattr(isolate, name) is getattr(defining, attribute)


def test_all_is_unchanged():
    # The public API before the imports became lazy (docs/api.md).
    assert sorted(isolate.__all__) == sorted([
        "ALL_NAMESPACES", "Bind", "CalledProcessError", "CgroupError", "CgroupLimit",
        "CompletedProcess", "Config", "ConfigError", "Container", "ContainerExists",
        "ContainerNotFound", "ContainerState", "DEVNULL", "ExecutableNotFound", "Image",
        "ImageError", "ImageStore", "IsolateError", "LayerError", "Namespace", "NamespaceError",
        "Overlay", "PIPE", "Process", "STDOUT", "Seccomp", "SpawnError", "SpawnTimeout",
        "StateDir", "StateError", "TimeoutExpired", "Tmpfs", "UserNamespaceError", "exec_in", "run"])
    assert set(isolate._EXPORTS) == set(isolate.__all__)


@pytest.mark.parametrize("name", ["seccomp", "named", "state", "limits", "idmaps", "errors",
                                  "images", "cli", "cgroups", "namespace", "overlay", "mounts"])
def test_documented_submodule_attribute(name):
    # isolate.seccomp.Seccomp, isolate.limits.MIN_MEMORY... as docs/api.md used them,
    # each in a fresh interpreter so the attribute access itself does the import.
    loaded_by(f"import isolate, types; assert isinstance(isolate.{name}, types.ModuleType)")


def test_from_isolate_import_submodule_and_class():
    loaded_by("from isolate import Seccomp, seccomp; assert seccomp.Seccomp is Seccomp")


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        isolate.no_such_thing
    assert not hasattr(isolate, "no_such_thing")
