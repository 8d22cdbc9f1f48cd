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
/* The new mount API, as raw syscall() calls (numbers from <sys/syscall.h>): id-mapped bind mounts are
 * a detached tree from open_tree(OPEN_TREE_CLONE), given MOUNT_ATTR_IDMAP, then moved into place. */
int mr_open_tree(int dirfd, const char *path, unsigned int flags);
/* mount_setattr(2) with a struct mount_attr made of these fields. */
int mr_mount_setattr(int dirfd, const char *path, unsigned int flags, uint64_t attr_set, uint64_t attr_clr,
                     uint64_t propagation, uint64_t userns_fd);
int mr_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned int flags);
/* sched_setattr(2) on the calling thread; flags are SCHED_FLAG_*. */
int mr_sched_setattr(uint32_t policy, uint64_t flags, int32_t nice, uint32_t priority, uint64_t runtime,
                     uint64_t deadline, uint64_t period);
int mr_ioprio_set(int which, int who, int ioprio);
int mr_personality(unsigned long persona);
/* set_mempolicy(2): `nodemask` holds `maxnode` bits in unsigned longs (NULL for none). */
int mr_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode);

#endif
