/* Thin wrappers for system calls that glibc lacks or names differently.
 * Each returns what the kernel returned (-1 with errno on failure).  They
 * only make the system call, so the cloned child may use them too. */
#ifndef ISOLATE_SYSCALLS_H
#define ISOLATE_SYSCALLS_H

int iso_pivot_root(const char *new_root, const char *put_old);
int iso_mount_setattr(int dirfd, const char *path, unsigned int flags,
                      unsigned int attr_set, unsigned int attr_clr);

#endif
