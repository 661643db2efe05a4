/* System calls without a glibc wrapper on every supported distribution. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "syscalls.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

int iso_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int iso_mount_setattr(int dirfd, const char *path, unsigned int flags,
                      unsigned int attr_set, unsigned int attr_clr)
{
    struct mount_attr attr = { .attr_set = attr_set, .attr_clr = attr_clr };
    return (int)syscall(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof attr);
}

int iso_openat2(int dirfd, const char *path, unsigned long long flags,
                unsigned long long mode, unsigned long long resolve)
{
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}
