/* Starting the workload under a PID 1 of our own.
 *
 * The cloned child has built the container and now shares the caller's
 * memory.  It starts the workload with CLONE_VM | CLONE_VFORK (no copy of
 * anything; it is suspended until the workload execs), then replaces itself
 * with the pid1 program (pid1.c) from a sealed memfd.  Exec'ing gives PID 1
 * a tiny address space of its own: it never again shares the caller's
 * memory, and /proc/1/exe inside the container is a sealed copy, not a
 * host binary the workload could overwrite. */
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

struct workload_start {
    struct iso_child *child;
    int first;
};

static int workload_main(void *arg)
{
    struct workload_start *start = arg;
    iso_run_steps(start->child, start->first);   /* returns only on failure */
    _exit(127);
}

/* The most cgroup hierarchies pid1 is handed (v1 has about a dozen). */
#define MAX_CGROUP_ARGS 32

/* Exec pid1 in place of the calling process.  pid1 tells the parent that
 * the workload runs once it has made itself undumpable: until then this
 * process shares the caller's memory, and the parent keeps that memory
 * undumpable (spawn.c), so nothing in the container can open our
 * /proc/PID/mem or /proc/PID/exe (the runc CVE-2016-9962 class). */
__attribute__((noreturn))
static void exec_pid1(struct iso_child *child, pid_t workload)
{
    char texts[3 + MAX_CGROUP_ARGS][16];
    char *argv[6 + MAX_CGROUP_ARGS] = { "isolate-init", texts[0], texts[1], texts[2] };
    char *envp[] = { NULL };
    int report_fd = child->report_fd, exit_fd = child->plan->exit_fd, argc = 4, ok;

    snprintf(texts[0], sizeof texts[0], "%d", report_fd);
    snprintf(texts[1], sizeof texts[1], "%d", (int)workload);
    snprintf(texts[2], sizeof texts[2], "%d", exit_fd);
    /* pid1 reports on the pipe, and writes the exit file, so both must
     * survive this exec.  The workload, started above with a copy of our
     * descriptors, has closed its copy of the exit file (ISO_OP_CLOSE_FDS). */
    ok = fcntl(report_fd, F_SETFD, 0) == 0 && (exit_fd < 0 || fcntl(exit_fd, F_SETFD, 0) == 0);
    /* With cgroup_in_workload, pid1 joins the cgroups itself: this
     * process shares the caller's memory and must never be in them. */
    int ncgroups = child->plan->cgroup_in_workload ? child->ncgroup_fds : 0;
    if (ncgroups > MAX_CGROUP_ARGS) {
        errno = E2BIG;
        ok = 0;
    }
    if (child->plan->cgroup_in_workload)
        argv[argc++] = child->plan->cgroup_in_workload == 2 ? "+" : "-";
    for (int i = 0; ok && i < ncgroups; i++) {
        snprintf(texts[3 + i], sizeof texts[3 + i], "%d", child->cgroup_fds[i]);
        argv[argc++] = texts[3 + i];
        ok = fcntl(child->cgroup_fds[i], F_SETFD, 0) == 0;
    }
    argv[argc] = NULL;
    if (ok)
        execveat(child->plan->init_fd, "", argv, envp, AT_EMPTY_PATH);
    iso_report(report_fd, ISO_REPORT_ERROR, child->fork_step, errno, 0);
    kill(workload, SIGKILL);
    _exit(127);
}

void iso_start_workload(struct iso_child *child, int first)
{
    struct workload_start start = { child, first };
    child->fork_step = first - 1;
    pid_t workload = clone(workload_main, child->workload_stack,
                           CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
    if (workload < 0 && errno == EINVAL) {
        /* Linux before 6.7 refuses CLONE_VM to a process that unshared a
         * time namespace it has not entered yet.  Copy the memory there
         * (slower); a failing workload then reports on the pipe itself. */
        workload = clone(workload_main, child->workload_stack, CLONE_VFORK | SIGCHLD, &start);
    }
    if (workload < 0) {
        iso_report(child->report_fd, ISO_REPORT_ERROR, first - 1, errno, 0);
        _exit(127);
    }
    if (child->failed_err) {
        /* Report it for the workload, which a seccomp filter may have kept
         * from writing (if it did write, the parent reads only the first). */
        iso_report(child->report_fd, ISO_REPORT_ERROR, child->failed_step, child->failed_err, 0);
        waitpid(workload, NULL, 0);
        _exit(127);
    }
    exec_pid1(child, workload);
}
