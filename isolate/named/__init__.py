"""Named containers that outlive the process that started them (`isolate run
-d --name`): their state records in a StateDir (state.py); starting,
exec'ing into, killing, stopping, starting again and removing them
(containers.py); how they ended, learned after their starter is gone
(exits.py); their output (logs.py); the remover of those started with
--rm (remover.py); and the leases on image layers they hold while they
exist (layer_leases.py)."""
from isolate._util import lazy

__getattr__, __dir__ = lazy.exports(__name__, {
    "ContainerExists": "state",
    "ContainerNotFound": "state",
    "ContainerState": "state",
    "StateDir": "state",
    "StateError": "state",
    "exec_named": "containers",
    "kill_named": "containers",
    "new_name": "containers",
    "remove_named": "containers",
    "restart_named": "containers",
    "running": "containers",
    "start_detached": "containers",
    "start_named": "containers",
    "stop_named": "containers",
})
