"""Everything between a Config and a running PID 1 (private).

    compile.py      Config + argv -> a Plan: checks the host, decides every step
    rootfs.py       the mount steps of a plan: root, /proc, /dev, binds, masks
    plan.py         Plan and Step, laid out as C structs for the executor
    executor.py     calls the C executor (_native/spawn.c), turns failures into errors
    pid1.py         the static init program, as a sealed memfd
    holder.py       a bare process that holds fresh namespaces (Namespace.create)
    stdio.py        PIPE/DEVNULL/STDOUT and the fds behind them
    communicate.py  Process.communicate's loop over the pipes
    syscalls.py     checked wrappers of the system calls Python lacks (cffi)

Nothing here imports the objects above it (Container, Namespace); they
import this.
"""
