"""isolate: run commands in Linux containers, from Python.

    >>> import isolate
    >>> isolate.run(["hostname"], capture_output=True, hostname="box").stdout
    b'box\\n'

See docs/api.md for the whole public API.
"""
from .config import Config
from .container import CompletedProcess, Container, exec_in, run
from .errors import (CalledProcessError, CgroupError, ConfigError, ExecutableNotFound, ImageError,
                     IsolateError, LayerError, NamespaceError, SpawnError, SpawnTimeout, TimeoutExpired,
                     UserNamespaceError)
from .images import Image, ImageStore
from .limits import CgroupLimit
from .mounts import Bind, Tmpfs
from .namespace import ALL as ALL_NAMESPACES
from .namespace import Namespace
from .overlay import Overlay
from .process import Process
from .seccomp import Seccomp
from .state import ContainerExists, ContainerNotFound, ContainerState, StateDir, StateError
from ._stdio import DEVNULL, PIPE, STDOUT

__version__ = "0.1.0"

__all__ = [
    "ALL_NAMESPACES", "Bind", "CalledProcessError", "CgroupError", "CgroupLimit",
    "CompletedProcess", "Config",
    "ConfigError", "Container", "ContainerExists", "ContainerNotFound",
    "ContainerState", "DEVNULL", "ExecutableNotFound", "Image", "ImageError", "ImageStore",
    "IsolateError", "LayerError", "Namespace",
    "NamespaceError", "Overlay", "PIPE", "Process", "STDOUT", "Seccomp", "SpawnError", "SpawnTimeout",
    "StateDir", "StateError", "TimeoutExpired", "Tmpfs", "UserNamespaceError", "exec_in", "run",
]
