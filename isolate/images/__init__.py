"""Container images: an ImageStore of images imported from archives
(`docker save`, `podman save`, OCI layouts), their layers shared between
images and stacked under a container's Overlay.

    store.py          ImageStore, Image: import, list, find, remove, lease
    archive.py        reading an archive: index, manifests, configs
    archive_files.py  the files of an archive (tar or directory), safely
    manifests.py      the JSON documents, checked field by field
    layer_blob.py     one layer blob, verified and extracted as it streams
    records.py        the store's record of an image
    ref.py            image names and references ("localhost/x:tag"), short
                      names matched against stored ones
    user.py           the config's User resolved against the image's files
    leases.py         imports in progress, trash, detached containers' leases
    budget.py         disk space checks before an import

The layer format itself (whiteouts, applying, writing) is isolate.layers.
"""
from isolate._util import lazy

__getattr__, __dir__ = lazy.exports(__name__, {
    "Image": "store",
    "ImageStore": "store",
    "canonical_name": "store",
    "store_layer": "store",
})
