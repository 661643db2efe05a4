"""The wheel: built from a clean copy of the repository, installed into a
fresh venv with no compiler in reach, and run.

`pip wheel .` must give one platform wheel that carries the compiled cffi
extension and the static isolate/_pid1, so that a machine without gcc can
`pip install` it and run containers.  Building needs the build requirements
and installing needs the dependencies: both come from the configured pip
index (PyPI), as for a user.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from conftest import REPO, require

DIST_NAME = "isolate-sdk"
#: cffi builds the extension against the stable ABI (_native.abi3.so), and
#: setup.py tags the wheel for it from python_requires' minimum.
ABI_TAG = "cp310-abi3"
COMPILERS = ("cc", "gcc", "clang", "c99", "tcc", "x86_64-linux-gnu-gcc")
PIP_TIMEOUT = 240
PIP_OFFLINE = ("No matching distribution found", "Could not find a version",
               "Failed to establish a new connection", "Network is unreachable",
               "Temporary failure in name resolution")


def _copy_of_repo(dest: Path) -> None:
    """The files a clone would have: tracked and untracked-but-not-ignored,
    from the working tree (so build/, *.so, isolate/_pid1 and .venv stay out)."""
    require(shutil.which("git") and (REPO / ".git").exists(),
            "a git checkout of the repository (to copy exactly its files)")
    listing = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"], check=True, capture_output=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = REPO / name
        if not source.is_file():        # deleted in the working tree
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _pip(args: list[str], env: dict[str, str] | None = None, python: str = sys.executable,
         cwd: Path | None = None) -> None:
    proc = subprocess.run([python, "-m", "pip", "--disable-pip-version-check",
                           "--no-input", *args],
                          env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=PIP_TIMEOUT)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        require(not any(sign in output for sign in PIP_OFFLINE),
                f"a reachable pip index (PyPI) for `pip {args[0]}`:\n{output[-2000:]}")
        raise AssertionError(f"pip {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{output[-4000:]}")


def _elf_has_interpreter(data: bytes) -> bool:
    """Whether an ELF64 executable names a dynamic loader (PT_INTERP)."""
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 file"
    endian = "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    PT_INTERP = 3
    return any(struct.unpack_from(endian + "I", data, phoff + i * phentsize)[0] == PT_INTERP
               for i in range(phnum))


def _compiler_free_env(venv: Path, empty_dir: Path) -> dict[str, str]:
    """The environment with PATH = the venv's bin and an empty directory: no
    compiler (nor anything else of the host's) to find, and no CC & co."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CC", "CXX", "LDSHARED", "CFLAGS", "LDFLAGS", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:{empty_dir}"
    for compiler in COMPILERS:
        assert shutil.which(compiler, path=env["PATH"]) is None, compiler
    return env


def test_wheel_installs_and_runs_without_a_compiler():
    with tempfile.TemporaryDirectory(prefix="isolate-packaging-") as tmp:
        tmp = Path(tmp)
        src, wheels, venv, empty = tmp / "src", tmp / "wheels", tmp / "venv", tmp / "empty"
        for d in (src, wheels, empty):
            d.mkdir()
        _copy_of_repo(src)

        # What the README says: `pip wheel .`, in its isolated build
        # environment (the build requirements of pyproject.toml).
        _pip(["wheel", "--no-deps", "-w", str(wheels), "."], cwd=src)
        built = sorted(wheels.iterdir())
        assert len(built) == 1, built
        wheel = built[0]
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        assert re.fullmatch(rf"isolate_sdk-[^-]+-{ABI_TAG}-{platform}\.whl", wheel.name), \
            wheel.name

        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            extensions = [n for n in names if re.fullmatch(r"isolate/_native\..*so", n)]
            assert extensions == ["isolate/_native.abi3.so"], sorted(names)
            assert "isolate/_pid1" in names, sorted(names)
            assert "isolate/_libseccomp.py" in names, sorted(names)   # parsed at build time
            pid1 = zf.read("isolate/_pid1")
            assert not _elf_has_interpreter(pid1), "isolate/_pid1 is not static"
            (dist_info,) = {n.split("/")[0] for n in names if ".dist-info/" in n}
            metadata = zf.read(f"{dist_info}/METADATA").decode()
            entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
            tags = zf.read(f"{dist_info}/WHEEL").decode()
        assert f"\nName: {DIST_NAME}\n" in metadata
        assert re.search(r"^isolate = isolate\.cli\.main:main$", entry_points, re.M), entry_points
        assert f"Tag: {ABI_TAG}-{platform}" in tags and "Root-Is-Purelib: false" in tags
        assert not any(n.startswith(("tests/", "benchmarks/", "_native/")) for n in names)

        # A fresh venv (no system site-packages), and an install that may
        # not build anything: wheels only, for the dependencies too.
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       capture_output=True, timeout=PIP_TIMEOUT)
        env = _compiler_free_env(venv, empty)
        python = str(venv / "bin" / "python")
        _pip(["install", "--only-binary", ":all:", str(wheel)], env=env, python=python,
             cwd=tmp)

        # The import package comes from that venv, with what the wheel put there.
        where = subprocess.run(
            [python, "-c", "import isolate, os; print(os.path.dirname(isolate.__file__))"],
            env=env, cwd=empty, check=True, capture_output=True, text=True, timeout=60)
        package = Path(where.stdout.strip())
        assert package.is_relative_to(venv), package
        assert (package / "_pid1").is_file() and (package / "_native.abi3.so").is_file()

        # The `isolate` command runs a container, with no compiler on PATH.
        command = str(venv / "bin" / "isolate")
        helped = subprocess.run([command, "--help"], env=env, cwd=empty,
                                capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith("usage: isolate"), helped.stdout
        ran = subprocess.run([command, "run", "--", "sh", "-c", "echo ok"], env=env,
                             cwd=empty, capture_output=True, text=True, timeout=60)
        assert (ran.returncode, ran.stdout) == (0, "ok\n"), ran.stderr
