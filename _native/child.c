/* The child side of a spawn: execute the plan's steps, in order, without
 * Python.  Everything here runs in a cloned process that shares the
 * caller's memory (CLONE_VM) until it execs, so it only makes system calls:
 * no malloc, no stdio, no locks, and it writes nothing but its own stack
 * and the iso_child it was given. */
#include "native.h"
#include "syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/resource.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>


void iso_report(int fd, int kind, int step, int err, int value)
{
    struct iso_report rec = { kind, step, err, value };
    ssize_t n;
    do {
        n = write(fd, &rec, sizeof rec);
    } while (n < 0 && errno == EINTR);
}

/* What the steps of one process share. */
struct steps_state {
    int slots[ISO_MAX_SLOTS];   /* detached mount trees (ISO_OP_OPEN_TREE) */
    int root_fd;                /* the container's root (ISO_OP_OPEN_ROOT) */
};

/* Keep errno across a close on an error path. */
static int close_keep_errno(int fd, int rc)
{
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* openat2(O_PATH | flags) of `path` in the root, as if it were "/". */
static int open_in_root(const struct steps_state *st, const char *path, int flags,
                        unsigned long long resolve)
{
    struct open_how how = {
        .flags = O_PATH | O_CLOEXEC | (unsigned)flags,
        .resolve = RESOLVE_IN_ROOT | resolve,
    };
    return (int)syscall(SYS_openat2, st->root_fd, path, &how, sizeof how);
}

/* An O_PATH fd for `path`: resolved inside the root when relative, so that
 * "..", absolute symlinks and magic links cannot leave it (the runc
 * CVE-2021-30465 class: a symlink swapped in as a mount target). */
static int open_path(const struct steps_state *st, const char *path)
{
    if (path[0] == '/')
        return open(path, O_PATH | O_CLOEXEC);
    return open_in_root(st, path, 0, RESOLVE_NO_MAGICLINKS);
}

/* An O_PATH fd for `path` exactly where it is named in the root: no
 * symlink at all on the way.  Special mounts and masks use it: a /proc that
 * is a symlink would put proc at another place, where a later mount can
 * hide it from the masks (runc CVE-2019-19921, CVE-2023-28642). */
static int open_exact(const struct steps_state *st, const char *path, int flags)
{
    return open_in_root(st, path, flags, RESOLVE_NO_SYMLINKS);
}

/* The directory holding `path` (resolved as open_path does), and a pointer
 * to its last component in *name.  Paths come from Python normalized, with
 * no trailing "/" and no "." or ".." as a last component. */
static int open_parent(const struct steps_state *st, const char *path, const char **name)
{
    char parent[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        *name = path;
        return open_path(st, ".");
    }
    size_t len = (size_t)(slash - path);
    if (len >= sizeof parent) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(parent, path, len);
    parent[len] = 0;
    *name = slash + 1;
    return open_path(st, len ? parent : "/");
}

/* mount(2) onto a resolved fd: it has no *at form, but the fd's magic link
 * in /proc/self/fd (the host's /proc: the root is not pivoted yet) lands on
 * exactly that directory, and unlike a chdir into it needs no permission
 * to search it: a container without the host's root ids still mounts over
 * the host's /root (0700). */
static int mount_on_fd(const char *source, int fd, const char *fstype,
                       unsigned long flags, const char *data)
{
    static const char prefix[] = "/proc/self/fd/";
    char path[sizeof prefix + 10], digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + fd % 10);
        fd /= 10;
    } while (fd > 0);
    memcpy(path, prefix, sizeof prefix - 1);
    for (int i = 0; i < n; i++)
        path[sizeof prefix - 1 + i] = digits[n - 1 - i];
    path[sizeof prefix - 1 + n] = 0;
    return mount(source, path, fstype, flags, data);
}

/* Bind host path `source` onto a resolved fd (a file or a directory):
 * clone it as a detached tree, attach the tree there. */
static int bind_on_fd(const char *source, int fd, int recursive)
{
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source,
                            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0));
    if (tree < 0)
        return -1;
    int rc = (int)syscall(SYS_move_mount, tree, "", fd, "",
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
    return close_keep_errno(tree, rc);
}

static int do_mount(const struct iso_step *s, const struct steps_state *st)
{
    if (s->b[0] == '/')
        return mount(s->a, s->b, s->c, s->num, s->d);
    int fd = s->num2 ? open_exact(st, s->b, O_DIRECTORY) : open_path(st, s->b);
    if (fd < 0)
        return -1;
    int rc = (s->num & MS_BIND) ? bind_on_fd(s->a, fd, (s->num & MS_REC) != 0)
                                : mount_on_fd(s->a, fd, s->c, s->num, s->d);
    return close_keep_errno(fd, rc);
}

static int do_setattr(const struct iso_step *s, const struct steps_state *st)
{
    int fd = open_path(st, s->b);
    if (fd < 0)
        return -1;
    int rc = iso_mount_setattr(fd, "", AT_EMPTY_PATH | (s->num2 ? AT_RECURSIVE : 0),
                               (unsigned)s->num, 0);
    return close_keep_errno(fd, rc);
}

static int do_mkdir(const struct iso_step *s, const struct steps_state *st)
{
    const char *name;
    int dir = open_parent(st, s->b, &name);
    if (dir < 0)
        return -1;
    int rc = mkdirat(dir, name, (mode_t)s->num);
    if (rc < 0 && errno == EEXIST)
        rc = 0;
    return close_keep_errno(dir, rc);
}

static int do_mkfile(const struct iso_step *s, const struct steps_state *st)
{
    const char *name;
    int dir = open_parent(st, s->b, &name);
    if (dir < 0)
        return -1;
    int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode_t)s->num);
    int rc = (fd < 0 && errno != EEXIST) ? -1 : 0;
    if (fd >= 0)
        close(fd);
    return close_keep_errno(dir, rc);
}

static int do_symlink(const struct iso_step *s, const struct steps_state *st)
{
    const char *name;
    int dir = open_parent(st, s->b, &name);
    if (dir < 0)
        return -1;
    return close_keep_errno(dir, symlinkat(s->a, dir, name));
}

static int do_open_root(const struct iso_step *s, struct steps_state *st)
{
    st->root_fd = open(s->b, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return st->root_fd < 0 ? -1 : 0;
}

/* A file is hidden under /dev/null, a directory under an empty read-only
 * tmpfs.  The /dev/null is the host's (the namespace's "/" is still the
 * host's root here), never a path inside the container's root, which its
 * owner could have replaced by a symlink to something worth unmasking (the
 * runc CVE-2025-31133 class).  b itself is resolved without symlinks and
 * must exist: the plan holds only paths this root shows, so a missing one
 * means a tampered root, and skipping it would leave the real one bare. */
static int do_mask(const struct iso_step *s, const struct steps_state *st)
{
    struct stat info;
    int fd = open_exact(st, s->b, 0);
    if (fd < 0)
        return -1;
    int rc = fstat(fd, &info);
    if (rc == 0 && S_ISDIR(info.st_mode))
        rc = mount_on_fd("tmpfs", fd, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
    else if (rc == 0)
        rc = bind_on_fd("/dev/null", fd, 0);
    return close_keep_errno(fd, rc);
}

/* Bind b on itself read-only: clone its tree, make the clone read-only,
 * attach it where it was.  b is found as do_mask finds it. */
static int do_readonly(const struct iso_step *s, const struct steps_state *st)
{
    int fd = open_exact(st, s->b, 0);
    if (fd < 0)
        return -1;
    int tree = (int)syscall(SYS_open_tree, fd, "",
                            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    int rc = tree < 0 ? -1 : 0;
    if (rc == 0)
        rc = iso_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE,
                               MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 0);
    if (rc == 0)
        rc = (int)syscall(SYS_move_mount, tree, "", fd, "",
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
    if (tree >= 0)
        close_keep_errno(tree, 0);
    return close_keep_errno(fd, rc);
}

/* One fsconfig(FSCONFIG_SET_STRING) on an fs context. */
static int fs_set(int fs, const char *key, const char *value)
{
    return (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key, value, 0);
}

/* Overlayfs with more layers than one page of mount(2) options holds: the
 * new mount API takes the lower layers one at a time ("lowerdir+", Linux
 * 6.8), then the mount is attached at b. */
static int do_overlay(const struct iso_step *s)
{
    int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return -1;
    int rc = 0;
    char layer[4096];
    for (const char *p = s->d; rc == 0 && *p; ) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= sizeof layer) {
            errno = ENAMETOOLONG;
            rc = -1;
            break;
        }
        memcpy(layer, p, len);
        layer[len] = 0;
        rc = fs_set(fs, "lowerdir+", layer);
        p += len + (end ? 1 : 0);
    }
    if (rc == 0)
        rc = fs_set(fs, "upperdir", s->c);
    if (rc == 0)
        rc = fs_set(fs, "workdir", s->a);
    if (rc == 0)
        rc = (int)syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0);
    if (rc == 0)
        rc = (int)syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
    if (rc == 0) {
        int mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
        rc = mnt < 0 ? -1 : (int)syscall(SYS_move_mount, mnt, "", AT_FDCWD, s->b,
                                         MOVE_MOUNT_F_EMPTY_PATH);
        if (mnt >= 0)
            close_keep_errno(mnt, 0);
    }
    return close_keep_errno(fs, rc);
}

/* Bind sources are cloned into detached trees first, while every host path
 * is still where the caller sees it, and attached once the root is ready. */
static int do_open_tree(const struct iso_step *s, struct steps_state *st)
{
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, s->b,
                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0)
        return -1;
    st->slots[s->num] = fd;
    return 0;
}

static int do_tree_setattr(const struct iso_step *s, const struct steps_state *st)
{
    return iso_mount_setattr(st->slots[s->num], "", AT_EMPTY_PATH | AT_RECURSIVE, (unsigned)s->num2, 0);
}

static int do_move_mount(const struct iso_step *s, struct steps_state *st)
{
    int tree = st->slots[s->num];
    st->slots[s->num] = -1;
    int fd = open_path(st, s->b);
    int rc = fd < 0 ? -1 : (int)syscall(SYS_move_mount, tree, "", fd, "",
                                        MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
    if (fd >= 0)
        close_keep_errno(fd, 0);
    return close_keep_errno(tree, rc);
}

static int do_capbset_drop(const struct iso_step *s)
{
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];

    for (unsigned long cap = 0; cap <= s->num2; cap++) {
        if ((s->num >> cap) & 1UL)
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
                return -1;
    }
    /* Nothing may come back through exec but what the bounding set keeps:
     * no inheritable or ambient capabilities (the CVE-2022-27650 class). */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -1;
    if (syscall(SYS_capget, &header, data) < 0)
        return -1;
    data[0].inheritable = data[1].inheritable = 0;
    return (int)syscall(SYS_capset, &header, data);
}

static int do_pivot(struct steps_state *st)
{
    /* pivot_root(".", ".") stacks the old root under the new one; detaching
     * "." then drops the old root without needing a directory for it. */
    if (fchdir(st->root_fd) < 0)
        return -1;
    close(st->root_fd);
    st->root_fd = -1;
    if (iso_pivot_root(".", ".") < 0)
        return -1;
    if (umount2(".", MNT_DETACH) < 0)
        return -1;
    return chdir("/");
}

static int do_loopback_up(void)
{
    struct ifreq ifr;
    int rc = -1, sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        rc = ioctl(sock, SIOCSIFFLAGS, &ifr);
    }
    int saved = errno;
    close(sock);
    errno = saved;
    return rc;
}

/* Close [lo, hi] (hi may be ~0U). */
static int close_span(unsigned lo, unsigned hi)
{
    if (lo > hi)
        return 0;
    if (syscall(SYS_close_range, lo, hi, 0U) == 0)
        return 0;
    if (errno != ENOSYS)
        return -1;
    /* Kernels before 5.9: walk the descriptor table by hand. */
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = lo; fd < max && (unsigned long)fd <= hi; fd++)
        close((int)fd);
    return 0;
}

/* Nothing of the caller's may stay open while the workload resolves its
 * cwd and executable, let alone after exec: a descriptor of a host
 * directory would be a way out through /proc/self/fd (the runc
 * CVE-2024-21626 class).  Closing (not just close-on-exec) does it now. */
static int do_close_fds(const struct iso_plan *plan, int report_fd)
{
    unsigned next = 3;
    int kept = 0;
    for (int i = 0; i <= plan->nkeep_fds; i++) {
        /* The report pipe (close-on-exec) is kept in the same ascending walk. */
        int fd = i < plan->nkeep_fds ? plan->keep_fds[i] : -1;
        if (!kept && report_fd >= 3 && (fd < 0 || report_fd < fd)) {
            if (close_span(next, (unsigned)report_fd - 1) < 0)
                return -1;
            next = (unsigned)report_fd + 1;
            kept = 1;
        }
        if (fd < 0)
            break;
        if (close_span(next, (unsigned)fd - 1) < 0 || fcntl(fd, F_SETFD, 0) < 0)
            return -1;
        next = (unsigned)fd + 1;
    }
    return close_span(next, ~0U);
}

/* chdir inside our root: "..", absolute symlinks stay in it, and magic
 * links (/proc/self/fd/N, /proc/1/cwd) are refused. */
static int do_chdir(const char *path)
{
    struct open_how how = {
        .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    int root = open("/", O_PATH | O_CLOEXEC);
    if (root < 0)
        return -1;
    int fd = (int)syscall(SYS_openat2, root, path, &how, sizeof how);
    close_keep_errno(root, 0);
    if (fd < 0)
        return -1;
    return close_keep_errno(fd, fchdir(fd));
}

static int do_reset_signals(void)
{
    struct sigaction dfl;
    sigset_t none;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);   /* fails harmlessly for KILL/STOP and gaps */
    sigemptyset(&none);
    return sigprocmask(SIG_SETMASK, &none, NULL);
}

static int do_setrlimit(const struct iso_step *s)
{
    struct rlimit limit = { (rlim_t)s->num2, (rlim_t)s->num3 };
    return setrlimit((int)s->num, &limit);
}

/* Installed last, or as late as the filter allows (see _compile.py), so
 * that it judges the workload's calls rather than ours. */
static int do_seccomp(const struct iso_plan *plan)
{
    struct sock_fprog prog = {
        .len = plan->seccomp_len,
        .filter = (struct sock_filter *)plan->seccomp_filter,
    };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static int do_exec(const struct iso_plan *plan)
{
    /* Like execvp: go on past ENOENT-like errors, remember EACCES. */
    int seen_eacces = 0;
    for (char *const *path = plan->exec_paths; *path; path++) {
        execve(*path, plan->argv, plan->envp);
        if (errno == EACCES)
            seen_eacces = 1;
        else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP)
            return -1;
    }
    errno = seen_eacces ? EACCES : ENOENT;
    return -1;
}

/* Execute one step; returns 0, or -1 with errno set. */
/* Send fd over the unix socket sock (SCM_RIGHTS, with one byte of data). */
static int send_fd(int sock, int fd)
{
    char byte = 0;
    struct iovec iov = { &byte, 1 };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    memset(control.buf, 0, sizeof control.buf);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -1;
}

/* The container's terminal.  The pair comes from the container's own
 * /dev/ptmx (its devpts instance, where it has one), so nothing the
 * workload does to it (TIOCSTI included) reaches the caller's terminal.
 * The slave is opened through the master (TIOCGPTPEER), not by a path the
 * container could have swapped.  A process that is already a session
 * leader (new_session) keeps its session: setsid() would fail. */
static int do_pty(const struct iso_step *s)
{
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        return -1;
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        return close_keep_errno(master, -1);
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0)
        return close_keep_errno(master, -1);
    if (send_fd((int)s->num, master) < 0) {
        close_keep_errno(master, -1);
        return close_keep_errno(slave, -1);
    }
    close(master);
    if ((setsid() < 0 && getsid(0) != getpid()) || ioctl(slave, TIOCSCTTY, 0) < 0)
        return close_keep_errno(slave, -1);
    for (int fd = 0; fd < 3; fd++) {
        if (dup2(slave, fd) < 0)
            return close_keep_errno(slave, -1);
    }
    return slave > 2 ? close(slave) : 0;
}

static int run_step(const struct iso_plan *plan, const struct iso_step *s, struct steps_state *st,
                    int report_fd)
{
    switch (s->op) {
    case ISO_OP_OPEN_TREE:   return do_open_tree(s, st);
    case ISO_OP_TREE_SETATTR: return do_tree_setattr(s, st);
    case ISO_OP_MOVE_MOUNT:  return do_move_mount(s, st);
    case ISO_OP_CAPBSET_DROP: return do_capbset_drop(s);
    case ISO_OP_MOUNT:       return do_mount(s, st);
    case ISO_OP_OVERLAY:     return do_overlay(s);
    case ISO_OP_NO_NEW_PRIVS: return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    case ISO_OP_SETATTR:     return do_setattr(s, st);
    case ISO_OP_MKDIR:       return do_mkdir(s, st);
    case ISO_OP_MKFILE:      return do_mkfile(s, st);
    case ISO_OP_SYMLINK:     return do_symlink(s, st);
    case ISO_OP_OPEN_ROOT:   return do_open_root(s, st);
    case ISO_OP_MASK:        return do_mask(s, st);
    case ISO_OP_READONLY:    return do_readonly(s, st);
    case ISO_OP_PIVOT:       return do_pivot(st);
    case ISO_OP_SETHOSTNAME: return sethostname(s->a, strlen(s->a));
    case ISO_OP_LOOPBACK_UP: return do_loopback_up();
    case ISO_OP_SETSID:      return setsid() < 0 ? -1 : 0;
    case ISO_OP_SETGROUPS:   return setgroups(0, NULL);
    case ISO_OP_SETGID:      return setresgid((gid_t)s->num, (gid_t)s->num, (gid_t)s->num);
    case ISO_OP_SETUID:      return setresuid((uid_t)s->num, (uid_t)s->num, (uid_t)s->num);
    case ISO_OP_PDEATHSIG:   return prctl(PR_SET_PDEATHSIG, s->num, 0, 0, 0);
    case ISO_OP_CHDIR:       return do_chdir(s->b);
    case ISO_OP_DUP2:        return dup2((int)s->num, (int)s->num2) < 0 ? -1 : 0;
    case ISO_OP_CLOSE_FDS:   return do_close_fds(plan, report_fd);
    case ISO_OP_RESET_SIGNALS: return do_reset_signals();
    case ISO_OP_SETRLIMIT:   return do_setrlimit(s);
    case ISO_OP_SECCOMP:     return do_seccomp(plan);
    case ISO_OP_UNSHARE:     return unshare((int)s->num);
    case ISO_OP_SETNS:       return setns((int)s->num, (int)s->num2);
    case ISO_OP_EXEC:        return do_exec(plan);
    case ISO_OP_PTY:         return do_pty(s);
    }
    errno = EINVAL;
    return -1;
}

void iso_run_steps(struct iso_child *child, int first)
{
    const struct iso_plan *plan = child->plan;
    struct steps_state st = { .root_fd = -1 };
    for (int i = first; i < plan->nsteps; i++) {
        const struct iso_step *s = &plan->steps[i];
        if (s->op == ISO_OP_FORK_WORKLOAD)
            iso_start_workload(child, i + 1);
        if (s->op == ISO_OP_CLONE_CHILD)
            iso_clone_child(child, i + 1);
        int rc = s->op == ISO_OP_JOIN_CGROUP
                 ? iso_join_cgroups(child->cgroup_fds, child->ncgroup_fds, 0)
                 : run_step(plan, s, &st, child->report_fd);
        if (rc < 0) {
            child->failed_step = i;
            child->failed_err = errno;
            iso_report(child->report_fd, ISO_REPORT_ERROR, i, errno, 0);
            return;
        }
    }
    /* A plan always ends in ISO_OP_EXEC, which only returns on failure. */
    iso_report(child->report_fd, ISO_REPORT_ERROR, plan->nsteps, EINVAL, 0);
}

static void close_parent_fds(struct iso_child *child);

int iso_join_cgroups(const int *fds, int n, int pid)
{
    /* Digits by hand: snprintf is not async-signal-safe. */
    char text[16];
    char *end = text + sizeof text, *p = end;
    unsigned value = (unsigned)pid;
    do {
        *--p = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    ssize_t len = end - p;
    for (int i = 0; i < n; i++) {
        ssize_t w = write(fds[i], p, (size_t)len);
        if (w != len) {
            if (w >= 0)
                errno = EIO;
            return -1;
        }
    }
    return 0;
}

int iso_child_main(void *arg)
{
    struct iso_child *child = arg;
    char go;
    ssize_t n;

    /* Our copies of the parent's ends: holding the sync pipe's write end
     * would keep us from ever seeing the parent give up. */
    close_parent_fds(child);
    if (child->plan->die_with_parent)
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* A joiner sharing the caller's memory waits (vfork) until we exec:
     * we tell the parent who we are. */
    if (child->plan->joiner && !child->plan->joiner_forks)
        iso_report(child->report_fd, ISO_REPORT_CHILD, 0, 0, child->child_pid);
    /* Wait for the parent to write our id maps.  EOF means it died before
     * PR_SET_PDEATHSIG could cover it, or gave up on us. */
    do {
        n = read(child->sync_fd, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) {
        iso_report(child->report_fd, ISO_REPORT_ERROR, ISO_STEP_SYNC, n < 0 ? errno : EPIPE, 0);
        _exit(127);
    }
    close(child->sync_fd);
    iso_run_steps(child, child->first_step);
    _exit(127);
}

static void close_parent_fds(struct iso_child *child)
{
    close(child->parent_fds[0]);
    close(child->parent_fds[1]);
}

void iso_clone_child(struct iso_child *child, int first)
{
    int forks = child->plan->joiner_forks;
    int flags = (int)child->plan->clone_flags | CLONE_VM | CLONE_PARENT | CLONE_PARENT_SETTID;
    /* Sharing the caller's memory, the child must be a vfork child: the
     * OOM killer passes over those, so a container at its memory limit
     * can never pick it, and with it the caller (it kills every process
     * using the victim's memory).  A forked joiner's memory is its own. */
    if (!forks)
        flags |= CLONE_VFORK;
    child->first_step = first;
    pid_t pid = clone(iso_child_main, child->child_stack, flags, child, &child->child_pid);
    if (forks)
        iso_report(child->report_fd, ISO_REPORT_CHILD, 0, pid < 0 ? errno : 0, pid);
    else if (pid < 0)
        iso_report(child->report_fd, ISO_REPORT_ERROR, first - 1, errno, 0);
    _exit(pid < 0 ? 126 : 0);
}

int iso_joiner_main(void *arg)
{
    struct iso_child *child = arg;
    close_parent_fds(child);
    iso_run_steps(child, 0);   /* returns only on failure: ISO_OP_CLONE_CHILD exits */
    _exit(127);
}
