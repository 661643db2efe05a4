"""Config: everything that describes a container, validated once.

A Config is a frozen attrs class.  Every field is checked (and converted)
when the Config is built, and a bad value raises ConfigError naming the
field, so nothing half-done ever has to be undone.
"""
from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import attrs

from isolate import namespace
from isolate.security import capabilities, masked, rlimits, seccomp
from isolate.security.capabilities import parser as _capability_set
from isolate.errors import ConfigError
from isolate.cgroups.limits import CgroupLimit
from isolate.mounts import Bind, Tmpfs, container_paths
from isolate.overlay import Overlay
from isolate.namespace import Namespace

if TYPE_CHECKING:
    from isolate.images.store import Image

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOSTNAME = "isolate"
_MAX_ID = 2**32 - 2   # (uid_t)-1 means "no change" to the kernel
MAX_BINDS = 64        # ISO_MAX_SLOTS in _native/plan.h


def _namespaces(value: Iterable[str]) -> frozenset[str]:
    return namespace.parse_kinds(value)


def _hostname(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value.encode()) <= 64:
        raise ConfigError("hostname", f"expected 1 to 64 bytes of text, got {value!r}")
    if "\0" in value or "/" in value or any(c.isspace() for c in value):
        raise ConfigError("hostname", f"{value!r} contains a NUL, '/' or whitespace")
    return value


def _rootfs(value: str | os.PathLike | Overlay | Any | None) -> str | Overlay | None:
    """A directory, an Overlay, or an image (which becomes its Overlay; its
    settings are applied in Config.__attrs_post_init__)."""
    if value is None or isinstance(value, Overlay) or _is_image(value):
        return value
    path = os.path.abspath(os.fsdecode(value))
    if not os.path.isdir(path):
        raise ConfigError("rootfs", f"{path} is not a directory")
    return path


def _is_image(value: Any) -> bool:
    # Without isolate.images imported, nothing can be one of its Images.
    images = sys.modules.get("isolate.images.store")
    return images is not None and isinstance(value, images.Image)


def _mounts(value: Iterable[Bind | Tmpfs]) -> tuple[Bind | Tmpfs, ...]:
    mounts = tuple(value)
    for index, mount in enumerate(mounts):
        if not isinstance(mount, (Bind, Tmpfs)):
            raise ConfigError(f"mounts[{index}]", f"expected isolate.Bind or isolate.Tmpfs, got {mount!r}")
    return mounts


def _env(value: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(value or {})
    for key, val in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigError("env", f"invalid variable name {key!r}")
        if not isinstance(val, str):
            raise ConfigError("env", f"value of {key!r} must be a str, got {type(val).__name__} {val!r}")
        if "\0" in val:
            raise ConfigError("env", f"value of {key!r} contains a NUL byte")
    return env


def _cwd(value: str | os.PathLike) -> str:
    path = os.fsdecode(value)
    if not path.startswith("/") or "\0" in path:
        raise ConfigError("cwd", f"{path!r} must be an absolute path inside the container")
    return path


def _id(field: str):
    def convert(value: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
            raise ConfigError(field, f"expected an id from 0 to {_MAX_ID}, got {value!r}")
        return value
    return convert


def _id_map(field: str):
    def convert(value: Iterable[tuple[int, int, int]] | None) -> tuple[tuple[int, int, int], ...] | None:
        if value is None:
            return None
        try:
            ranges = tuple((int(inside), int(outside), int(count)) for inside, outside, count in value)
        except (TypeError, ValueError):
            raise ConfigError(field, f"expected (inside, outside, count) triples, got {value!r}") from None
        if not ranges or any(min(r) < 0 or r[2] == 0 for r in ranges):
            raise ConfigError(field, f"expected non-empty ranges of non-negative ids, got {value!r}")
        return ranges
    return convert


def _join(value: Iterable[Namespace]) -> tuple[Namespace, ...]:
    joined = tuple(value)
    kinds = set()
    for ns in joined:
        if not isinstance(ns, Namespace):
            raise ConfigError("join", f"expected isolate.Namespace objects, got {ns!r}")
        if ns.fd < 0:
            raise ConfigError("join", f"{ns!r} is closed")
        if ns.kind in kinds:
            raise ConfigError("join", f"two {ns.kind} namespaces to join")
        kinds.add(ns.kind)
    return joined


def _seccomp(value: seccomp.Seccomp | str | None) -> seccomp.Seccomp | str | None:
    """"default" (Docker's profile, adjusted to the kept capabilities), a
    Seccomp profile, or None ("unconfined") for no filter."""
    if value is None or value == "unconfined":
        return None
    if value == "default":
        return "default"
    if not isinstance(value, seccomp.Seccomp):
        raise ConfigError("seccomp", f"expected 'default', None or an isolate.Seccomp, got {value!r}")
    return value


def _limits(value: CgroupLimit | None) -> CgroupLimit | None:
    if value is not None and not isinstance(value, CgroupLimit):
        raise ConfigError("limits", f"expected an isolate.CgroupLimit, got {value!r}")
    return value


def _cgroup_parent(value: str | None) -> str | None:
    """A path in the cgroup hierarchy, such as "/system.slice/x.service"."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value \
            or ".." in value.split("/"):
        raise ConfigError("cgroup_parent", f"expected an absolute cgroup path without '..', "
                                           f"got {value!r}")
    return "/" + value.strip("/") if value.strip("/") else ""


def _pass_fds(value: Iterable[int]) -> tuple[int, ...]:
    fds = tuple(sorted(set(value)))
    for fd in fds:
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 3:
            raise ConfigError("pass_fds", f"expected descriptors >= 3, got {fd!r}")
    return fds


@attrs.frozen
class Config:
    """How to build a container: each field is also a keyword of run(),
    Container() and Container.exec().  docs/api.md says more about each.

    namespaces       kinds to create (default: all eight)
    hostname         the UTS hostname (default "isolate")
    rootfs           None (the host's / read-only), a directory, an Overlay or an Image
    rootfs_readonly  a directory root is read-only unless False
    mounts           Bind and Tmpfs objects, applied in order
    env              the workload's whole environment (PATH added when missing)
    cwd, user, group where and as whom the workload runs (default "/", 0, 0)
    uid_map, gid_map (inside, outside, count) ranges of the user namespace
    init             a PID 1 that reaps and forwards signals (default True)
    new_session      setsid() before exec (default True)
    tty              a terminal of the container's own: Container.pty
    die_with_parent  SIGKILL the container when its starter dies (default True)
    pass_fds         descriptors the workload keeps
    capabilities, cap_add, cap_drop   the capabilities kept (default Docker's set)
    no_new_privs     setuid files grant nothing (default True)
    rlimits          {"nofile": 1024, "core": (0, 0), ...}
    seccomp          "default" (Docker's allow-list), a Seccomp, or None
    masked_paths, readonly_paths      /proc and /sys paths hidden, read-only
    join             Namespace objects to join instead of creating that kind
    limits           a CgroupLimit: memory, cpu, pids, io (and stats())
    cgroup_parent    where the container's cgroup goes
    expose_home      bind the caller's home read-only (host root only)
    """

    namespaces: frozenset[str] = attrs.field(default=namespace.ALL, converter=_namespaces)
    hostname: str | None = attrs.field(default=None, converter=_hostname)
    rootfs: str | Overlay | None = attrs.field(default=None, converter=_rootfs)
    rootfs_readonly: bool = attrs.field(default=None, converter=attrs.converters.optional(bool))
    mounts: tuple[Bind | Tmpfs, ...] = attrs.field(default=(), converter=_mounts)
    env: dict[str, str] = attrs.field(factory=dict, converter=_env)
    # None: the image's WorkingDir and User with rootfs=image, else "/" and 0.
    cwd: str = attrs.field(default=None, converter=attrs.converters.optional(_cwd))
    user: int = attrs.field(default=None, converter=attrs.converters.optional(_id("user")))
    group: int = attrs.field(default=None, converter=attrs.converters.optional(_id("group")))
    uid_map: tuple[tuple[int, int, int], ...] | None = attrs.field(default=None, converter=_id_map("uid_map"))
    gid_map: tuple[tuple[int, int, int], ...] | None = attrs.field(default=None, converter=_id_map("gid_map"))
    init: bool = attrs.field(default=True, converter=bool)
    new_session: bool = attrs.field(default=True, converter=bool)
    # A pty of the container's own as its controlling terminal and stdio;
    # the caller gets the master as Container.pty (isolate/terminal.py).
    tty: bool = attrs.field(default=False, converter=bool)
    die_with_parent: bool = attrs.field(default=True, converter=bool)
    pass_fds: tuple[int, ...] = attrs.field(default=(), converter=_pass_fds)
    capabilities: frozenset[str] = attrs.field(default=None, converter=capabilities.parse)
    cap_add: frozenset[str] = attrs.field(default=(), converter=_capability_set("cap_add"))
    cap_drop: frozenset[str] = attrs.field(default=(), converter=_capability_set("cap_drop"))
    no_new_privs: bool = attrs.field(default=True, converter=bool)
    rlimits: tuple[rlimits.Limit, ...] = attrs.field(default=None, converter=rlimits.parse)
    seccomp: seccomp.Seccomp | str | None = attrs.field(default="default", converter=_seccomp)
    masked_paths: tuple[str, ...] = attrs.field(default=masked.MASKED,
                                                converter=container_paths("masked_paths"))
    readonly_paths: tuple[str, ...] = attrs.field(default=masked.READONLY,
                                                  converter=container_paths("readonly_paths"))
    join: tuple[Namespace, ...] = attrs.field(default=(), converter=_join)
    limits: CgroupLimit | None = attrs.field(default=None, converter=_limits)
    cgroup_parent: str | None = attrs.field(default=None, converter=_cgroup_parent)
    # With the host's root, /home, /root and the caller's home are empty
    # tmpfs; True binds the caller's home (its passwd entry's, else $HOME)
    # read-only at its own path.
    expose_home: bool = attrs.field(default=False, converter=bool)
    # Derived once (the class is frozen): asked for on every spawn.
    _created: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _key: tuple = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if _is_image(self.rootfs):
            _apply_image(self)
        for name, default in (("cwd", "/"), ("user", 0), ("group", 0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        # After the image's Env is merged in: its PATH beats the default.
        self.env.setdefault("PATH", DEFAULT_PATH)
        if self.rootfs_readonly is None:
            # A directory root is read-only unless asked; an overlay exists to be written.
            object.__setattr__(self, "rootfs_readonly", not isinstance(self.rootfs, Overlay))
        # As Docker: drop first, then add (cap_drop=["ALL"], cap_add=[...] keeps just those).
        kept = (self.capabilities - self.cap_drop) | self.cap_add
        object.__setattr__(self, "capabilities", frozenset(kept))
        joined = {ns.kind for ns in self.join}
        object.__setattr__(self, "_created", self.namespaces - joined)
        object.__setattr__(self, "_key", self._make_key())
        _check_combinations(self)

    def _make_key(self) -> tuple:
        fields = {f.name: getattr(self, f.name) for f in attrs.fields(Config) if f.init}
        fields["env"] = tuple(self.env.items())
        fields["join"] = tuple((ns.kind, ns.fd) for ns in self.join)
        return tuple(fields.values())

    def key(self) -> tuple:
        """Every field, hashable: equal keys, equal plans (a joined namespace
        counts by its fd, which is what the plan holds)."""
        return self._key

    def has(self, kind: str) -> bool:
        """Whether the container gets a new namespace of this kind."""
        return kind in self._created

    @property
    def created(self) -> frozenset[str]:
        """The kinds of namespace the container creates (listed and not joined)."""
        return self._created

    def joins(self, kind: str) -> bool:
        """Whether the container joins an existing namespace of this kind."""
        return any(ns.kind == kind for ns in self.join)

    @property
    def effective_hostname(self) -> str | None:
        """The hostname to set, or None when the UTS namespace is shared."""
        if not self.has("uts"):
            return None
        return self.hostname or DEFAULT_HOSTNAME


def _apply_image(config: Config) -> None:
    """rootfs=image: the image's layers become an ephemeral Overlay; cwd,
    user and group not given take the image's WorkingDir and User (a user
    given without a group, its group in the image's /etc/passwd), env given
    is added over the image's Env (as `docker run -e`), and HOME, unless
    set, is the user's home in the image's /etc/passwd, or "/"."""
    image = config.rootfs
    def put(name: str, value: Any) -> None:
        object.__setattr__(config, name, value)
    if config.cwd is None:
        put("cwd", _cwd(image.cwd))
    # As docker run: a user given without a group takes its /etc/passwd group.
    ids = image.resolve_user(None if config.user is None else str(config.user))
    if ids is not None:
        put("user", ids[0])
        put("group", ids[1] if config.group is None else config.group)
    env = {**image.env, **config.env}
    env.setdefault("HOME", image.home(config.user or 0))
    put("env", _env(env))
    put("rootfs", image.overlay())


def _check_combinations(config: Config) -> None:
    """Fields that are valid alone but not together."""
    if config.hostname is not None and not config.has("uts"):
        raise ConfigError("hostname", "setting a hostname needs the 'uts' namespace")
    if not config.has("mount"):
        if config.rootfs is not None or config.mounts:
            field = "rootfs" if config.rootfs is not None else "mounts"
            raise ConfigError(field, "needs the 'mount' namespace")
    if config.cgroup_parent is not None and config.limits is None:
        raise ConfigError("cgroup_parent", "only used with limits=")
    if (config.uid_map or config.gid_map) and not config.has("user"):
        raise ConfigError("uid_map", "id maps need the 'user' namespace")
    if not config.rootfs_readonly and config.rootfs is None:
        raise ConfigError("rootfs_readonly", "the host's / is always bound read-only; "
                          "give a rootfs directory to have a writable root")
    _check_id_map("uid_map", config.uid_map, config.user, "user")
    _check_id_map("gid_map", config.gid_map, config.group, "group")
    _check_proc_mounts(config.mounts)
    binds = sum(isinstance(m, Bind) for m in config.mounts)
    if binds > MAX_BINDS:
        raise ConfigError("mounts", f"at most {MAX_BINDS} bind mounts, got {binds}")


#: /proc files a Bind may cover, as runc allows (lxcfs-style views of
#: memory, CPUs and load); anything else under /proc would hide its masks.
PROC_BIND_TARGETS = frozenset({
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/sys/kernel/ns_last_pid",
})


def _check_proc_mounts(mounts: tuple[Bind | Tmpfs, ...]) -> None:
    """No mount over /proc: it would undo the masked and read-only paths."""
    for index, mount in enumerate(mounts):
        target = mount.target
        if target != "/proc" and not target.startswith("/proc/"):
            continue
        if isinstance(mount, Bind) and target in PROC_BIND_TARGETS:
            continue
        raise ConfigError(f"mounts[{index}].target",
                          f"{target}: mounts over /proc are refused (they could hide its masked "
                          f"and read-only paths); binds may cover only "
                          f"{', '.join(sorted(PROC_BIND_TARGETS))}")


def _check_id_map(field: str, ranges: tuple[tuple[int, int, int], ...] | None,
                  wanted: int, wanted_field: str) -> None:
    """The kernel's rules for a map (user_namespaces(7)), checked up front."""
    if ranges is None:
        return
    if len(ranges) > 340:
        raise ConfigError(field, f"at most 340 ranges, got {len(ranges)}")
    for side, name in ((0, "inside"), (1, "outside")):
        spans = sorted((r[side], r[side] + r[2]) for r in ranges)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:
                raise ConfigError(field, f"ranges overlap on the {name} side: {ranges!r}")
    if max(r[0] + r[2] for r in ranges) > _MAX_ID + 1 or max(r[1] + r[2] for r in ranges) > _MAX_ID + 1:
        raise ConfigError(field, f"a range goes past id {_MAX_ID}: {ranges!r}")
    if not any(inside <= wanted < inside + count for inside, _, count in ranges):
        raise ConfigError(wanted_field, f"{wanted} is not mapped by {field} {ranges!r}")


class Options(TypedDict, total=False):
    """Config's fields as the keywords of run(), Container() and exec(), for
    type checkers and IDEs (``**kwargs: Unpack[Options]``).
    tests/test_api_signatures.py keeps it equal to Config's fields."""

    namespaces: Iterable[str]
    hostname: str | None
    rootfs: str | os.PathLike | Overlay | Image | None
    rootfs_readonly: bool | None
    mounts: Iterable[Bind | Tmpfs]
    env: Mapping[str, str]
    cwd: str | None
    user: int | None
    group: int | None
    uid_map: Iterable[tuple[int, int, int]] | None
    gid_map: Iterable[tuple[int, int, int]] | None
    init: bool
    new_session: bool
    tty: bool
    die_with_parent: bool
    pass_fds: Iterable[int]
    capabilities: Iterable[str] | None
    cap_add: Iterable[str]
    cap_drop: Iterable[str]
    no_new_privs: bool
    rlimits: Mapping[str, int | tuple[int, int]] | None
    seccomp: seccomp.Seccomp | str | None
    masked_paths: Iterable[str] | None
    readonly_paths: Iterable[str] | None
    join: Iterable[Namespace]
    limits: CgroupLimit | None
    cgroup_parent: str | None
    expose_home: bool


def with_config_keywords(function: Callable, *, open_ended: bool = False) -> Callable:
    """Give `function`'s ``**kwargs`` Config's fields as keyword-only
    parameters in its signature, so that help() and inspect show each
    keyword and its default (the code keeps one **kwargs).  With
    `open_ended`, the signature keeps **kwargs too, for keywords of its own."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    rest = [p for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD and open_ended]
    taken = {p.name for p in kept}
    for field in attrs.fields(Config):
        if field.init and field.name not in taken:
            default = field.default
            if isinstance(default, attrs.Factory):
                default = default.factory()
            annotation = Options.__annotations__[field.name]
            kept.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                          annotation=getattr(annotation, "__forward_arg__", annotation)))
    function.__signature__ = signature.replace(parameters=kept + rest)
    return function


def make_config(config: Config | None, overrides: dict) -> Config:
    """The Config for run()/Container(): `config`, or one built from keywords."""
    if config is None:
        if not overrides:
            return _DEFAULT
        try:
            return Config(**overrides)
        except TypeError as exc:
            raise ConfigError("config", str(exc)) from None
    if overrides:
        return attrs.evolve(config, **overrides)
    return config



_DEFAULT = Config()
