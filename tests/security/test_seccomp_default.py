"""The default seccomp profile is an allow-list, in real containers, for a
root and a rootless caller: socket families Docker refuses, personality
values, system calls newer than the profile (ENOSYS, so libc falls back),
known ones it leaves out (EPERM), and the same answers through the i386
ABI; x32 system calls kill.  (test_seccomp.py covers the profile's other
refusals and custom profiles; test_seccomp_compile.py the compiled filter.)
"""
from __future__ import annotations

import json
import platform
import signal

import isolate
from conftest import PYTHON, RUN_TIMEOUT, require

#: Inside a container: make each raw system call of argv[1], a JSON list of
#: [label, abi, number, args...], through the x86_64 ABI (syscall(2)) or
#: the i386 one (int 0x80 from a page of machine code); print
#: {label: "ok" or the errno's name}.
PROBE = r"""
import ctypes, errno, json, mmap, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
pages = []

def x86_64(nr, *args):
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return -ctypes.get_errno() if rc == -1 else rc

def i386(nr, *args):
    code = b"\x53\xb8" + struct.pack("<I", nr)           # push rbx; mov eax, nr
    for op, arg in zip((0xBB, 0xB9, 0xBA), args):        # mov ebx/ecx/edx, imm32
        code += bytes([op]) + struct.pack("<I", arg & 0xFFFFFFFF)
    code += b"\xcd\x80\x5b\xc3"                          # int 0x80; pop rbx; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    pages.append(page)
    return ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()

def outcome(rc):
    return "ok" if rc >= 0 else errno.errorcode.get(-rc, str(-rc))

abis = {"x86_64": x86_64, "i386": i386}
print(json.dumps({label: outcome(abis[abi](nr, *args))
                  for label, abi, nr, *args in json.loads(sys.argv[1])}))
"""

AF_UNIX, AF_INET, AF_ALG, AF_VSOCK = 1, 2, 38, 40
SOCK_STREAM, SOCK_SEQPACKET = 1, 5
UPPER = 1 << 32
READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, PER_LINUX32 = 0x0400000, 0x0040000, 0x8

#: {label: (abi, number, args...)} and the answer each gets under the
#: default profile.  Numbers are x86_64's and i386's.
CALLS: dict[str, tuple] = {
    "socket_vsock": ("x86_64", 41, AF_VSOCK, SOCK_STREAM, 0),
    "socket_alg": ("x86_64", 41, AF_ALG, SOCK_SEQPACKET, 0),
    "socket_alg_upper_bits": ("x86_64", 41, UPPER | AF_ALG, SOCK_SEQPACKET, 0),
    "socket_vsock_upper_bits": ("x86_64", 41, UPPER | AF_VSOCK, SOCK_STREAM, 0),
    "socket_inet": ("x86_64", 41, AF_INET, SOCK_STREAM, 0),
    "socket_unix": ("x86_64", 41, AF_UNIX, SOCK_STREAM, 0),
    "personality_exec": ("x86_64", 135, READ_IMPLIES_EXEC),
    "personality_norandom": ("x86_64", 135, ADDR_NO_RANDOMIZE),
    "personality_upper_bits": ("x86_64", 135, UPPER | READ_IMPLIES_EXEC),
    "personality_query": ("x86_64", 135, 0xFFFFFFFF),
    "personality_linux32": ("x86_64", 135, PER_LINUX32),
    "personality_back": ("x86_64", 135, 0),
    "open_tree_attr": ("x86_64", 467, -1, 0, 0, 0, 0),
    "number_1000": ("x86_64", 1000),
    "tuxcall": ("x86_64", 184),                     # known, never implemented
    "migrate_pages": ("x86_64", 256, 0, 0, 0, 0),   # known, left out of Docker's list
    "keyctl": ("x86_64", 250, 0, -3, 0),
    "getpid": ("x86_64", 39),
    "i386_getpid": ("i386", 20),
    "i386_keyctl": ("i386", 288, 0, -3, 0),
    "i386_socket_alg": ("i386", 359, AF_ALG, SOCK_SEQPACKET, 0),
    "i386_socket_vsock": ("i386", 359, AF_VSOCK, SOCK_STREAM, 0),
    "i386_socket_inet": ("i386", 359, AF_INET, SOCK_STREAM, 0),
    "i386_socketcall": ("i386", 102, 1, 0),         # SYS_SOCKET: its family is in memory
    "i386_personality_exec": ("i386", 136, READ_IMPLIES_EXEC),
    "i386_personality_query": ("i386", 136, 0xFFFFFFFF),
    "i386_open_tree_attr": ("i386", 467, -1, 0, 0, 0, 0),
    "i386_number_1000": ("i386", 1000),
}

EXPECTED = {
    "socket_vsock": "EPERM", "socket_alg": "EPERM", "socket_alg_upper_bits": "EPERM",
    "socket_vsock_upper_bits": "EPERM",
    "socket_inet": "ok", "socket_unix": "ok",
    "personality_exec": "EPERM", "personality_norandom": "EPERM",
    "personality_upper_bits": "EPERM", "personality_query": "ok",
    "personality_linux32": "ok", "personality_back": "ok",
    "open_tree_attr": "ENOSYS", "number_1000": "ENOSYS",
    "tuxcall": "EPERM", "migrate_pages": "EPERM", "keyctl": "EPERM", "getpid": "ok",
    "i386_getpid": "ok", "i386_keyctl": "EPERM", "i386_socket_alg": "EPERM",
    "i386_socket_vsock": "EPERM", "i386_socket_inet": "ok", "i386_socketcall": "EPERM",
    "i386_personality_exec": "EPERM", "i386_personality_query": "ok",
    "i386_open_tree_attr": "ENOSYS", "i386_number_1000": "ENOSYS",
}


def require_x86() -> None:
    """The calls are numbered for x86; CI runs on x86_64, so it must run them."""
    require(platform.machine() == "x86_64", f"x86 system call numbers; this is {platform.machine()}")


def probe(calls: dict[str, tuple], **config) -> dict[str, str]:
    """Make `calls` in a container; {label: "ok" or errno name}."""
    spec = json.dumps([[label, *call] for label, call in calls.items()])
    r = isolate.run([PYTHON, "-c", PROBE, spec], capture_output=True, text=True,
                    timeout=RUN_TIMEOUT, **config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_default_profile_is_an_allow_list(caller):
    """Docker's answers, from the filter: AF_VSOCK and AF_ALG sockets are
    refused (also with bits above the 32 the kernel reads), other families
    work; personality takes only Docker's values; numbers newer than the
    profile get ENOSYS, known calls the profile leaves out EPERM; the i386
    ABI gets the same answers, and its socketcall (whose family seccomp
    cannot see) is refused."""
    require_x86()
    assert caller(lambda: probe(CALLS)) == EXPECTED


def test_the_answers_come_from_the_filter():
    """The control: without the filter the kernel answers otherwise (tuxcall
    is the kernel's ENOSYS, open_tree_attr its EBADF, personality works)."""
    require_x86()
    control = probe(CALLS, seccomp=None)
    for label in ("tuxcall", "migrate_pages", "open_tree_attr", "personality_exec",
                  "personality_norandom", "keyctl", "i386_keyctl", "i386_socketcall",
                  "i386_personality_exec"):
        assert control[label] != EXPECTED[label], (label, control[label])


def test_lsm_calls_do_not_reach_the_kernel(caller):
    """lsm_get_self_attr (kernel 6.8) is in Docker's profile for SYS_ADMIN
    only: EPERM where libseccomp knows it, else ENOSYS as newer than the
    profile; without the filter the kernel answers."""
    require_x86()
    calls = {"lsm_get_self_attr": ("x86_64", 459, 0, 0, 0, 0),
             "i386_lsm_get_self_attr": ("i386", 459, 0, 0, 0, 0)}
    filtered = caller(lambda: probe(calls))
    assert set(filtered.values()) <= {"ENOSYS", "EPERM"}, filtered
    assert "ENOSYS" not in probe(calls, seccomp=None).values()


def test_ordinary_programs_run(caller):
    """A shell pipeline, and Python starting threads and a subprocess and
    opening sockets (glibc tries clone3 first and falls back on ENOSYS)."""
    shell = ["sh", "-c", "echo allowed | tr a-z A-Z; ls / > /dev/null && echo listed"]
    code = ("import socket, subprocess, threading\n"
            "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
            "subprocess.run(['true'], check=True)\n"
            "socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close(); socket.socketpair()\n"
            "print('python')")

    def run() -> tuple[str, str]:
        sh = isolate.run(shell, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        py = isolate.run([PYTHON, "-c", code], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT)
        assert sh.returncode == 0 and py.returncode == 0, (sh.stderr, py.stderr)
        return sh.stdout, py.stdout
    assert caller(run) == ("ALLOWED\nlisted\n", "thread\npython\n")


def test_x32_system_calls_kill(caller):
    """An x32 system call (bit 0x40000000) kills the process, a known one
    and one newer than the profile alike: that ABI is not filtered call by
    call, so it must not run at all."""
    require_x86()

    def x32(number: int) -> tuple[int, str]:
        code = ("import ctypes; libc = ctypes.CDLL(None)\n"
                f"libc.syscall(ctypes.c_long(0x40000000 | {number}))\nprint('survived')")
        r = isolate.run([PYTHON, "-c", code], capture_output=True, text=True,
                        timeout=RUN_TIMEOUT)
        return r.returncode, r.stdout
    assert caller(lambda: [x32(39), x32(1000)]) == [(-signal.SIGSYS, "")] * 2
