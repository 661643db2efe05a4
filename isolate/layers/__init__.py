"""Filesystem layers as images and overlays share them: the tar format with
its whiteouts (format.py), applying a layer to a directory (apply.py),
writing an overlay's upper directory as a layer (write.py), and the locks
a running container holds on the layers under it (in_use.py)."""
