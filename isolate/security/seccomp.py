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

A filter is libseccomp's program for the profile, and where libseccomp
cannot say what the profile means, more in front of it: a second program of
libseccomp's for the rules with conditions of the calls that also have a
rule without (which answers only when none of them holds), and a prelude of
our own, which gives `newer_action` to the system calls newer than the
profile and sends each call to the program that decides it.

`docker_default` builds a profile with the effect of Docker's default one:
an allow-list, with ENOSYS for system calls newer than it.
"""
from __future__ import annotations

import errno as _errno
import functools
import os
import struct
from collections.abc import Iterable
from typing import Any, Union

import attrs

from isolate.security import capabilities as _capabilities
from isolate.errors import ConfigError

FIELD = "seccomp"

# --- libseccomp, through cffi in ABI mode ------------------------------------
# Its declarations are _native/libseccomp.cdef, parsed when isolate is built
# into isolate/_libseccomp.py (cffi's out-of-line ABI mode): parsing them at
# run time would load pycparser, ~25 ms of every process that compiles a
# profile.

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
    from isolate._libseccomp import ffi

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
            raise ConfigError(FIELD, f"expected isolate.security.seccomp.Arg conditions, got {arg!r}")
    indexes = [arg.index for arg in args]
    for index in set(indexes):
        if indexes.count(index) > 1:
            raise ConfigError(FIELD, f"argument {index} is compared twice in one rule; "
                              "libseccomp cannot combine them (use several rules)")
    return tuple(sorted(args, key=lambda arg: arg.index))


@attrs.frozen
class Rule:
    """Take `action` on `syscall` when every condition in `args` holds.

    Several rules for one system call: those with conditions are
    alternatives, tried first; when none holds, the rule without conditions
    decides, or else the profile's default action.
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
            raise ConfigError(FIELD, f"expected isolate.security.seccomp.Rule, got {rule!r}")
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

    `newer_action`, when set, is the action for the system calls newer than
    the profile, whatever `default_action` says: on each architecture,
    those numbered above every system call the rules name (rules whose
    action is the default one count too), and those libseccomp has no name
    for.  Errno(ENOSYS) there makes a libc fall back to an older call.
    """

    default_action: Action | Errno = attrs.field(default=ALLOW, converter=action)
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_rules)
    arches: tuple[str, ...] | None = attrs.field(default=None, converter=_arches)
    newer_action: Action | Errno | None = attrs.field(
        default=None, converter=attrs.converters.optional(action))

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

# Classic BPF instruction codes (linux/bpf_common.h).
_LD_W_ABS, _JA, _JEQ_K, _JGT_K, _JGE_K, _RET_K = 0x20, 0x05, 0x15, 0x25, 0x35, 0x06


def compile_bpf(profile: Seccomp) -> bytes:
    """The classic BPF program for `profile`: an array of struct sock_filter
    (8 bytes each), ready to point a struct sock_fprog at.

    Results are cached per profile.  Raises ConfigError for a system call
    name libseccomp does not know, or when libseccomp fails.
    """
    if not isinstance(profile, Seccomp):
        raise ConfigError(FIELD, f"expected isolate.security.seccomp.Seccomp, got {profile!r}")
    return _compile(profile)


@functools.lru_cache(maxsize=128)
def _compile(profile: Seccomp) -> bytes:
    tokens = _arch_tokens(profile.arches, _libseccomp()[1].seccomp_arch_native())
    first, rest = _split(tuple(dict.fromkeys(profile.rules)), profile.default_action)
    main = _program(profile.default_action.value, rest, tokens)
    if not first and profile.newer_action is None:
        return main
    front = _program(_CONTINUE, first, tokens) if first else b""
    return _prelude(profile, tokens, first, len(front) // 8) + _link(front, main)


def _split(rules: tuple[Rule, ...], default: Action | Errno) -> tuple[list[Rule], list[Rule]]:
    """(the rules of a program of their own, in front; the rest).

    libseccomp lets a call's rule without conditions override its rules with
    some, and refuses rules with the default action.  So the rules with
    conditions of a call that also has a rule without, or one of whose rules
    with conditions has the default action, go in front: the calls they do
    not decide go on into the main program.
    """
    plain = {rule.syscall for rule in rules if not rule.args}
    first = {rule.syscall for rule in rules
             if rule.args and (rule.syscall in plain or rule.action == default)}
    return ([rule for rule in rules if rule.args and rule.syscall in first],
            [rule for rule in rules if not rule.args or rule.syscall not in first])


def _program(default: int, rules: list[Rule], tokens: tuple[int, ...]) -> bytes:
    """libseccomp's program for `rules` and the `default` action value."""
    ffi, lib = _libseccomp()
    ctx = lib.seccomp_init(default)
    if ctx == ffi.NULL:
        raise ConfigError(FIELD, f"seccomp_init({default:#x}) failed")
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
        for rule in rules:
            if rule.action.value != default:  # libseccomp: EACCES
                _add_rule(ffi, lib, ctx, rule, tokens)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


#: The default action of the program of rules with conditions, turned into
#: a jump to the main program: SCMP_ACT_TRACE, which no Rule can take.
_CONTINUE = 0x7FF0_0000 | 0x150C


def _link(first: bytes, second: bytes) -> bytes:
    """`first` then `second`, each `return _CONTINUE` of first now a jump to
    second (classic BPF's unconditional jump takes a 32-bit offset)."""
    linked = bytearray(first)
    count = len(first) // 8
    for index in range(count):
        code, _, _, k = struct.unpack_from("=HBBI", first, index * 8)
        if code == _RET_K and k == _CONTINUE:
            struct.pack_into("=HBBI", linked, index * 8, _JA, 0, 0, count - index - 1)
    return bytes(linked) + second


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


# --- the prelude: our instructions in front of libseccomp's ------------------------
#
# libseccomp has one action for every system call no rule decides, and no
# rule on a range of numbers.  So, like runc, we put a few instructions of
# our own in front of its programs.  On each architecture of the filter they
# return `newer_action` for the numbers above the profile's highest and
# those libseccomp cannot name, send the calls the front program decides to
# it, and every other call straight to the main program (the kernel runs
# the filter for every system call number when it is installed: each
# instruction on the way costs at every container start).  Jumps in classic
# BPF are relative and forward, so libseccomp's programs need no change.

_NR_OFFSET, _ARCH_OFFSET = 0, 4          # in struct seccomp_data
#: x32 system calls: x86_64's token, numbers with this bit.  The main
#: program kills them (x32 is not one of the filter's architectures).
_X32_BIT = 0x40000000
_MAX_NR = 0xFFFFFFFF
#: libseccomp turns a rule on a socket or IPC call into one on these too,
#: where they exist (i386).
_MULTIPLEXERS = ("socketcall", "ipc")

#: An instruction before it is placed: (code, k, where to go when the
#: comparison holds, where when not; for _JA, where to go), a place being
#: None (the next instruction) or a label; or ("label", name).
_Insn = tuple[Any, ...]


def _prelude(profile: Seccomp, tokens: tuple[int, ...], first: list[Rule], front: int) -> bytes:
    """Our instructions, to go in front of the front program (`front`
    instructions, for the rules `first`; none without) and the main one."""
    newer = profile.newer_action
    code: list[_Insn] = [(_LD_W_ABS, _ARCH_OFFSET, None, None)]
    for index, token in enumerate(tokens):
        other, main = f"arch{index + 1}", f"main{index}"   # main: within a jump's reach
        code += [(_JEQ_K, token, None, other), (_LD_W_ABS, _NR_OFFSET, None, None)]
        if token == ARCHES["x86_64"]:
            code.append((_JGE_K, _X32_BIT, main, None))
        if newer is not None:
            code += _newer_checks(_newer_ranges(profile, token), f"known{index}")
        code += [(_JEQ_K, number, "front", None) for number in _numbers(first, token)]
        code += [("label", main), (_JA, "main"), ("label", other)]
    code.append((_JA, "main"))                  # another architecture: the main program kills
    if newer is not None:
        code += [("label", "newer"), (_RET_K, newer.value, None, None)]
    return _assemble(code, {"front": 0, "main": front})


def _newer_ranges(profile: Seccomp, token: int) -> list[tuple[int, int]]:
    """The (low, high) ranges of `token`'s system call numbers newer than
    `profile`: those libseccomp cannot name below its highest, and above."""
    _, lib = _libseccomp()
    numbers = (lib.seccomp_syscall_resolve_name_arch(token, rule.syscall.encode())
               for rule in profile.rules)
    highest = max((number for number in numbers if number >= 0), default=-1)
    ranges: list[tuple[int, int]] = []
    for number in range(highest + 1):
        if _name_of(token, number) is not None:
            continue
        if ranges and ranges[-1][1] == number - 1:
            ranges[-1] = (ranges[-1][0], number)
        else:
            ranges.append((number, number))
    return ranges + [(highest + 1, _MAX_NR)]


def _newer_checks(ranges: list[tuple[int, int]], known: str) -> list[_Insn]:
    """Return newer_action for the numbers in `ranges` (ascending), go on to
    label `known` (placed after them) for the others."""
    code: list[_Insn] = []
    for low, high in ranges:
        if high == _MAX_NR:
            code.append((_JGE_K, low, "newer", known))
        else:
            code += [(_JGE_K, low, None, known), (_JGT_K, high, None, "newer")]
    return code + [("label", known)]


def _numbers(rules: list[Rule], token: int) -> list[int]:
    """The numbers, on `token`, of the system calls `rules` decide."""
    names = {rule.syscall for rule in rules}
    if names:
        names.update(_MULTIPLEXERS)
    lib = _libseccomp()[1]
    numbers = (lib.seccomp_syscall_resolve_name_arch(token, name.encode()) for name in names)
    return sorted(number for number in numbers if number >= 0)


def _assemble(code: list[_Insn], outside: dict[str, int]) -> bytes:
    """`code` placed: labels resolved, and the `outside` ones, given as
    instruction counts past the end of the code."""
    places: dict[str, int] = {}
    count = 0
    for insn in code:
        if insn[0] == "label":
            places[insn[1]] = count
        else:
            count += 1
    places.update({name: count + offset for name, offset in outside.items()})
    program, here = [], 0
    for insn in code:
        if insn[0] == "label":
            continue
        here += 1
        if insn[0] == _JA:
            program.append(struct.pack("=HBBI", _JA, 0, 0, places[insn[1]] - here))
            continue
        op, k, true, false = insn
        jumps = [0 if place is None else places[place] - here for place in (true, false)]
        if max(jumps) > 255:
            raise ConfigError(FIELD, "the filter's prelude is too long for a jump of classic BPF")
        program.append(struct.pack("=HBBI", op, *jumps, k))
    return b"".join(program)


def _name_of(token: int, number: int) -> str | None:
    """libseccomp's name for system call `number` of architecture `token`."""
    ffi, lib = _libseccomp()
    name = lib.seccomp_syscall_resolve_num_arch(token, number)
    if name == ffi.NULL:
        return None
    try:
        return ffi.string(name).decode()
    finally:
        lib.free(name)


# --- Docker's default profile, as an allow-list -------------------------------------

#: Allowed whatever the capabilities: the names of Docker's default profile
#: (moby/profiles, 2026) for x86 and arm, by topic.  Names the installed
#: libseccomp does not know are left out of the filter, and so get ENOSYS as
#: system calls newer than the profile.
_ALLOWED: tuple[str, ...] = (
    # files, directories, extended attributes
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "flock", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents",
    "getdents64", "lchown", "lchown32", "link", "linkat", "_llseek", "lseek", "lstat", "lstat64",
    "mkdir", "mkdirat", "mknod", "mknodat", "name_to_handle_at", "newfstatat", "open", "openat",
    "openat2", "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readlink", "readlinkat", "readv", "rename", "renameat", "renameat2", "rmdir",
    "sendfile", "sendfile64", "splice", "stat", "stat64", "statfs", "statfs64", "statx",
    "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate",
    "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vmsplice", "write", "writev", "cachestat", "listmount", "statmount",
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat",
    "lgetxattr", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr",
    "removexattr", "removexattrat", "setxattr", "setxattrat",
    # waiting for events, asynchronous I/O
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
    "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup",
    "io_submit", "ioprio_get", "ioprio_set", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64",
    "pselect6", "pselect6_time64", "select", "_newselect", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64",
    # memory
    "brk", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "mseal",
    "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "remap_file_pages",
    # processes, threads, futexes
    "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork",
    "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
    "get_robust_list", "set_robust_list", "get_thread_area", "set_thread_area",
    "set_tid_address", "getcpu", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "setpriority", "getsid", "setsid", "setpgid", "gettid", "kill", "tgkill", "tkill",
    "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64", "getrlimit", "setrlimit",
    "ugetrlimit", "getrusage", "process_mrelease", "restart_syscall", "rseq", "seccomp",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "uretprobe",
    "wait4", "waitid", "waitpid",
    # ptrace stays allowed, as in Docker on kernels from 4.8 on: the kernel
    # checks CAP_SYS_PTRACE and the seccomp filter also binds the tracee.
    "ptrace",
    # user and group ids
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid",
    "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
    # signals
    "alarm", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask", "sigreturn",
    # scheduling
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield",
    # clocks and timers
    "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64",
    "getitimer", "setitimer", "gettimeofday", "nanosleep", "time", "times", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64",
    # sockets (socket itself is decided by its family, below; socketcall,
    # i386's multiplexer, is left out: its family is in memory, out of the
    # filter's sight)
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
    "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
    "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socketpair",
    # System V and POSIX IPC
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl",
    "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    # the system
    "getrandom", "sysinfo", "uname",
    # of one architecture family (a name another lacks is skipped there)
    "arch_prctl", "modify_ldt", "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
    "breakpoint", "cacheflush", "set_tls",
)

#: Allowed too when the container keeps the capability, as in Docker, but
#: for three: pivot_root is allowed with SYS_ADMIN too; unshare needs it,
#: as clone's namespace flags do (Docker allows unshare to all, and so every
#: capability over a new user namespace, a large kernel surface); and
#: process_vm_readv/writev need SYS_PTRACE (Docker allows them to all on
#: kernels from 4.8, with ptrace).
_ALLOWED_WITH: dict[str, tuple[str, ...]] = {
    "SYS_ADMIN": (
        "bpf", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie",
        "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
        "mount_setattr", "move_mount", "open_tree", "perf_event_open", "pivot_root",
        "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog",
        "umount", "umount2", "unshare",
    ),
    "BPF": ("bpf",),
    "PERFMON": ("perf_event_open",),
    "DAC_READ_SEARCH": ("open_by_handle_at",),
    "SYS_BOOT": ("reboot",),
    "SYS_CHROOT": ("chroot",),
    "SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "SYS_PACCT": ("acct",),
    "SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                   "process_vm_writev"),
    "SYS_RAWIO": ("iopl", "ioperm"),
    "SYS_TIME": ("clock_settime", "clock_settime64", "settimeofday", "stime"),
    "SYS_TTY_CONFIG": ("vhangup",),
    "SYSLOG": ("syslog",),
}

#: Socket families refused: AF_ALG (the kernel's crypto API, CVE-2026-31431)
#: and AF_VSOCK (the host's hypervisor sockets).
_DENIED_FAMILIES: tuple[int, ...] = (38, 40)

#: The personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26,
#: UNAME26|PER_LINUX32, and 0xffffffff (query).
_PERSONALITIES: tuple[int, ...] = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

#: clone flags creating a namespace (flags are argument 0 except on s390,
#: ignored here): NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET,
#: and NEWTIME (0x80: it overlaps the exit signal bits, where no signal
#: reaches, and clone() rejects it anyway).
_CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x7E000000 | 0x00000080

#: ioctl requests that push input into a terminal (TIOCSTI) or drive the
#: console (TIOCLINUX).
_DENIED_IOCTLS: tuple[int, ...] = (0x5412, 0x541C)

_LOW32 = 0xFFFFFFFF


def docker_default(capabilities: Iterable[str] | None = None) -> Seccomp:
    """A profile with the effect of Docker's default one for a container
    keeping `capabilities` (names as in isolate.security.capabilities; None: the
    default set).

    An allow-list, like Docker's: the system calls it names run (some
    depending on their arguments or on a capability); the others fail with
    EPERM, but those newer than the profile (numbered above every call it
    names, or unknown to libseccomp) with ENOSYS, so that libc falls back to
    an older call, as glibc does from clone3 to clone (whose flags a filter
    can check).
    """
    return _docker_default(_capabilities.parse(capabilities))


@functools.lru_cache(maxsize=64)
def _docker_default(caps: frozenset[str]) -> Seccomp:
    # The rules allowing calls have the default action, ALLOW: libseccomp
    # leaves them out, and the filter refuses the ~100 known calls the list
    # leaves out instead of allowing the ~620 it names (x86_64 and i386):
    # 300 instructions, not 1100.  The kernel copies, checks and JIT-compiles
    # each one at every container start (~0.25 us); the list written out
    # cost 0.25 ms more per start.  The prelude gives ENOSYS to every number
    # newer than the profile or unknown to libseccomp, so ALLOW is left for
    # the calls the list names.
    tokens = _arch_tokens(None, _libseccomp()[1].seccomp_arch_native())
    decided = _argument_rules(caps)
    special = {rule.syscall for rule in decided}
    gated = {name for names in _ALLOWED_WITH.values() for name in names}
    allowed = set(_ALLOWED).union(*(names for cap, names in _ALLOWED_WITH.items() if cap in caps))
    allowed = {name for name in allowed - special if _known(name, tokens)}
    denied = _names_up_to(set(_ALLOWED) | gated | special, tokens) - allowed - special
    eperm = Errno(_errno.EPERM)
    rules = [Rule(name, ALLOW) for name in sorted(allowed)] + decided
    rules += [Rule(name, eperm) for name in sorted(denied)]
    return Seccomp(ALLOW, tuple(rules), newer_action=Errno(_errno.ENOSYS))


def _argument_rules(caps: frozenset[str]) -> list[Rule]:
    """The rules of the system calls decided by their arguments, and of
    clone3 (refused without SYS_ADMIN: its flags are in memory)."""
    eperm = Errno(_errno.EPERM)
    rules = [Rule("socket", eperm, (Arg(0, "&=", family, _LOW32),)) for family in _DENIED_FAMILIES]
    rules += [Rule("ioctl", eperm, (Arg(1, "&=", request, _LOW32),)) for request in _DENIED_IOCTLS]
    # Values compared whole: the kernel reads 32 bits, so a caller setting
    # the upper ones gets EPERM, the safe way round.
    rules += [Rule("personality", ALLOW, (Arg(0, "==", value),)) for value in _PERSONALITIES]
    rules.append(Rule("personality", eperm))
    if "SYS_ADMIN" in caps:
        return rules + [Rule("clone", ALLOW), Rule("clone3", ALLOW)]
    rules += [Rule("clone", ALLOW, (Arg(0, "&=", 0, _CLONE_NAMESPACE_FLAGS),)), Rule("clone", eperm)]
    return rules + [Rule("clone3", Errno(_errno.ENOSYS))]


def _known(name: str, tokens: tuple[int, ...]) -> bool:
    """Whether one of the architectures has system call `name`."""
    lib = _libseccomp()[1]
    return any(lib.seccomp_syscall_resolve_name_arch(token, name.encode()) >= 0
               for token in tokens)


def _names_up_to(names: set[str], tokens: tuple[int, ...]) -> set[str]:
    """The system calls numbered at most as high as one of `names`, on each
    architecture."""
    lib = _libseccomp()[1]
    found: set[str] = set()
    for token in tokens:
        numbers = (lib.seccomp_syscall_resolve_name_arch(token, name.encode()) for name in names)
        found.update(_name_of(token, number) for number in range(max(numbers) + 1))
    return found - {None}
