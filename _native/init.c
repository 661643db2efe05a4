/* PID 1 of a container's PID namespace.
 *
 * The kernel gives PID 1 two duties no ordinary program performs: it must
 * reap orphaned processes (or they stay zombies), and it receives only the
 * signals it has asked for.  This init starts the workload, forwards every
 * signal it gets to it, reaps everything, and reports the workload's wait
 * status to the parent before exiting (its own exit status could not carry
 * "killed by signal N", since PID 1 cannot be killed from inside). */
#include "native.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The workload is started with CLONE_VM | CLONE_VFORK: init is suspended
 * until it execs, so it can share init's memory (no page-table copy of the
 * Python process this init was cloned from) and run on this stack. */
static char workload_stack[128 * 1024] __attribute__((aligned(16)));

/* Set by the workload (in memory it shares with init) when a step failed
 * before exec; the error itself is already on the report pipe. */
static volatile int workload_failed;

struct workload_args {
    const struct iso_plan *plan;
    int first;
    int report_fd;
};

static int workload_main(void *p)
{
    struct workload_args *args = p;
    iso_run_steps(args->plan, args->first, args->report_fd);
    workload_failed = 1;
    _exit(127);
}

static void close_all_but(int keep)
{
    if (keep > 0)
        syscall(SYS_close_range, 0U, (unsigned)keep - 1, 0U);
    syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0U);
}

static void default_dispositions(void)
{
    /* Ignored signals would not be queued for sigwaitinfo... only while
     * unblocked, but SIGCHLD set to SIG_IGN would also auto-reap children
     * and hide the workload's status.  Start from the defaults. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);
}

/* Reap every child that has exited; returns 1 once the workload has. */
static int reap(pid_t workload, int *status)
{
    int st, done = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (pid == workload) {
            *status = st;
            done = 1;
        }
    }
    return done;
}

void iso_init_main(const struct iso_plan *plan, int first, int report_fd)
{
    struct workload_args args = { plan, first, report_fd };
    sigset_t all;
    int status = 0;

    /* Every signal stays blocked (the parent blocked them around clone) so
     * that each one queues for sigwaitinfo below. */
    sigfillset(&all);
    default_dispositions();

    pid_t workload = clone(workload_main, workload_stack + sizeof workload_stack,
                           CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    if (workload < 0) {
        iso_report(report_fd, ISO_REPORT_ERROR, first - 1, errno, 0);
        _exit(127);
    }
    /* CLONE_VFORK: we run again once the workload has exec'd or exited. */
    if (workload_failed) {
        waitpid(workload, &status, 0);
        _exit(127);
    }
    iso_report(report_fd, ISO_REPORT_EXECED, 0, 0, 0);
    close_all_but(report_fd);

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0)
            continue;
        if (sig == SIGCHLD) {
            if (reap(workload, &status))
                break;
        } else {
            kill(workload, sig);
        }
    }
    iso_report(report_fd, ISO_REPORT_EXIT, 0, 0, status);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}
