"""Seccomp profiles: which system calls a workload may make, compiled to BPF.

A `Seccomp` profile is a frozen attrs class: a default action and a tuple of
`Rule`s, each naming a system call, an action and optional conditions (`Arg`)
on its arguments.  Bad values raise `ConfigError("seccomp", ...)` when the
profile is built.  `compile_bpf` turns a profile into the classic BPF program
the kernel runs (`prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog)`), using
libseccomp (Debian package libseccomp2) through cffi in ABI mode: no headers
and no build dependency; the library is loaded the first time a profile is
compiled.

Every filter checks the architecture of each system call first.  By default
it accepts the native one and its 32-bit compat architecture (x86_64 with
i386, aarch64 with arm); anything else, x32 system calls on x86_64 included,
kills the process.

`docker_default` builds a profile with the effect of Docker's default one.
"""
from __future__ import annotations

import errno as _errno
import functools
import os
from collections.abc import Iterable
from typing import Any, Union

import attrs

from . import capabilities as _capabilities
from .errors import ConfigError

FIELD = "seccomp"

# --- libseccomp, through cffi in ABI mode ------------------------------------

_CDEF = """
typedef void *scmp_filter_ctx;
struct scmp_arg_cmp {
    unsigned int arg;
    int op;
    uint64_t datum_a;
    uint64_t datum_b;
};
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                           unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_syscall_resolve_name_arch(uint32_t arch_token, const char *name);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
int seccomp_arch_remove(scmp_filter_ctx ctx, uint32_t arch_token);
uint32_t seccomp_arch_native(void);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_export_bpf(scmp_filter_ctx ctx, int fd);
"""

# Action values: macros in seccomp.h (the kernel's SECCOMP_RET_* values).
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_ERRNO = 0x00050000          # | (errno & 0xffff)
SCMP_ACT_LOG = 0x7ffc0000
SCMP_ACT_ALLOW = 0x7fff0000

# enum scmp_filter_attr: _SCMP_FLTATR_MIN = 0, ACT_DEFAULT = 1, ACT_BADARCH = 2,
# CTL_NNP, CTL_TSYNC, API_TSKIP, CTL_LOG, CTL_SSB, CTL_OPTIMIZE = 8.
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_FLTATR_CTL_OPTIMIZE = 8

# __NR_SCMP_ERROR: what seccomp_syscall_resolve_name returns for an unknown
# name.  A name libseccomp knows but an architecture lacks resolves to a
# "pseudo syscall" number below -1 (-10060 for socketcall on x86_64).
_NR_SCMP_ERROR = -1

# enum scmp_compare, by the operator `Arg` accepts.
_OPS: dict[str, int] = {"!=": 1, "<": 2, "<=": 3, "==": 4, ">=": 5, ">": 6, "&=": 7}

#: Architecture names and their tokens (AUDIT_ARCH_* values from linux/audit.h).
ARCHES: dict[str, int] = {
    "x86_64": 0xC000003E,
    "i386": 0x40000003,
    "aarch64": 0xC00000B7,
    "arm": 0x40000028,
}

#: The 32-bit architecture a 64-bit kernel also runs programs of.
_COMPAT: dict[str, str] = {"x86_64": "i386", "aarch64": "arm"}


@functools.cache
def _libseccomp() -> tuple[Any, Any]:
    """(ffi, lib) for libseccomp.so.2, loaded on first use."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    try:
        lib = ffi.dlopen("libseccomp.so.2")
    except OSError as exc:
        raise ConfigError(FIELD, f"cannot load libseccomp.so.2 ({exc}); "
                          "install libseccomp2 (apt-get install libseccomp2)") from None
    return ffi, lib


def _check(result: int, what: str) -> int:
    """`result` of a libseccomp call, or ConfigError if it is a negative errno."""
    if result < 0:
        raise ConfigError(FIELD, f"{what} failed: {os.strerror(-result)}")
    return result


# --- actions -------------------------------------------------------------------

_ACTION_VALUES: dict[str, int] = {
    "allow": SCMP_ACT_ALLOW,
    "kill": SCMP_ACT_KILL_PROCESS,
    "log": SCMP_ACT_LOG,
    "trap": SCMP_ACT_TRAP,
}


def _action_name(instance: Any, attribute: Any, name: str) -> None:
    if name not in _ACTION_VALUES:
        raise ConfigError(FIELD, f"unknown action {name!r}")


@attrs.frozen(repr=False)
class Action:
    """An action without data: use the constants ALLOW, KILL, LOG and TRAP."""

    name: str = attrs.field(validator=_action_name)

    @property
    def value(self) -> int:
        """The SCMP_ACT_* value."""
        return _ACTION_VALUES[self.name]

    def __repr__(self) -> str:
        return self.name.upper()


#: Let the system call run.
ALLOW = Action("allow")
#: Kill the whole process, as by an uncatchable SIGSYS.
KILL = Action("kill")
#: Let the system call run and log it (kernel audit log).
LOG = Action("log")
#: Send the thread a SIGSYS it can catch.
TRAP = Action("trap")


def _errno_number(instance: Any, attribute: Any, number: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 4096:
        raise ConfigError(FIELD, f"errno must be a number from 1 to 4095, got {number!r}")


@attrs.frozen
class Errno:
    """Fail the system call with `number` (e.g. errno.EPERM), without running it."""

    number: int = attrs.field(validator=_errno_number)

    @property
    def value(self) -> int:
        """The SCMP_ACT_ERRNO(number) value."""
        return SCMP_ACT_ERRNO | (self.number & 0xFFFF)


ActionLike = Union[Action, Errno, str]


def action(value: ActionLike) -> Action | Errno:
    """An action from an Action, an Errno, or "allow", "kill", "log", "trap",
    "errno" (Errno(EPERM))."""
    if isinstance(value, (Action, Errno)):
        return value
    if isinstance(value, str):
        name = value.lower()
        if name == "errno":
            return Errno(_errno.EPERM)
        if name in _ACTION_VALUES:
            return Action(name)
    raise ConfigError(FIELD, f"unknown action {value!r}; expected ALLOW, KILL, LOG, TRAP, "
                      "Errno(n) or one of 'allow', 'kill', 'log', 'trap', 'errno'")


# --- rules -----------------------------------------------------------------------

_MAX_VALUE = 2**64 - 1


def _arg_index(instance: Any, attribute: Any, index: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
        raise ConfigError(FIELD, f"argument index must be 0 to 5, got {index!r}")


def _arg_op(instance: Any, attribute: Any, op: str) -> None:
    if op not in _OPS:
        raise ConfigError(FIELD, f"unknown comparison {op!r}; expected one of {', '.join(_OPS)}")


def _u64(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_VALUE:
        raise ConfigError(FIELD, f"{what} must be an integer from 0 to 2**64-1, got {value!r}")


@attrs.frozen
class Arg:
    """A condition on argument `index` (0 to 5) of a system call: `arg op value`.

    `op` is one of "==", "!=", "<", "<=", ">", ">=" (unsigned 64-bit
    comparisons), or "&=": (arg & mask) == value.  Compare with "&=" and a
    mask of 0xffffffff where the kernel reads only 32 bits (an `int`
    argument): a plain comparison sees the upper 32 bits a caller may set.
    On a 32-bit architecture libseccomp compares only the low 32 bits of
    `value`.
    """

    index: int = attrs.field(validator=_arg_index)
    op: str = attrs.field(validator=_arg_op)
    value: int = attrs.field()
    mask: int | None = attrs.field(default=None)

    @value.validator
    def _value(self, attribute: Any, value: int) -> None:
        _u64("argument value", value)

    @mask.validator
    def _mask(self, attribute: Any, mask: int | None) -> None:
        if self.op != "&=":
            if mask is not None:
                raise ConfigError(FIELD, f"a mask only goes with '&=', not {self.op!r}")
            return
        if mask is None:
            raise ConfigError(FIELD, "'&=' needs a mask: (arg & mask) == value")
        _u64("argument mask", mask)
        if self.value & ~mask:
            raise ConfigError(FIELD, f"value {self.value:#x} has bits outside mask {mask:#x}; "
                              "the condition could never hold")

    def comparison(self) -> tuple[int, int, int, int]:
        """The fields of a struct scmp_arg_cmp: (arg, op, datum_a, datum_b)."""
        if self.op == "&=":
            return (self.index, _OPS["&="], self.mask, self.value)
        return (self.index, _OPS[self.op], self.value, 0)


def _syscall_name(instance: Any, attribute: Any, name: str) -> None:
    if not isinstance(name, str) or not name or not name.isprintable() or " " in name:
        raise ConfigError(FIELD, f"expected a system call name, got {name!r}")


def _args(value: Iterable[Arg]) -> tuple[Arg, ...]:
    if isinstance(value, Arg):
        value = (value,)
    args = tuple(value)
    for arg in args:
        if not isinstance(arg, Arg):
            raise ConfigError(FIELD, f"expected isolate.seccomp.Arg conditions, got {arg!r}")
    indexes = [arg.index for arg in args]
    for index in set(indexes):
        if indexes.count(index) > 1:
            raise ConfigError(FIELD, f"argument {index} is compared twice in one rule; "
                              "libseccomp cannot combine them (use several rules)")
    return tuple(sorted(args, key=lambda arg: arg.index))


@attrs.frozen
class Rule:
    """Take `action` on `syscall` when every condition in `args` holds.

    Several rules for one system call: the first whose conditions hold
    decides (rules with conditions are alternatives).
    """

    syscall: str = attrs.field(validator=_syscall_name)
    action: Action | Errno = attrs.field(converter=action)
    args: tuple[Arg, ...] = attrs.field(default=(), converter=_args)


# --- profiles ----------------------------------------------------------------------

def _rules(value: Iterable[Rule]) -> tuple[Rule, ...]:
    rules = tuple(value)
    decided: dict[tuple[str, tuple[Arg, ...]], Action | Errno] = {}
    for rule in rules:
        if not isinstance(rule, Rule):
            raise ConfigError(FIELD, f"expected isolate.seccomp.Rule, got {rule!r}")
        key = (rule.syscall, rule.args)
        if decided.setdefault(key, rule.action) != rule.action:
            # libseccomp would silently keep the first action.
            raise ConfigError(FIELD, f"conflicting actions for {rule.syscall}: "
                              f"{decided[key]!r} and {rule.action!r}")
    return rules


def _arches(value: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if name not in ARCHES:
            raise ConfigError(FIELD, f"unknown architecture {name!r}; expected one of {', '.join(ARCHES)}")
    if not names:
        raise ConfigError(FIELD, "expected at least one architecture (or None for the default)")
    return tuple(dict.fromkeys(names))


@attrs.frozen
class Seccomp:
    """A seccomp profile: `default_action` for every system call no rule decides.

    `arches=None` accepts the native architecture and its 32-bit compat one;
    system calls of any other architecture kill the process.
    """

    default_action: Action | Errno = attrs.field(default=ALLOW, converter=action)
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_rules)
    arches: tuple[str, ...] | None = attrs.field(default=None, converter=_arches)

    @classmethod
    def deny(cls, names: Iterable[str], action: ActionLike = Errno(_errno.EPERM)) -> Seccomp:
        """Allow every system call but `names`, which get `action`."""
        return cls(ALLOW, tuple(Rule(name, action) for name in _names(names)))

    @classmethod
    def allow_only(cls, names: Iterable[str], action: ActionLike = Errno(_errno.ENOSYS)) -> Seccomp:
        """Allow only `names`; every other system call gets `action`."""
        return cls(action, tuple(Rule(name, ALLOW) for name in _names(names)))


def _names(names: Iterable[str] | str) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


# --- compiling ----------------------------------------------------------------------

def compile_bpf(profile: Seccomp) -> bytes:
    """The classic BPF program for `profile`: an array of struct sock_filter
    (8 bytes each), ready to point a struct sock_fprog at.

    Results are cached per profile.  Raises ConfigError for a system call
    name libseccomp does not know, or when libseccomp fails.
    """
    if not isinstance(profile, Seccomp):
        raise ConfigError(FIELD, f"expected isolate.seccomp.Seccomp, got {profile!r}")
    return _compile(profile)


@functools.lru_cache(maxsize=128)
def _compile(profile: Seccomp) -> bytes:
    ffi, lib = _libseccomp()
    tokens = _arch_tokens(profile.arches, lib.seccomp_arch_native())
    ctx = lib.seccomp_init(profile.default_action.value)
    if ctx == ffi.NULL:
        raise ConfigError(FIELD, f"seccomp_init({profile.default_action!r}) failed")
    try:
        _set_arches(lib, ctx, tokens)
        _check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
               "seccomp_attr_set(SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)")
        # A binary tree of system call numbers instead of a list: the kernel
        # runs the filter for every syscall number when it is installed (to
        # cache the ones always allowed), so a list of N rules costs
        # N x ~900 steps per container start; the tree, log N.
        _check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2),
               "seccomp_attr_set(SCMP_FLTATR_CTL_OPTIMIZE, 2)")
        for rule in dict.fromkeys(profile.rules):
            if rule.action != profile.default_action:  # libseccomp: EACCES
                _add_rule(ffi, lib, ctx, rule, tokens)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _arch_tokens(arches: tuple[str, ...] | None, native: int) -> tuple[int, ...]:
    """The filter's architecture tokens; None: native and its compat arch."""
    if arches is not None:
        return tuple(ARCHES[name] for name in arches)
    name = next((name for name, token in ARCHES.items() if token == native), None)
    compat = _COMPAT.get(name or "")
    return (native, ARCHES[compat]) if compat else (native,)


def _set_arches(lib: Any, ctx: Any, tokens: tuple[int, ...]) -> None:
    """Make the filter accept exactly `tokens` (seccomp_init starts with native)."""
    native = lib.seccomp_arch_native()
    for token in tokens:
        if token != native:
            _check(lib.seccomp_arch_add(ctx, token), f"seccomp_arch_add({token:#x})")
    if native not in tokens:
        _check(lib.seccomp_arch_remove(ctx, native), f"seccomp_arch_remove({native:#x})")


def _add_rule(ffi: Any, lib: Any, ctx: Any, rule: Rule, tokens: tuple[int, ...]) -> None:
    """Add `rule` on every architecture of the filter that has the system call."""
    name = rule.syscall.encode()
    numbers = [lib.seccomp_syscall_resolve_name_arch(token, name) for token in tokens]
    if all(number == _NR_SCMP_ERROR for number in numbers):
        raise ConfigError(FIELD, f"unknown system call {rule.syscall!r}")
    if all(number < 0 for number in numbers):
        return  # a real system call, but of none of these architectures
    # libseccomp takes the native number (pseudo for a name native lacks)
    # and translates it to each architecture's by name.
    number = lib.seccomp_syscall_resolve_name(name)
    comparisons = [arg.comparison() for arg in rule.args]
    array = ffi.new("struct scmp_arg_cmp[]", comparisons) if comparisons else ffi.NULL
    _check(lib.seccomp_rule_add_array(ctx, rule.action.value, number, len(comparisons), array),
           f"seccomp_rule_add({rule!r})")


def _export(lib: Any, ctx: Any) -> bytes:
    """The filter's BPF program, exported through a memfd."""
    fd = os.memfd_create("isolate-seccomp", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf")
        size = os.fstat(fd).st_size
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise ConfigError(FIELD, f"seccomp_export_bpf wrote {len(program)} bytes, "
                          "not a whole number of instructions")
    return program


# --- Docker's default profile, as a deny list ----------------------------------

#: Denied (EPERM) whatever the capabilities.
_ALWAYS_DENIED: tuple[str, ...] = (
    "add_key", "keyctl", "request_key",                  # keyrings are not namespaced
    "create_module", "get_kernel_syms", "query_module",  # gone from the kernel
    "nfsservctl", "sysfs", "_sysctl", "uselib", "ustat", "vm86", "vm86old",
    "kexec_load", "kexec_file_load",
    "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)

#: Denied (EPERM) unless the container keeps one of the capabilities naming them.
_DENIED_WITHOUT: dict[str, tuple[str, ...]] = {
    "SYS_ADMIN": (
        "mount", "umount", "umount2", "pivot_root", "setns", "unshare",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
        "mount_setattr", "bpf", "lookup_dcookie", "name_to_handle_at",
        "perf_event_open", "quotactl", "quotactl_fd", "syslog",
    ),
    "BPF": ("bpf",),
    "PERFMON": ("perf_event_open",),
    "DAC_READ_SEARCH": ("open_by_handle_at",),
    "SYS_BOOT": ("reboot",),
    "SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "SYS_NICE": ("mbind", "set_mempolicy", "get_mempolicy", "move_pages",
                 "set_mempolicy_home_node"),
    "SYS_PACCT": ("acct",),
    "SYS_PTRACE": ("kcmp", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
                   "process_madvise"),
    "SYS_RAWIO": ("iopl", "ioperm"),
    "SYS_TIME": ("clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64",
                 "settimeofday", "stime"),
    "SYS_TTY_CONFIG": ("vhangup",),
    "SYSLOG": ("syslog",),
}

#: clone flags creating a namespace (flags are argument 0 except on s390,
#: ignored here).  CLONE_NEWTIME (0x80) overlaps the exit signal bits and
#: clone() rejects it anyway; it costs nothing to deny it too.
_CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)

#: ioctl requests that push input into a terminal (TIOCSTI) or drive the
#: console (TIOCLINUX).
_DENIED_IOCTLS: tuple[int, ...] = (0x5412, 0x541C)

_LOW32 = 0xFFFFFFFF


def docker_default(capabilities: Iterable[str] | None = None) -> Seccomp:
    """A profile with the effect of Docker's default one for a container
    keeping `capabilities` (names as in isolate.capabilities; None: the
    default set).

    Docker's profile allows a list of system calls; this one allows all but
    those Docker leaves out, which fail with EPERM (clone3 with ENOSYS, so
    that glibc falls back to clone, whose flags a filter can check).
    """
    return _docker_default(_capabilities.parse(capabilities))


@functools.lru_cache(maxsize=64)
def _docker_default(caps: frozenset[str]) -> Seccomp:
    eperm = Errno(_errno.EPERM)
    allowed = {name for cap, names in _DENIED_WITHOUT.items() if cap in caps for name in names}
    denied = [name for names in (_ALWAYS_DENIED, *_DENIED_WITHOUT.values()) for name in names]
    rules = [Rule(name, eperm) for name in dict.fromkeys(denied) if name not in allowed]
    if "SYS_ADMIN" not in caps:
        rules += [Rule("clone", eperm, (Arg(0, "&=", flag, flag),)) for flag in _CLONE_NAMESPACE_FLAGS]
        rules.append(Rule("clone3", Errno(_errno.ENOSYS)))
    rules += [Rule("ioctl", eperm, (Arg(1, "&=", request, _LOW32),)) for request in _DENIED_IOCTLS]
    # personality(2) stays allowed, unlike in Docker: Docker's five allowed
    # values take 82 masked rules here (a rule may compare an argument only
    # once), which made installing the filter cost 0.2 ms per container.
    # The flags only weaken the caller's own address space, and the kernel
    # drops the unsafe ones on any exec that gains privilege (of which
    # no_new_privs leaves none).
    # ptrace stays allowed, as in Docker on kernels from 4.8 on: the kernel
    # checks CAP_SYS_PTRACE and the seccomp filter also binds the tracee.
    return Seccomp(ALLOW, tuple(rules))
