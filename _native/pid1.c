/* isolate-init: PID 1 of a container's PID namespace (a program of its own).
 *
 *     isolate-init REPORT_FD WORKLOAD_PID EXIT_FD [+|- CGROUP_PROCS_FD...]
 *
 * With the optional part, it first joins the cgroups whose cgroup.procs
 * files are open as the given fds and, with "+", unshares a cgroup
 * namespace rooted there.  EXIT_FD is -1, or a file that outlives the
 * caller (a detached named container's <state dir>/<name>.exit): when the
 * workload ends, one line saying how ("exit N" or "signal N") is written
 * at its start (record_exit below).
 *
 * It reports ISO_REPORT_EXECED first: the workload has been exec'd (the
 * setup process waited for that) and PID 1 no longer shares any memory
 * with the caller.
 * The kernel gives PID 1 two duties no ordinary program performs: it must
 * reap orphaned processes (or they stay zombies), and it receives only the
 * signals it asked for.  This program is exec'd by the container's setup
 * process once the workload (its child) has been exec'd.  It forwards every
 * signal it gets to the workload, reaps everything, and reports the
 * workload's wait status on REPORT_FD before exiting: its own exit status
 * could not say "killed by signal N", since PID 1 cannot be killed by a
 * signal from inside its namespace.
 *
 * It is linked statically: it runs inside the container's root filesystem,
 * where the host's dynamic loader and libc may not exist. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plan.h"

static void report(int fd, int kind, int value)
{
    struct iso_report rec = { kind, 0, 0, value };
    while (write(fd, &rec, sizeof rec) < 0 && errno == EINTR)
        ;
}

/* The workload's end, for a reader who outlives the caller and so never
 * sees the report pipe: `isolate ps`, `wait`, `inspect` of a detached
 * container.  Written at offset 0 and cut there, so the file holds exactly
 * that one line.  Its readers parse it strictly and only show it: root in
 * the container may hold CAP_SYS_PTRACE in its user namespace and could
 * then write anything here through us. */
static void record_exit(int fd, int status)
{
    /* Digits by hand: snprintf would pull stdio into this static program. */
    const char *word = WIFEXITED(status) ? "exit " : "signal ";
    unsigned value = WIFEXITED(status) ? (unsigned)WEXITSTATUS(status) : (unsigned)WTERMSIG(status);
    char line[16], digits[4];
    size_t len = strlen(word), n = 0;
    if (fd < 0)
        return;
    memcpy(line, word, len);
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        line[len++] = digits[--n];
    line[len++] = '\n';
    while (pwrite(fd, line, len, 0) < 0 && errno == EINTR)
        ;
    ftruncate(fd, (off_t)len);
}

/* Keep only the report pipe and the exit file (`keep`, ascending, -1 for
 * none): stdio and anything else the setup process had open would
 * otherwise stay open as long as the container runs. */
static void close_all_but(const int keep[2])
{
    unsigned next = 0;
    for (int i = 0; i < 2; i++) {
        if (keep[i] < 0)
            continue;
        if ((unsigned)keep[i] > next)
            syscall(SYS_close_range, next, (unsigned)keep[i] - 1, 0U);
        next = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, next, ~0U, 0U);
}

static void default_dispositions(void)
{
    /* exec keeps ignored signals ignored; SIGCHLD ignored would even make
     * the kernel reap the workload and lose its status. */
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

/* Move ourselves into the container's cgroups (open cgroup.procs files
 * named by fd), then into a cgroup namespace rooted there.  The setup
 * process we replaced shared the caller's memory, so it had to stay out of
 * them: the OOM killer would have taken the caller with it. */
static int join_cgroups(int argc, char **argv)
{
    if (argc < 5)
        return 0;
    for (int i = 5; i < argc; i++) {
        if (write(atoi(argv[i]), "0", 1) != 1)
            return -1;
    }
    return argv[4][0] == '+' ? unshare(CLONE_NEWCGROUP) : 0;
}

int main(int argc, char **argv)
{
    sigset_t all;
    int status = 0;

    if (argc < 4)
        return 127;
    int report_fd = atoi(argv[1]);
    pid_t workload = (pid_t)atoi(argv[2]);
    int exit_fd = atoi(argv[3]);

    /* Before anything else: nobody in the container may open our
     * /proc/1/mem, /proc/1/fd or /proc/1/exe, or ptrace us. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* A session of our own, out of the caller's process group: a Ctrl-C on
     * the caller's terminal would otherwise reach us and be forwarded, on
     * top of what the caller does about it (the CLI forwards it itself),
     * and new_session would not keep the workload out of the caller's
     * terminal signals. */
    setsid();
    if (join_cgroups(argc, argv) < 0) {
        struct iso_report rec = { ISO_REPORT_ERROR, ISO_STEP_CGROUP, errno, 0 };
        while (write(report_fd, &rec, sizeof rec) < 0 && errno == EINTR)
            ;
        kill(workload, SIGKILL);
        return 127;
    }
    report(report_fd, ISO_REPORT_EXECED, 0);

    /* Every signal is still blocked (the parent blocked them around
     * clone): each one queues for sigwaitinfo, none is lost meanwhile. */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    prctl(PR_SET_NAME, "isolate-init", 0, 0, 0);   /* not "memfd:isolate-i" */
    default_dispositions();
    int keep[2] = { report_fd, exit_fd };
    if (exit_fd >= 0 && exit_fd < report_fd) {
        keep[0] = exit_fd;
        keep[1] = report_fd;
    }
    close_all_but(keep);

    /* Resetting SIGCHLD to SIG_DFL discarded any pending one: the workload
     * may have ended before we got here. */
    int done = reap(workload, &status);
    while (!done) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0)
            continue;
        if (sig == SIGCHLD)
            done = reap(workload, &status);
        else
            kill(workload, sig);
    }
    record_exit(exit_fd, status);
    report(report_fd, ISO_REPORT_EXIT, status);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
