"""Control groups: a container's resource limits (CgroupLimit), and one
interface over cgroup v2 and v1/hybrid that creates, fills, measures,
freezes and removes a container's cgroup.

    limits.py     CgroupLimit: what the user asks for, checked
    interface.py  create() / from_directories(): picks v1 or v2
    v1.py, v2.py  the two backends (same methods)
    files.py      reading and writing cgroup files, killing what is in one
    stats.py      Stats: a snapshot of usage
"""
from isolate._util import lazy

__getattr__, __dir__ = lazy.exports(__name__, {
    "CgroupLimit": "limits",
    "Stats": "stats",
    "create": "interface",
    "from_directories": "interface",
    "frozen": "interface",
    "is_own": "interface",
    "unified": "interface",
})
