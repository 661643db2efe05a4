/* The parent side of a spawn: clone the child with its namespaces, write
 * its uid/gid maps while it waits, let it go, and learn from the report
 * pipe whether it reached exec. */
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/sched.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

static int fail(struct iso_result *res, int step, int err)
{
    res->step = step;
    res->err = err;
    return -1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Clone with clone3 where the kernel has it (5.3+), else clone.  Returns
 * the pid in the parent, 0 in the child, -1 with errno. */
static pid_t clone_child(unsigned long long flags, int *pidfd)
{
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = flags | CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)pidfd;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid >= 0 || errno != ENOSYS)
        return (pid_t)pid;
    if (flags & CLONE_NEWTIME) {
        /* clone's flag word has no room for it; such kernels lack it anyway */
        errno = ENOSYS;
        return -1;
    }
    /* Raw clone: no new stack, so the child runs on a copy of ours, as
     * with fork.  x86-64 argument order: flags, stack, parent_tid, child_tid, tls. */
    return (pid_t)syscall(SYS_clone, (unsigned long)flags | CLONE_PIDFD | SIGCHLD,
                          NULL, pidfd, NULL, 0);
}

__attribute__((noreturn))
static void child_main(const struct iso_plan *plan, int sync_fd, int report_fd)
{
    char go;
    if (plan->die_with_parent)
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* Wait for the parent to write our maps.  EOF means it died before
     * PR_SET_PDEATHSIG could cover it, or gave up on us. */
    ssize_t n;
    do {
        n = read(sync_fd, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) {
        iso_report(report_fd, ISO_REPORT_ERROR, ISO_STEP_SYNC, n < 0 ? errno : EPIPE, 0);
        _exit(127);
    }
    close(sync_fd);
    iso_run_steps(plan, 0, report_fd);
    _exit(127);
}

static int write_file(int pid, const char *name, const char *text)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t len = (ssize_t)strlen(text);
    ssize_t n = write(fd, text, (size_t)len);
    int saved = errno;
    close(fd);
    if (n == len)
        return 0;
    errno = n < 0 ? saved : EIO;
    return -1;
}

/* Write setgroups, uid_map and gid_map; returns 0 or a negative ISO_STEP_*. */
static int write_maps(const struct iso_plan *plan, pid_t pid)
{
    if (plan->setgroups && write_file(pid, "setgroups", plan->setgroups) < 0)
        return ISO_STEP_SETGROUPS;
    if (plan->uid_map && write_file(pid, "uid_map", plan->uid_map) < 0)
        return ISO_STEP_UID_MAP;
    if (plan->gid_map && write_file(pid, "gid_map", plan->gid_map) < 0)
        return ISO_STEP_GID_MAP;
    return 0;
}

/* Read one report record; returns 1, 0 on EOF, -1 on error. */
static int read_report(int fd, struct iso_report *rec)
{
    ssize_t n;
    do {
        n = read(fd, rec, sizeof *rec);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    return n == (ssize_t)sizeof *rec ? 1 : 0;
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
        ;
}

int iso_spawn(const struct iso_plan *plan, struct iso_result *res)
{
    int sync_pipe[2], report_pipe[2], pidfd = -1;
    sigset_t all, old;

    res->pid = -1;
    res->pidfd = -1;
    res->report_fd = -1;
    if (pipe2(sync_pipe, O_CLOEXEC) < 0)
        return fail(res, ISO_STEP_PIPE, errno);
    if (pipe2(report_pipe, O_CLOEXEC) < 0) {
        int saved = errno;
        close(sync_pipe[0]);
        close(sync_pipe[1]);
        return fail(res, ISO_STEP_PIPE, saved);
    }

    /* The child must not run the caller's signal handlers (Python's would
     * write to the interpreter's wakeup fd), so it starts with every signal
     * blocked; its steps unblock them just before exec. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone_child(plan->clone_flags, &pidfd);
    if (pid == 0) {
        close(sync_pipe[1]);
        close(report_pipe[0]);
        child_main(plan, sync_pipe[0], report_pipe[1]);
    }
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close_fd(&sync_pipe[0]);
    close_fd(&report_pipe[1]);
    if (pid < 0) {
        close_fd(&sync_pipe[1]);
        close_fd(&report_pipe[0]);
        return fail(res, ISO_STEP_CLONE, clone_errno);
    }

    int failed = 0, step = write_maps(plan, pid), err = errno;
    if (step != 0)
        failed = 1;
    else if (write(sync_pipe[1], "g", 1) != 1)
        failed = 1, step = ISO_STEP_SYNC, err = errno;
    close_fd(&sync_pipe[1]);

    if (!failed) {
        struct iso_report rec = { 0, 0, 0, 0 };
        int got = read_report(report_pipe[0], &rec);
        if (got < 0)
            failed = 1, step = ISO_STEP_SYNC, err = errno;
        else if (got == 1 && rec.kind == ISO_REPORT_ERROR)
            failed = 1, step = rec.step, err = rec.err;
        /* else: EOF (the workload exec'd in place) or EXECED (init mode) */
    }
    if (failed) {
        kill_and_reap(pid);
        close_fd(&pidfd);
        close_fd(&report_pipe[0]);
        return fail(res, step, err);
    }
    res->pid = pid;
    res->pidfd = pidfd;
    res->report_fd = report_pipe[0];
    return 0;
}
