"""cffi builder for isolate's native layer (named in setup.py's cffi_modules).

The spawn plan's declarations cffi sees are exactly plan.h, which the C
files include too, so Python and C cannot disagree about a struct's layout.
syscalls.cdef declares the thin syscall layer used by isolate/_spawn/syscalls.py.

A second, pure-Python module: libseccomp.cdef in cffi's out-of-line ABI mode
(seccomp_ffibuilder; setup.py writes it as isolate/_libseccomp.py next to
the extension).  Its declarations are parsed here, at build time, so that
compiling a seccomp profile does not load pycparser in every process; the
library itself is dlopen'ed at run time, so building needs no libseccomp
headers.
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["spawn.c", "child.c", "workload.c", "syscalls.c"]

# Headers the generated module includes: the constants in syscalls.cdef are
# read from these.
PREAMBLE = """
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <linux/mount.h>
#include "native.h"
#include "syscalls.h"
"""


def _relative(name: str) -> str:
    # setuptools wants sources relative to setup.py's directory.
    return os.path.relpath(os.path.join(HERE, name))


ffibuilder = FFI()
for name in ("plan.h", "syscalls.cdef"):
    with open(os.path.join(HERE, name)) as header:
        ffibuilder.cdef(header.read())
ffibuilder.set_source(
    "isolate._native",
    PREAMBLE,
    sources=[_relative(name) for name in SOURCES],
    include_dirs=[HERE],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

seccomp_ffibuilder = FFI()
with open(os.path.join(HERE, "libseccomp.cdef")) as header:
    seccomp_ffibuilder.cdef(header.read())
seccomp_ffibuilder.set_source("isolate._libseccomp", None)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
