"""Seccomp profiles compiled with libseccomp, installed on the real kernel.

Each behaviour test forks a child, installs the compiled filter with
prctl(PR_SET_SECCOMP), makes raw system calls and reports what they
returned; a control child without the filter shows the result comes from the
filter and not from the kernel.
"""
from __future__ import annotations

import errno
import mmap
import os
import platform
import signal
import struct

import cffi
import pytest

from isolate.security import seccomp
from isolate.errors import ConfigError
from isolate.security.seccomp import ALLOW, KILL, LOG, TRAP, Arg, Errno, Rule, Seccomp
from conftest import require, run_in_fork, unwrap

X86_64 = platform.machine() == "x86_64"


def require_x86_64(what: str) -> None:
    """Tests of x86 ABIs: skipped elsewhere, a failure under CI=true (CI
    runs on x86_64, so it must exercise them)."""
    require(X86_64, f"{what}; this machine is {platform.machine()}")

_ffi = cffi.FFI()
_ffi.cdef("""
struct sock_filter { uint16_t code; uint8_t jt; uint8_t jf; uint32_t k; };
struct sock_fprog { unsigned short len; struct sock_filter *filter; };
int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);
long syscall(long number, ...);
""")
_libc = _ffi.dlopen(None)

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

CLONE_FS = 0x200
CLONE_NEWNS = 0x20000
CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
UPPER = 1 << 32
X32_SYSCALL_BIT = 0x40000000


def nr(name: str) -> int:
    """The native number of system call `name`."""
    number = seccomp._libseccomp()[1].seccomp_syscall_resolve_name(name.encode())
    assert number >= 0, name
    return number


def install(program: bytes) -> None:
    """Install a compiled filter on the calling thread (how spawn code uses one)."""
    count = len(program) // 8
    instructions = _ffi.new("struct sock_filter[]", count)
    _ffi.memmove(instructions, program, len(program))
    fprog = _ffi.new("struct sock_fprog *", {"len": count, "filter": instructions})
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(_ffi.errno, "prctl(PR_SET_NO_NEW_PRIVS)")
    address = int(_ffi.cast("uintptr_t", fprog))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, address, 0, 0) != 0:
        raise OSError(_ffi.errno, "prctl(PR_SET_SECCOMP)")


def call(name: str | int, *args) -> int:
    """syscall(name, args...): the result, or -errno.  An argument may be
    bytes (passed as a string) or a callable (called in the child)."""
    number = nr(name) if isinstance(name, str) else name
    args = tuple(a() if callable(a) else a for a in args)
    keep = [_ffi.new("char[]", a) if isinstance(a, bytes) else _ffi.cast("long", a) for a in args]
    _ffi.errno = 0
    result = _libc.syscall(_ffi.cast("long", number), *keep)
    return -_ffi.errno if result == -1 else result


def outcomes(profile: Seccomp | None, calls: dict[str, tuple]) -> dict[str, int]:
    """Run `calls` ({label: (name, *args)}) in a child under `profile`."""
    program = seccomp.compile_bpf(profile) if profile is not None else None

    def child() -> dict[str, int]:
        if program is not None:
            install(program)
        return {label: call(*spec) for label, spec in calls.items()}

    return unwrap(run_in_fork(child))


def wait_status(program: bytes | None, action) -> int:
    """Fork; the child installs `program` and runs `action()`, then exits 0.
    Returns the child's wait status (the child may be killed)."""
    pid = os.fork()
    if pid == 0:
        try:
            if program is not None:
                install(program)
            action()
            os._exit(0)
        finally:
            os._exit(70)
    _, status = os.waitpid(pid, 0)
    return status


def killed_by_sigsys(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) of each struct sock_filter."""
    return [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]


BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


def returns(program: bytes) -> set[int]:
    return {k for code, _, _, k in instructions(program) if code == BPF_RET_K}


# --- the default (Docker-like) profile ---------------------------------------------

@pytest.fixture
def devnull():
    fd = os.open("/dev/null", os.O_RDWR)
    yield fd
    os.close(fd)


def denied_calls(fd: int) -> dict[str, tuple]:
    return {
        "keyctl": ("keyctl", 0, -3, 0),  # KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
        "unshare": ("unshare", CLONE_NEWUSER),
        "mount": ("mount", b"none", b"/nonexistent-isolate-seccomp", b"tmpfs", 0, 0),
        "kexec_load": ("kexec_load", 0, 2**31, 0, 0),  # too many segments: EINVAL if allowed
        "clone3": ("clone3", 0, 0),
        "clone_newuser": ("clone", CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0),
        "clone_newns_upper": ("clone", UPPER | CLONE_NEWNS | CLONE_FS, 0, 0, 0, 0),
        "tiocsti": ("ioctl", fd, TIOCSTI, 0),
        "tiocsti_upper": ("ioctl", fd, UPPER | TIOCSTI, 0),
        "tioclinux_upper": ("ioctl", fd, UPPER | TIOCLINUX, 0),
    }


DENIED = {"keyctl": -errno.EPERM, "unshare": -errno.EPERM, "mount": -errno.EPERM,
          "kexec_load": -errno.EPERM, "clone3": -errno.ENOSYS,
          "clone_newuser": -errno.EPERM, "clone_newns_upper": -errno.EPERM,
          "tiocsti": -errno.EPERM, "tiocsti_upper": -errno.EPERM,
          "tioclinux_upper": -errno.EPERM}


def test_docker_default_denies(devnull):
    """keyctl, unshare, mount, kexec_load, namespace clones, TIOCSTI/TIOCLINUX
    (also with upper bits set) fail with EPERM, clone3
    with ENOSYS; without the filter the same calls do not."""
    calls = denied_calls(devnull)
    control = outcomes(None, calls)
    filtered = outcomes(seccomp.docker_default(None), calls)
    assert filtered == DENIED
    assert control["kexec_load"] in (-errno.EINVAL, -errno.EPERM, -errno.ENOSYS)
    differs = {label for label in calls if control[label] != DENIED[label]}
    assert differs >= set(calls) - {"kexec_load"}, control


def test_docker_default_allows_ordinary_calls():
    """getpid, fork (clone without namespace flags) and personality still work."""
    def child() -> dict[str, object]:
        install(seccomp.compile_bpf(seccomp.docker_default(None)))
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        return {"getpid": call("getpid") == os.getpid(),
                "fork": os.waitstatus_to_exitcode(status),
                "query": call("personality", 0xFFFFFFFF),
                "linux32": call("personality", 0x8),
                "uname26": call("personality", 0x20008),
                "back": call("personality", 0x0)}
    got = unwrap(run_in_fork(child))
    assert got == {"getpid": True, "fork": 7, "query": 0, "linux32": 0, "uname26": 0x8,
                   "back": 0x20008}


def test_docker_default_capabilities_lift_denials(devnull):
    """With SYS_ADMIN, unshare and clone3 reach the kernel; with SYS_PTRACE, kcmp."""
    calls = {"unshare": ("unshare", CLONE_NEWUSER), "clone3": ("clone3", 0, 0),
             "mount": ("mount", b"none", b"/nonexistent-isolate-seccomp", b"tmpfs", 0, 0),
             "kcmp": ("kcmp", os.getpid, os.getpid, 0, devnull, devnull)}  # KCMP_FILE
    admin = outcomes(seccomp.docker_default({"SYS_ADMIN", "SYS_PTRACE"}), calls)
    assert admin == {"unshare": 0, "clone3": -errno.EINVAL, "mount": -errno.ENOENT, "kcmp": 0}
    default = outcomes(seccomp.docker_default(None), calls)
    assert default == {"unshare": -errno.EPERM, "clone3": -errno.ENOSYS, "mount": -errno.EPERM,
                       "kcmp": -errno.EPERM}


def test_x32_system_call_kills():
    """An x32 system call (bit 0x40000000 set) kills the process under the
    filter; without it the kernel just answers."""
    require_x86_64("x32 is an x86_64 ABI")
    def x32_getpid() -> None:
        _libc.syscall(_ffi.cast("long", X32_SYSCALL_BIT | nr("getpid")))
    assert os.waitstatus_to_exitcode(wait_status(None, x32_getpid)) == 0
    status = wait_status(seccomp.compile_bpf(seccomp.docker_default(None)), x32_getpid)
    assert killed_by_sigsys(status), status


def i386_call(number: int, *args: int):
    """A function making the i386 system call `number` through int 0x80."""
    regs = [0xBB, 0xB9, 0xBA]  # mov ebx/ecx/edx, imm32
    code = b"\x53" + b"\xb8" + struct.pack("<I", number)  # push rbx; mov eax, number
    for reg, arg in zip(regs, args):
        code += bytes([reg]) + struct.pack("<I", arg & 0xFFFFFFFF)
    code += b"\xcd\x80\x5b\xc3"  # int 0x80; pop rbx; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    function = _ffi.cast("int (*)(void)", _ffi.from_buffer(page))
    return lambda: (page, function())[1]


def test_i386_compat_calls_are_filtered_too():
    """The compat architecture is in the filter: an i386 keyctl (288) gets
    EPERM, an i386 getpid (20) works; with arches=("x86_64",) it kills."""
    require_x86_64("int 0x80 is x86")
    getpid32 = i386_call(20)
    keyctl32 = i386_call(288, 0, -3, 0)

    require(os.waitstatus_to_exitcode(wait_status(None, getpid32)) == 0,
            "no i386 emulation (int 0x80) here")
    control = unwrap(run_in_fork(lambda: (getpid32(), keyctl32())))
    assert control[0] > 0 and control[1] != -errno.EPERM

    def filtered() -> tuple[int, int]:
        install(seccomp.compile_bpf(seccomp.docker_default(None)))
        return getpid32(), keyctl32()
    pid32, keyctl = unwrap(run_in_fork(filtered))
    assert pid32 > 0 and keyctl == -errno.EPERM

    native_only = seccomp.compile_bpf(Seccomp(arches=("x86_64",)))
    assert killed_by_sigsys(wait_status(native_only, getpid32))


def answers(results: dict[str, int]) -> dict[str, object]:
    """Results with every success (a pid, a descriptor) shown as "ok"."""
    return {label: "ok" if result >= 0 else result for label, result in results.items()}


def test_docker_default_is_an_allow_list():
    """Known calls Docker's list leaves out get EPERM (tuxcall, which the
    kernel answers with ENOSYS; migrate_pages, which it runs); numbers newer
    than the profile ENOSYS, above its highest (open_tree_attr, 1000) or in
    the holes libseccomp has no name for (x86_64's 335-423); socket families
    and personality values are judged on the bits the kernel reads."""
    require_x86_64("x86_64 system call numbers")
    calls = {"tuxcall": ("tuxcall",), "migrate_pages": ("migrate_pages", 0, 0, 0, 0),
             "open_tree_attr": (467, -1, 0, 0, 0, 0), "number_1000": (1000,), "hole": (400,),
             "vsock": ("socket", 40, 1, 0), "alg_upper_bits": ("socket", UPPER | 38, 5, 0),
             "unix": ("socket", 1, 1, 0), "read_implies_exec": ("personality", 0x0400000),
             "upper_bits": ("personality", UPPER), "query": ("personality", 0xFFFFFFFF)}
    got = answers(outcomes(seccomp.docker_default(None), calls))
    assert got == {"tuxcall": -errno.EPERM, "migrate_pages": -errno.EPERM,
                   "open_tree_attr": -errno.ENOSYS, "number_1000": -errno.ENOSYS,
                   "hole": -errno.ENOSYS, "vsock": -errno.EPERM, "alg_upper_bits": -errno.EPERM,
                   "unix": "ok", "read_implies_exec": -errno.EPERM, "upper_bits": -errno.EPERM,
                   "query": "ok"}
    control = answers(outcomes(None, calls))
    assert control["tuxcall"] == -errno.ENOSYS and control["migrate_pages"] != -errno.EPERM
    assert control["read_implies_exec"] == "ok" and control["open_tree_attr"] != -errno.ENOSYS


def test_docker_default_i386_allow_list():
    """The same answers for the compat architecture: i386's socketcall (whose
    socket family is in memory) and signal (not in Docker's list) get EPERM,
    a hole in its table (222), open_tree_attr and 1000 ENOSYS."""
    require_x86_64("int 0x80 is x86")
    require(os.waitstatus_to_exitcode(wait_status(None, i386_call(20))) == 0,
            "no i386 emulation (int 0x80) here")
    calls = {"socketcall": i386_call(102, 1, 0), "signal": i386_call(48, 10, 0),
             "hole": i386_call(222), "open_tree_attr": i386_call(467, -1, 0, 0),
             "number_1000": i386_call(1000), "personality": i386_call(136, 0x0400000),
             "getpid": i386_call(20)}
    program = seccomp.compile_bpf(seccomp.docker_default(None))

    def child() -> dict[str, object]:
        install(program)
        return answers({label: function() for label, function in calls.items()})
    assert unwrap(run_in_fork(child)) == {
        "socketcall": -errno.EPERM, "signal": -errno.EPERM, "hole": -errno.ENOSYS,
        "open_tree_attr": -errno.ENOSYS, "number_1000": -errno.ENOSYS,
        "personality": -errno.EPERM, "getpid": "ok"}


def test_docker_default_decides_every_known_call():
    """Every system call libseccomp knows, up to the profile's highest, has
    a rule: allowed by Docker's list, or refused."""
    profile = seccomp.docker_default(None)
    named = {rule.syscall for rule in profile.rules}
    lib = seccomp._libseccomp()[1]
    for token in seccomp._arch_tokens(None, lib.seccomp_arch_native()):
        highest = max(lib.seccomp_syscall_resolve_name_arch(token, name.encode()) for name in named)
        known = {seccomp._name_of(token, number) for number in range(highest + 1)} - {None}
        assert known <= named, sorted(known - named)
    allowed = {rule.syscall for rule in profile.rules if rule.action == ALLOW and not rule.args}
    assert {"read", "execve", "clone3"} & allowed == {"read", "execve"}
    assert not {"keyctl", "socketcall", "io_uring_setup", "mount", "sethostname"} & allowed


# --- actions ---------------------------------------------------------------------

def test_errno_action_returns_its_number():
    got = outcomes(Seccomp.deny(["getppid"], Errno(77)), {"getppid": ("getppid",), "getpid": ("getpid",)})
    assert got["getppid"] == -77 and got["getpid"] > 0


def test_errno_string_means_eperm_and_log_allows():
    profile = Seccomp(rules=(Rule("getppid", "errno"), Rule("getuid", LOG)))
    got = outcomes(profile, {"getppid": ("getppid",), "getuid": ("getuid",)})
    assert got == {"getppid": -errno.EPERM, "getuid": os.getuid()}


def test_allow_only_kills_other_calls():
    """allow_only(..., "kill"): the allowed write works, getpid kills the process."""
    profile = Seccomp.allow_only(["exit_group", "exit", "write", "brk", "mmap", "munmap",
                                  "madvise", "rt_sigreturn", "rt_sigprocmask"], action="kill")
    program = seccomp.compile_bpf(profile)
    write, getpid = nr("write"), nr("getpid")
    rfd, wfd = os.pipe()
    try:
        status = wait_status(program, lambda: call(write, wfd, b"ok", 2))
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.read(rfd, 2) == b"ok"
        assert killed_by_sigsys(wait_status(program, lambda: call(getpid)))
    finally:
        os.close(rfd)
        os.close(wfd)


def test_trap_sends_sigsys_and_kill_is_default_action():
    assert killed_by_sigsys(wait_status(seccomp.compile_bpf(Seccomp.deny(["getppid"], TRAP)),
                                        lambda: call("getppid")))
    assert killed_by_sigsys(wait_status(seccomp.compile_bpf(Seccomp(KILL, (Rule("getppid", ALLOW),))),
                                        lambda: call("getpid")))


def test_foreign_arch_only_filter_kills_everything():
    """A filter for another architecture only: the first system call is a bad-arch kill."""
    other = "aarch64" if X86_64 else "x86_64"
    assert killed_by_sigsys(wait_status(seccomp.compile_bpf(Seccomp(arches=(other,))),
                                        lambda: call("getpid")))


# --- the compiled program ------------------------------------------------------------

def test_program_shape_and_constants():
    """8-byte instructions starting with a load of seccomp_data.arch; the
    return values are the SCMP_ACT_* constants; bad arch is KILL_PROCESS."""
    program = seccomp.compile_bpf(Seccomp(LOG, (Rule("getpid", ALLOW), Rule("getppid", Errno(77)),
                                                Rule("getuid", TRAP), Rule("getgid", KILL))))
    assert len(program) % 8 == 0
    assert instructions(program)[0] == (BPF_LD_W_ABS, 0, 0, 4)
    assert returns(program) == {0x7FFC0000, 0x7FFF0000, 0x0005004D, 0x00030000, 0x80000000}


def test_default_arches_are_native_and_compat():
    require_x86_64("arch tokens of x86")
    def arch_checks(profile: Seccomp) -> set[int]:
        return {k for code, _, _, k in instructions(seccomp.compile_bpf(profile)) if code == BPF_JEQ_K
                and k in seccomp.ARCHES.values()}
    assert arch_checks(Seccomp()) == {0xC000003E, 0x40000003}
    assert arch_checks(Seccomp(arches=("x86_64",))) == {0xC000003E}
    assert arch_checks(Seccomp(arches=("i386", "aarch64"))) == {0x40000003, 0xC00000B7}


def test_compile_is_cached():
    first = seccomp.compile_bpf(Seccomp.deny(["getpid"]))
    assert seccomp.compile_bpf(Seccomp.deny(["getpid"])) is first
    assert seccomp.compile_bpf(seccomp.docker_default(None)) is \
        seccomp.compile_bpf(seccomp.docker_default(["CAP_CHOWN", "dac_override", "FSETID", "FOWNER",
                                                    "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                                                    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT",
                                                    "KILL", "AUDIT_WRITE"]))
    assert seccomp.compile_bpf(Seccomp.deny(["getppid"])) != first


def test_unknown_syscall_is_named():
    with pytest.raises(ConfigError, match="no_such_call_xyz") as info:
        seccomp.compile_bpf(Seccomp.deny(["getpid", "no_such_call_xyz"]))
    assert info.value.field == "seccomp"


def test_compat_only_names_compile():
    """socketcall/vm86 exist on i386 only: fine with the default arches (the
    rule changes the program), a no-op on x86_64 alone."""
    require_x86_64("socketcall and vm86 exist on i386 only")
    profile = Seccomp.deny(["socketcall", "vm86"])
    assert seccomp.compile_bpf(profile) != seccomp.compile_bpf(Seccomp())
    alone = Seccomp(rules=profile.rules, arches=("x86_64",))
    assert seccomp.compile_bpf(alone) == seccomp.compile_bpf(Seccomp(arches=("x86_64",)))


def test_rule_with_default_action_is_a_no_op():
    assert seccomp.compile_bpf(Seccomp(ALLOW, (Rule("getpid", "allow"),))) == \
        seccomp.compile_bpf(Seccomp())


def test_rules_with_conditions_come_before_the_one_without():
    """A call's rules with conditions are tried first; its rule without
    conditions answers when none holds (libseccomp alone lets that one
    override them, and refuses a rule with the default action)."""
    profile = Seccomp(ALLOW, (Rule("getppid", Errno(77)), Rule("getppid", ALLOW, (Arg(0, "==", 7),))))
    got = outcomes(profile, {"seven": ("getppid", 7), "other": ("getppid", 8)})
    assert got == {"seven": os.getpid(), "other": -77}


def test_newer_action_above_the_highest_rule_and_in_holes():
    """newer_action goes to numbers above the highest a rule names (getppid,
    110 on x86_64; a rule with the default action counts) and to the holes
    libseccomp has no name for; the others get the profile's answers."""
    require_x86_64("x86_64 system call numbers")
    rules = (Rule("getppid", ALLOW), Rule("getuid", Errno(77)))
    calls = {"getpid": ("getpid",), "getuid": ("getuid",), "gettid": ("gettid",),
             "hole": (400,)}
    got = answers(outcomes(Seccomp(ALLOW, rules, newer_action=Errno(errno.ENOSYS)), calls))
    assert got == {"getpid": "ok", "getuid": -77, "gettid": -errno.ENOSYS, "hole": -errno.ENOSYS}
    assert answers(outcomes(Seccomp(ALLOW, rules), calls))["gettid"] == "ok"


def test_default_filter_stays_small():
    """The default profile compiles as the complement of its allow-list,
    with the newer-than-the-profile ranges in front: some 300 instructions
    rather than the 1100 of a rule per allowed call (the kernel copies,
    checks and JIT-compiles every instruction at each container start)."""
    for caps in (None, {"SYS_ADMIN"}):
        assert len(seccomp.compile_bpf(seccomp.docker_default(caps))) // 8 <= 350


# --- validation ------------------------------------------------------------------------

@pytest.mark.parametrize("build", [
    lambda: Seccomp("deny"),
    lambda: Seccomp(default_action=42),
    lambda: Rule("getpid", "explode"),
    lambda: Errno(0),
    lambda: Errno(4096),
    lambda: Errno("1"),
    lambda: Errno(True),
    lambda: Arg(6, "==", 1),
    lambda: Arg(-1, "==", 1),
    lambda: Arg(0, "=~", 1),
    lambda: Arg(0, "==", -1),
    lambda: Arg(0, "==", 2**64),
    lambda: Arg(0, "&=", 1),
    lambda: Arg(0, "==", 1, mask=1),
    lambda: Arg(0, "&=", 0x3, mask=0x1),
    lambda: Rule("", ALLOW),
    lambda: Rule(123, ALLOW),
    lambda: Rule("getpid", KILL, ("not an Arg",)),
    lambda: Rule("ioctl", KILL, (Arg(1, ">", 1), Arg(1, "<", 9))),
    lambda: Seccomp(rules=("getpid",)),
    lambda: Seccomp(rules=(Rule("getpid", KILL), Rule("getpid", TRAP))),
    lambda: Seccomp(arches=("sparc",)),
    lambda: Seccomp(arches=()),
    lambda: seccomp.compile_bpf("not a profile"),
])
def test_bad_values_raise_config_error(build):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == "seccomp"


def test_constructors_and_strings():
    assert Seccomp.deny(["getpid"]) == Seccomp(ALLOW, (Rule("getpid", Errno(errno.EPERM)),))
    assert Seccomp.allow_only("getpid") == Seccomp(Errno(errno.ENOSYS), (Rule("getpid", ALLOW),))
    assert Rule("x", "TRAP").action == TRAP and Rule("x", "errno").action == Errno(errno.EPERM)
    assert Arg(1, "&=", 0x5412, 0xFFFFFFFF).comparison() == (1, 7, 0xFFFFFFFF, 0x5412)
    assert Rule("ioctl", KILL, (Arg(2, "==", 1), Arg(0, "!=", 2))).args[0].index == 0
