"""What a container may do once it runs: capabilities, the seccomp filter,
masked and read-only paths, resource limits (rlimits) and the host ids a
container's user namespace maps (idmaps).  docs/security.md says why each
default is what it is."""
from isolate._util import lazy

__getattr__, __dir__ = lazy.exports(__name__, {"Seccomp": "seccomp"})
