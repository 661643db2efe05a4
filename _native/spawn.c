/* The parent side of a spawn: clone the child into its namespaces, write
 * its uid/gid maps while it waits, let it go, and learn from the report
 * pipe whether it reached exec. */
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

/* One stack for the cloned child, one for the workload it starts. */
#define STACK_SIZE (256 * 1024)

/* While a child shares our memory (CLONE_VM), our memory is undumpable:
 * /proc/PID/mem, /proc/PID/exe and ptrace of any process using it then
 * need CAP_SYS_PTRACE in the caller's user namespace, which nothing in a
 * container has (the runc CVE-2016-9962 class: a process in the container
 * reaching the runtime while it joins).  Dumpability belongs to the memory,
 * not to a process, so the caller is undumpable too for the few hundred
 * microseconds of a spawn; concurrent spawns share one hold. */
static pthread_mutex_t dumpable_lock = PTHREAD_MUTEX_INITIALIZER;
static int dumpable_holds;
static int dumpable_restore;   /* 1 if we cleared the flag and must set it back */

static void hold_undumpable(int *held)
{
    if (*held)
        return;
    pthread_mutex_lock(&dumpable_lock);
    if (dumpable_holds++ == 0) {
        /* 2 (SUID_DUMP_ROOT) protects as well as 0 and cannot be set back. */
        dumpable_restore = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1;
        if (dumpable_restore)
            prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    pthread_mutex_unlock(&dumpable_lock);
    *held = 1;
}

static void release_undumpable(int *held)
{
    if (!*held)
        return;
    pthread_mutex_lock(&dumpable_lock);
    if (--dumpable_holds == 0 && dumpable_restore)
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    pthread_mutex_unlock(&dumpable_lock);
    *held = 0;
}

/* An unprivileged caller writes the child's id maps as the owner of its
 * /proc/PID files, which an undumpable process's are not: hold only after
 * writing them.  (The new namespaces have no other process to fear yet.) */
static int hold_before_maps(const struct iso_plan *plan)
{
    return geteuid() == 0 || !(plan->uid_map || plan->gid_map || plan->setgroups);
}

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

/* Clone the child: CLONE_VM spares copying the page tables of a large
 * Python process; the child has its own fd table, fs and signal handlers. */
static pid_t clone_child(struct iso_child *child, char *stack_top, int *pidfd)
{
    int flags = (int)child->plan->clone_flags | CLONE_VM | CLONE_PIDFD | SIGCHLD;
    pid_t pid = clone(iso_child_main, stack_top, flags, child, pidfd);
    if (pid < 0 && errno == EINVAL) {
        /* Kernels before 5.2 have no CLONE_PIDFD. */
        pid = clone(iso_child_main, stack_top, flags & ~CLONE_PIDFD, child);
        if (pid > 0)
            *pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    }
    return pid;
}

/* Milliseconds on the monotonic clock. */
static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether our child `pid` is stopped by a signal (left reportable). */
static int is_stopped(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)pid, &info, WSTOPPED | WNOHANG | WNOWAIT) == 0
           && info.si_pid == pid && info.si_code == CLD_STOPPED;
}

/* Read one report record: 1, or 0 on EOF; -1 with res set when the child
 * was stopped by a signal or the deadline (ms, -1: none) passed, after
 * killing it.  The child is `pid`, or, while its pid is not known yet,
 * whatever the kernel wrote at `pid_slot`.  A process in the container
 * can stop a child that joined it (kill(2) of a pid it guesses): we would
 * wait for ever, so a stop ends the spawn.  Every signal is blocked
 * meanwhile, so no call here is interrupted. */
static int wait_report(int fd, struct iso_report *rec, pid_t pid, volatile int *pid_slot,
                       long long deadline, struct iso_result *res)
{
    for (;;) {
        int slice = 50;
        if (deadline >= 0) {
            long long left = deadline - now_ms();
            slice = left <= 0 ? 0 : left < slice ? (int)left : slice;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, slice) != 0)   /* data, EOF, or an error read() will tell */
            return read(fd, rec, sizeof *rec) == (ssize_t)sizeof *rec;
        pid_t who = pid > 0 ? pid : pid_slot ? *pid_slot : 0;
        int step = 0;
        if (who > 0 && is_stopped(who))
            step = ISO_STEP_STOPPED;
        else if (deadline >= 0 && now_ms() >= deadline)
            step = ISO_STEP_TIMEOUT;
        if (step) {
            if (who > 0)
                kill(who, SIGKILL);
            return fail(res, step, step == ISO_STEP_STOPPED ? EINTR : ETIMEDOUT);
        }
    }
}

/* With namespaces to join, the joiner joins them and clones the namespaced
 * child as our child; the joiner (if it forked) or the child itself
 * reports the child's pid.  Returns that pid, or -1 with the failed step
 * in res (a child killed meanwhile is left for the caller to reap). */
static pid_t take_joined_child(struct iso_child *child, int *pidfd, int report_fd,
                               long long deadline, struct iso_result *res)
{
    struct iso_report rec = { 0, 0, 0, 0 };
    volatile int *slot = child->plan->joiner_forks ? NULL : &child->child_pid;
    int got = wait_report(report_fd, &rec, 0, slot, deadline, res);
    if (got < 0)
        return -1;
    if (!got)
        return fail(res, ISO_STEP_CLONE, ECHILD);
    if (rec.kind == ISO_REPORT_ERROR)
        return fail(res, rec.step, rec.err);
    if (rec.kind != ISO_REPORT_CHILD || rec.value <= 0)
        return fail(res, ISO_STEP_CLONE, rec.err ? rec.err : ECHILD);
    /* Our child, unreaped: its pid cannot be reused meanwhile. */
    *pidfd = (int)syscall(SYS_pidfd_open, rec.value, 0);
    return rec.value;
}

static void reap(pid_t pid)
{
    if (pid > 0)
        while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
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

void iso_free_stacks(void *stacks)
{
    if (stacks)
        munmap(stacks, 2 * STACK_SIZE);
}

/* Let the child go (or, if maps failed, tell it to give up), then wait
 * for its first report.  Returns 0 when the workload was exec'd. */
static int release_child(const struct iso_child *child, pid_t pid, int *sync_fd,
                         int report_fd, long long deadline, struct iso_result *res,
                         int *execed_in_place, int *undumpable)
{
    const struct iso_plan *plan = child->plan;
    int step = write_maps(plan, pid);
    if (step == 0 && !plan->cgroup_in_workload
            && iso_join_cgroups(child->cgroup_fds, child->ncgroup_fds, pid) < 0)
        step = ISO_STEP_CGROUP;
    if (step != 0) {
        int err = errno;
        close_fd(sync_fd);        /* EOF: the child exits */
        return fail(res, step, err);
    }
    hold_undumpable(undumpable);
    if (write(*sync_fd, "g", 1) != 1) {
        int err = errno;
        close_fd(sync_fd);
        return fail(res, ISO_STEP_SYNC, err);
    }
    close_fd(sync_fd);
    struct iso_report rec = { 0, 0, 0, 0 };
    int got = wait_report(report_fd, &rec, pid, NULL, deadline, res);
    if (got < 0)
        return -1;
    if (got && rec.kind == ISO_REPORT_ERROR)
        return fail(res, rec.step, rec.err);
    /* EOF without a report: the workload was exec'd in place, or failed
     * after its seccomp filter forbade it to write (it recorded why in
     * our shared memory before exiting, which closed the pipe). */
    if (!got && child->failed_err)
        return fail(res, child->failed_step, child->failed_err);
    /* EOF: the workload was exec'd in place; EXECED: pid1 is running. */
    *execed_in_place = !got;
    return 0;
}

int iso_spawn(const struct iso_plan *plan, const int *cgroup_fds, int ncgroup_fds,
              int timeout_ms, struct iso_result *res)
{
    int sync_pipe[2], report_pipe[2], pidfd = -1, rc, execed_in_place = 0, undumpable = 0;
    long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    sigset_t all, old;

    res->pid = res->pidfd = res->report_fd = -1;
    res->stacks = NULL;
    char *stacks = mmap(NULL, 2 * STACK_SIZE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stacks == MAP_FAILED)
        return fail(res, ISO_STEP_PIPE, errno);
    if (pipe2(sync_pipe, O_CLOEXEC) < 0) {
        rc = fail(res, ISO_STEP_PIPE, errno);
        munmap(stacks, 2 * STACK_SIZE);
        return rc;
    }
    if (pipe2(report_pipe, O_CLOEXEC) < 0) {
        rc = fail(res, ISO_STEP_PIPE, errno);
        close(sync_pipe[0]);
        close(sync_pipe[1]);
        munmap(stacks, 2 * STACK_SIZE);
        return rc;
    }
    struct iso_child child = {
        .plan = plan, .sync_fd = sync_pipe[0], .report_fd = report_pipe[1],
        .parent_fds = { sync_pipe[1], report_pipe[0] },
        .workload_stack = stacks + 2 * STACK_SIZE, .fork_step = -1,
        .child_stack = stacks + STACK_SIZE,
        .cgroup_fds = cgroup_fds, .ncgroup_fds = ncgroup_fds,
    };

    /* Block every signal until the child has exec'd: it must not run the
     * caller's handlers (Python's write to the interpreter's wakeup fd),
     * and while it shares our memory nothing of ours may touch errno. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (hold_before_maps(plan))
        hold_undumpable(&undumpable);
    pid_t pid, joiner = -1;
    if (plan->joiner)   /* it runs on the workload's stack: it is gone before that is used */
        pid = joiner = clone(iso_joiner_main, stacks + 2 * STACK_SIZE,
                             (plan->joiner_forks ? 0 : CLONE_VM) | SIGCHLD, &child);
    else
        pid = clone_child(&child, stacks + STACK_SIZE, &pidfd);
    int clone_errno = errno;
    close_fd(&sync_pipe[0]);
    close_fd(&report_pipe[1]);
    if (pid < 0)
        rc = fail(res, ISO_STEP_CLONE, clone_errno);
    else if (plan->joiner)
        pid = take_joined_child(&child, &pidfd, report_pipe[0], deadline, res);
    if (pid < 0) {
        close_fd(&sync_pipe[1]);
        close_fd(&report_pipe[0]);
        if (joiner > 0 && !plan->joiner_forks)
            reap(child.child_pid);   /* killed, or exited: it freed the joiner */
        rc = -1;
    } else if ((rc = release_child(&child, pid, &sync_pipe[1], report_pipe[0], deadline, res,
                                   &execed_in_place, &undumpable)) < 0) {
        /* The child exits by itself after a failure (or was killed); once
         * it is reaped, nothing runs on the stacks any more (its workload,
         * if any, was a vfork child it waited for, or died with its PID
         * namespace). */
        reap(pid);
        close_fd(&pidfd);
        close_fd(&report_pipe[0]);
    } else {
        res->pid = pid;
        res->pidfd = pidfd;
        res->report_fd = report_pipe[0];
    }
    /* The joiner exits once the child has exec'd, died, or (forked) been
     * reported. */
    reap(joiner);
    /* Every process that shared our memory has exec'd, or been reaped. */
    release_undumpable(&undumpable);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0 && !execed_in_place)
        res->stacks = stacks;     /* still the child's until it is reaped */
    else
        munmap(stacks, 2 * STACK_SIZE);
    return rc;
}
