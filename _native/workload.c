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

/* Exec pid1 in place of the calling process.  pid1 tells the parent that
 * the workload runs once it has made itself undumpable: until then this
 * process shares the caller's memory, and the parent keeps that memory
 * undumpable (spawn.c), so nothing in the container can open our
 * /proc/PID/mem or /proc/PID/exe (the runc CVE-2016-9962 class). */
__attribute__((noreturn))
static void exec_pid1(struct iso_child *child, pid_t workload)
{
    char fd_text[16], pid_text[16];
    char *argv[] = { "isolate-init", fd_text, pid_text, NULL };
    char *envp[] = { NULL };
    int report_fd = child->report_fd;

    snprintf(fd_text, sizeof fd_text, "%d", report_fd);
    snprintf(pid_text, sizeof pid_text, "%d", (int)workload);
    /* pid1 reports on the pipe, so it must survive this exec. */
    if (fcntl(report_fd, F_SETFD, 0) == 0)
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
