/* Declarations shared by the C files of the spawn executor. */
#ifndef ISOLATE_NATIVE_H
#define ISOLATE_NATIVE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "plan.h"

/* What the parent hands the cloned child.  The child is cloned with
 * CLONE_VM: it runs in the caller's memory, on a stack of its own, until it
 * execs, so it never pays for copying the Python process's page tables.
 * The parent keeps this struct alive until the workload has been exec'd,
 * and both stacks until the child itself has exec'd (in init mode: until
 * the container is reaped, see iso_free_stacks). */
struct iso_child {
    const struct iso_plan *plan;
    int sync_fd;                  /* read end: one byte means "maps written, go on" */
    int report_fd;                /* write end of the report pipe (close-on-exec) */
    int parent_fds[2];            /* the parent's ends of both pipes, for the child to close */
    char *workload_stack;         /* top of the stack the workload starts on */
    /* A failed step, also recorded here (this memory is shared): after a
     * seccomp filter is installed, the workload may not be allowed to
     * write its report, but its setup process or the parent can. */
    volatile int failed_step;
    volatile int failed_err;      /* 0: no step failed */
    int fork_step;                /* index of the ISO_OP_FORK_WORKLOAD step */
    int first_step;               /* where the namespaced child starts in the plan */
    char *child_stack;            /* top of its stack (used by the joiner) */
    /* The joiner's clone writes the namespaced child's pid here
     * (CLONE_PARENT_SETTID) before the child runs. */
    volatile int child_pid;
    const int *cgroup_fds;        /* open cgroup.procs files (ISO_OP_JOIN_CGROUP, pid1) */
    int ncgroup_fds;
};

/* Write `pid` ("0": the calling process) to each open cgroup.procs file;
 * returns 0, or -1 with errno set. */
int iso_join_cgroups(const int *fds, int n, int pid);

/* Entry point of the cloned child (a clone(2) callback). */
int iso_child_main(void *child);

/* Entry point of the joiner (plan->joiner): joins, then clones the child. */
int iso_joiner_main(void *child);

/* Run steps [first, nsteps).  Returns only when a step failed, after
 * reporting it; the caller then exits. */
void iso_run_steps(struct iso_child *child, int first);

/* ISO_OP_FORK_WORKLOAD: start the workload at step `first`, then exec the
 * pid1 program in place of the calling process.  Never returns. */
__attribute__((noreturn))
void iso_start_workload(struct iso_child *child, int first);

/* ISO_OP_CLONE_CHILD (in the joiner): clone the namespaced child, which
 * starts at step `first`, and exit once it no longer needs us.  Never
 * returns. */
__attribute__((noreturn))
void iso_clone_child(struct iso_child *child, int first);

/* Send one record on the report pipe (async-signal-safe). */
void iso_report(int fd, int kind, int step, int err, int value);

#endif
