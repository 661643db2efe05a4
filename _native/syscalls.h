/* Thin wrappers for system calls that glibc lacks or names differently.
 * Each returns what the kernel returned (-1 with errno on failure).  They
 * only make the system call, so the cloned child may use them too. */
#ifndef ISOLATE_SYSCALLS_H
#define ISOLATE_SYSCALLS_H

/* The RESOLVE_* flags of iso_openat2, for its callers and the cffi module. */
#include <linux/openat2.h>
/* setfsuid and setfsgid, which the cffi module declares from libc. */
#include <sys/fsuid.h>

int iso_pivot_root(const char *new_root, const char *put_old);
int iso_mount_setattr(int dirfd, const char *path, unsigned int flags,
                      unsigned int attr_set, unsigned int attr_clr);
/* openat2(2) with a struct open_how built from its three fields. */
int iso_openat2(int dirfd, const char *path, unsigned long long flags,
                unsigned long long mode, unsigned long long resolve);

#endif
