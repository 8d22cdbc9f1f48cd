/* The kernel calls Python's os module lacks. Every function returns a value >= 0 on success or
 * -errno on failure; nothing here allocates or knows about Python. */
#ifndef MINIRUN_SHIM_H
#define MINIRUN_SHIM_H

#include <stddef.h>
#include <stdint.h>

int mr_unshare(int flags);
int mr_setns(int fd, int nstype);
int mr_pivot_root(const char *new_root, const char *put_old);
int mr_mount(const char *source, const char *target, const char *fstype, unsigned long flags,
             const char *data);
int mr_umount2(const char *target, int flags);
int mr_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
int mr_setdomainname(const char *name, size_t len);
int mr_close_range(unsigned int first, unsigned int last, unsigned int flags);
/* capget/capset on the calling thread, version 3 (two 32-bit words per set). */
int mr_capget(uint32_t effective[2], uint32_t permitted[2], uint32_t inheritable[2]);
int mr_capset(const uint32_t effective[2], const uint32_t permitted[2], const uint32_t inheritable[2]);
int mr_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
int mr_statfs_type(int fd, int64_t *fstype);
/* bpf(2): `attr` points at `size` bytes of union bpf_attr, laid out by the caller. */
int mr_bpf(int cmd, void *attr, unsigned int size);

#endif
