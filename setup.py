"""Build script: the pure-Python package, the cffi extension in _native/,
and the static pid1 program that becomes each container's init."""
import importlib.util
import os

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

PID1_SOURCE = "_native/pid1.c"
NATIVE_BUILD = "_native/build.py"


class BuildExtWithPid1(build_ext):
    """build_ext, plus two files next to the extension: isolate/_pid1, linked
    statically, because it runs inside the container's root filesystem,
    where the host's dynamic loader and libc may be absent; and
    isolate/_libseccomp.py, libseccomp's declarations already parsed (see
    _native/build.py)."""

    def run(self):
        super().run()
        self._build_pid1()
        self._write_libseccomp()

    def _write_libseccomp(self):
        spec = importlib.util.spec_from_file_location("_isolate_native_build", NATIVE_BUILD)
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        ext_path = self.get_ext_fullpath("isolate._native")
        build.seccomp_ffibuilder.emit_python_code(
            os.path.join(os.path.dirname(ext_path), "_libseccomp.py"))

    def _build_pid1(self):
        ext_path = self.get_ext_fullpath("isolate._native")
        target = os.path.join(os.path.dirname(ext_path), "_pid1")
        objects = self.compiler.compile([PID1_SOURCE], output_dir=self.build_temp,
                                        include_dirs=["_native"],
                                        extra_postargs=["-std=gnu11", "-O2", "-Wall"])
        self.compiler.link_executable(objects, os.path.basename(target),
                                      output_dir=os.path.dirname(target),
                                      extra_postargs=["-static", "-s"])


setup(
    # The distribution name: "isolate" on PyPI is another project (fal.ai's),
    # so `pip install isolate` would not get this one.  The import package
    # and the command stay `isolate`.
    name="isolate-sdk",
    version="0.1.0",
    description="Linux process isolation (namespaces, mounts, PID 1) as a Python library",
    packages=find_packages(include=["isolate", "isolate.*"]),
    python_requires=">=3.10",
    setup_requires=["cffi>=1.15"],
    cffi_modules=[f"{NATIVE_BUILD}:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithPid1},
    install_requires=["cffi>=1.15", "attrs>=22.2", "psutil>=5.9", "zstandard>=0.21"],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6"]},
    entry_points={"console_scripts": ["isolate = isolate.cli.main:main"]},
    # The wheel holds the built extension and the static isolate/_pid1 (build_ext
    # writes it into the build tree, so it ships without package_data), so it
    # installs without a compiler.  cffi builds the extension against the
    # stable ABI (_native.abi3.so: Py_LIMITED_API), so one wheel serves every
    # CPython >= python_requires: tag cp310-abi3-linux_x86_64.
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
