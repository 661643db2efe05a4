"""Image layer format: the conventions a layer tar and an overlay upper
directory share, for `apply` (tar to directory) and `write`
(directory to tar).

A layer is a tar "changeset" (OCI image-spec, layer.md): its entries add or
replace files, and two kinds of *whiteout* entries delete what the layers
below hold:

- ``DIR/.wh.NAME`` deletes ``DIR/NAME``;
- ``DIR/.wh..wh..opq`` makes ``DIR`` opaque: nothing of the lower layers'
  ``DIR`` shows through, only what this layer puts there.

Both act on the layers below only: an entry of the same layer stays.  A
directory a layer makes where it also whited the name out is opaque.

isolate keeps each applied layer as a directory that becomes an overlayfs
lower layer, so whiteouts are stored the way overlayfs itself writes them
(isolate always mounts overlays with ``userxattr``, hence ``user.*``):

- a whiteout is a character device 0/0 at ``NAME`` (Linux >= 5.8 lets any
  user create that one device, so this works rootless too);
- an opaque directory carries the xattr ``user.overlay.opaque = "y"``.

So a real file or directory cannot have a name starting with ``.wh.``: in
a layer it would read as a whiteout.  Both directions refuse such names.
"""
from __future__ import annotations

import os
import stat

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
#: Where overlayfs keeps its metadata: ``user.*`` with ``userxattr`` (as
#: isolate mounts), ``trusted.*`` otherwise.
OVERLAY_XATTR_PREFIXES = ("user.overlay.", "trusted.overlay.")
#: How a PAX tar header carries an xattr: this prefix, then its name.
PAX_XATTR = "SCHILY.xattr."

#: The longest entry name or hardlink target in a layer, in bytes: PATH_MAX,
#: beyond which a process could not name the file anyway.
MAX_NAME_BYTES = 4096
#: The most components an entry name or hardlink target may have: far more
#: than real images nest, and few enough to bound what one entry costs (a
#: step per component) and how deep the tree made gets.
MAX_DEPTH = 256


def is_whiteout(st: os.stat_result) -> bool:
    """Whether `st` is an overlay whiteout: a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def layer_xattr(name: str, *, privileged: bool) -> bool:
    """Whether a layer may carry the xattr `name`: ``user.*`` ones, and
    ``security.capability`` if `privileged` (only a privileged applier may
    set it; a writer keeps it for whoever applies the layer).

    Never overlay metadata (opaque, redirect, metacopy...): it would let a
    layer change how the overlay reads it; only whiteout entries stand for
    it."""
    if name.startswith(OVERLAY_XATTR_PREFIXES):
        return False
    return name.startswith("user.") or (privileged and name == "security.capability")
