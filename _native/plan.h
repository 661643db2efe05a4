/* The plan: what the parent builds in Python and the cloned child executes
 * in C.  This header is read twice: by the C compiler and by cffi's cdef
 * parser, so it holds only plain declarations (no #include, no macros other
 * than integer constants). */

/* Operations a step can perform.  Arguments live in struct iso_step's
 * a/b/c/d (strings) and num/num2/num3 (integers); each op documents its use.
 *
 * Paths in `b` that do not start with "/" are inside the container's root
 * (ISO_OP_OPEN_ROOT) and resolved there as if it were "/" (openat2 with
 * RESOLVE_IN_ROOT): a symlink in a root filesystem can never lead a mount
 * or a new file outside it. */
enum iso_op {
    ISO_OP_MOUNT = 1,      /* mount(a, b, c, num, d); with num2 set, b must be a directory
                              at exactly that path in the root, no symlink on the way */
    ISO_OP_SETATTR,        /* mount_setattr(b, AT_RECURSIVE if num2, attr_set=num) */
    ISO_OP_MKDIR,          /* mkdir(b, num); EEXIST is fine */
    ISO_OP_MKFILE,         /* create an empty file b (mode num); EEXIST is fine */
    ISO_OP_SYMLINK,        /* symlink(a, b) */
    ISO_OP_OPEN_ROOT,      /* open directory b as the root that relative paths resolve in */
    ISO_OP_MASK,           /* hide b: /dev/null over a file, an empty read-only tmpfs over a
                              directory; b is resolved without symlinks and must exist */
    ISO_OP_READONLY,       /* bind b on itself, read-only (recursively); b as for ISO_OP_MASK */
    ISO_OP_PIVOT,          /* pivot_root into the root (ISO_OP_OPEN_ROOT), detach the old one */
    ISO_OP_SETHOSTNAME,    /* sethostname(a) */
    ISO_OP_LOOPBACK_UP,    /* bring interface "lo" up */
    ISO_OP_FORK_WORKLOAD,  /* start the workload (it runs the later steps), then exec plan->init_fd as PID 1 */
    ISO_OP_UNSHARE,        /* unshare(num) */
    ISO_OP_OPEN_TREE,      /* slot num = open_tree(b, OPEN_TREE_CLONE | AT_RECURSIVE) */
    ISO_OP_TREE_SETATTR,   /* mount_setattr(slot num, AT_RECURSIVE, attr_set=num2) */
    ISO_OP_MOVE_MOUNT,     /* move_mount(slot num -> b), then close the slot */
    ISO_OP_CAPBSET_DROP,   /* drop capabilities 0..num2 whose bit is set in num from the
                              bounding set; clear the inheritable and ambient sets */
    ISO_OP_NO_NEW_PRIVS,   /* prctl(PR_SET_NO_NEW_PRIVS, 1) */
    ISO_OP_SETNS,          /* setns(num, num2) */
    ISO_OP_CLONE_CHILD,    /* (joiner only) clone the namespaced child, which goes on after this step */
    ISO_OP_SETSID,         /* setsid() */
    ISO_OP_SETGROUPS,      /* setgroups(0, NULL) */
    ISO_OP_SETGID,         /* setresgid(num, num, num) */
    ISO_OP_SETUID,         /* setresuid(num, num, num) */
    ISO_OP_PDEATHSIG,      /* prctl(PR_SET_PDEATHSIG, num) */
    ISO_OP_CHDIR,          /* chdir(b), resolved in "/" without magic links */
    ISO_OP_DUP2,           /* dup2(num, num2) */
    ISO_OP_CLOSE_FDS,      /* close every fd >= 3 but the report pipe and plan->keep_fds,
                              which lose close-on-exec */
    ISO_OP_RESET_SIGNALS,  /* every signal to SIG_DFL, empty mask */
    ISO_OP_SETRLIMIT,      /* prlimit(0, resource num, soft num2, hard num3) */
    ISO_OP_SECCOMP,        /* install plan->seccomp_filter */
    ISO_OP_OVERLAY,        /* overlayfs on host path b through fsopen/fsconfig: lowers from d
                              (newline-separated, top first, one "lowerdir+" each), upperdir c,
                              workdir a, userxattr */
    ISO_OP_EXEC,           /* execve the first of plan->exec_paths that works */
    ISO_OP_JOIN_CGROUP,    /* write "0" (this process) to each cgroup.procs fd given to iso_spawn */
    ISO_OP_PTY,            /* a new pty from /dev/ptmx: send the master over socket num
                              (SCM_RIGHTS), make the slave the controlling terminal of a
                              new session and fds 0, 1, 2 */
};

/* Kinds of records the child sends on the report pipe. */
enum iso_report_kind {
    ISO_REPORT_ERROR = 1,  /* step failed: step index, errno */
    ISO_REPORT_EXECED,     /* init mode: the workload was exec'd (pid1 is being exec'd) */
    ISO_REPORT_EXIT,       /* init mode: the workload ended, value = wait status */
    ISO_REPORT_CHILD,      /* the joiner cloned the child: value = its pid, err = clone's errno */
};

/* Detached mount trees (ISO_OP_OPEN_TREE) a plan may hold at once. */
#define ISO_MAX_SLOTS 64

struct iso_step {
    int op;
    const char *a;
    const char *b;
    const char *c;
    const char *d;
    unsigned long num;
    unsigned long num2;
    unsigned long num3;
};

struct iso_report {
    int kind;
    int step;
    int err;
    int value;
};

struct iso_plan {
    unsigned long long clone_flags;  /* CLONE_NEW* flags */
    /* Set when the plan joins namespaces: a first child (the joiner) runs
     * the ISO_OP_SETNS steps, then clones the namespaced child at
     * ISO_OP_CLONE_CHILD, as a child of the caller (CLONE_PARENT), so that
     * the namespaces it creates are owned by those it joined. */
    int joiner;
    /* The joiner is forked (its own copy of memory) instead of sharing
     * ours: needed to join a time namespace, which setns refuses to a
     * process that shares its memory.  It reports the child's pid on the
     * report pipe (ISO_REPORT_CHILD). */
    int joiner_forks;
    int die_with_parent;             /* PR_SET_PDEATHSIG(SIGKILL) in the child */
    /* Set in init mode with cgroups: the parent does not place the child
     * (which shares the caller's memory, so the OOM killer must never find
     * it in the container's cgroup); the workload places itself
     * (ISO_OP_JOIN_CGROUP, while it is a vfork child, which the OOM killer
     * passes over) and pid1 places itself once it has exec'd.  2: pid1
     * then also unshares a cgroup namespace (the workload has an
     * ISO_OP_UNSHARE step for its own). */
    int cgroup_in_workload;
    const struct iso_step *steps;
    int nsteps;
    /* Written by the parent into /proc/PID/... before the child goes on;
     * NULL to skip.  setgroups is written first. */
    const char *setgroups;
    const char *uid_map;
    const char *gid_map;
    /* For ISO_OP_FORK_WORKLOAD: an fd of the pid1 program (a sealed memfd). */
    int init_fd;
    /* For ISO_OP_FORK_WORKLOAD: a file pid1 writes the workload's end to
     * ("exit N" or "signal N"), or -1.  Only pid1 keeps it: the workload's
     * ISO_OP_CLOSE_FDS closes it like any fd not in keep_fds. */
    int exit_fd;
    /* For ISO_OP_EXEC: candidate paths (NULL-terminated), argv and envp. */
    char *const *exec_paths;
    char *const *argv;
    char *const *envp;
    /* For ISO_OP_CLOSE_FDS: descriptors the workload keeps, ascending. */
    const int *keep_fds;
    int nkeep_fds;
    /* For ISO_OP_SECCOMP: a classic BPF program (struct sock_filter[]). */
    const void *seccomp_filter;
    unsigned short seccomp_len;     /* in instructions */
};

/* What iso_spawn hands back.  On failure, `err` is the errno and `step`
 * the index of the failed step, or one of the ISO_STEP_* values below. */
struct iso_result {
    int pid;
    int pidfd;
    int report_fd;   /* read end of the report pipe, or -1 */
    void *stacks;    /* to pass to iso_free_stacks once pid is reaped, or NULL */
    int step;
    int err;
};

#define ISO_STEP_CLONE -1
#define ISO_STEP_SETGROUPS -2
#define ISO_STEP_UID_MAP -3
#define ISO_STEP_GID_MAP -4
#define ISO_STEP_SYNC -5
#define ISO_STEP_PIPE -6
#define ISO_STEP_CGROUP -7
#define ISO_STEP_STOPPED -8   /* something stopped the child (SIGSTOP) before it exec'd */
#define ISO_STEP_TIMEOUT -9   /* the child had not exec'd by the deadline */

/* Spawn the container described by plan.  The child's pid is written to
 * each of the ncgroup_fds open cgroup.procs files while it waits, before
 * it runs any step (unless plan->cgroup_in_workload).  Returns 0 with pid,
 * pidfd, report_fd and stacks set once the workload has been exec'd, or -1
 * with step/err set (the child, if any, has been killed if need be, reaped,
 * and every fd closed).  A child that is stopped by a signal, or has not
 * exec'd after timeout_ms (-1: no limit), is killed. */
int iso_spawn(const struct iso_plan *plan, const int *cgroup_fds, int ncgroup_fds,
              int timeout_ms, struct iso_result *res);

/* Release the stacks of a spawn whose child has been reaped. */
void iso_free_stacks(void *stacks);
