"""Named containers that outlive the process that started them (`isolate run
-d --name`): their state records in a StateDir (state.py); starting,
exec'ing into, killing, stopping, starting again and removing them
(containers.py); how they ended, learned after their starter is gone
(exits.py); their output (logs.py); what they are and use (inspect.py,
stats.py, processes.py); their cgroup and pausing them (cgroup.py,
freezer.py); files and images out of them (copy.py, inside.py, commit.py,
changes.py, rootfs.py); the remover of those started with --rm
(remover.py); and the leases on image layers they hold while they exist
(layer_leases.py).

The functions the command line's verbs run are exported here, loaded on
first use.  A verb's function whose module has the verb's name (inspect,
commit, processes, logs, exits' wait) is exported as VERB_named, as
kill_named is: a package attribute named as a submodule would be replaced
by the submodule once that is imported.
"""
from isolate._util import lazy

#: Public name -> "module" (under isolate.named) or "module:attribute".
_EXPORTS = {
    "ContainerExists": "state",
    "ContainerNotFound": "state",
    "ContainerState": "state",
    "RUNNING": "state",
    "STOPPED": "state",
    "StateDir": "state",
    "StateError": "state",
    "check_name": "state",
    "default_root": "state",
    "exec_named": "containers",
    "kill_named": "containers",
    "new_name": "containers",
    "remove_named": "containers",
    "restart_named": "containers",
    "running": "containers",
    "start_detached": "containers",
    "start_named": "containers",
    "stop_named": "containers",
    "settle": "exits",
    "wait_named": "exits:wait",
    "logs_named": "logs:copy",
    "inspect_named": "inspect:inspect",
    "Sample": "stats",
    "cpu_percent": "stats",
    "sample": "stats",
    "ContainerProcess": "processes",
    "top_named": "processes:processes",
    "cgroup_directories": "cgroup",
    "is_paused": "cgroup",
    "NO_CGROUP": "freezer",
    "pause_named": "freezer",
    "unpause_named": "freezer",
    "CopyError": "copy",
    "copy_from": "copy",
    "copy_into": "copy",
    "commit_named": "commit:commit",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy.exports(__name__, _EXPORTS)
