#define _GNU_SOURCE
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* glibc wrappers set errno and return -1; turn that into -errno so Python sees one convention. */
static int ret(long r) { return r < 0 ? -errno : (int)r; }

int mr_unshare(int flags) { return ret(unshare(flags)); }
int mr_setns(int fd, int nstype) { return ret(setns(fd, nstype)); }
int mr_pivot_root(const char *new_root, const char *put_old)
{
    return ret(syscall(SYS_pivot_root, new_root, put_old));
}
int mr_mount(const char *source, const char *target, const char *fstype, unsigned long flags,
             const char *data)
{
    return ret(mount(source, target, fstype, flags, data));
}
int mr_umount2(const char *target, int flags) { return ret(umount2(target, flags)); }

int mr_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve)
{
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    return ret(syscall(SYS_openat2, dirfd, path, &how, sizeof(how)));
}

int mr_setdomainname(const char *name, size_t len) { return ret(setdomainname(name, len)); }

int mr_close_range(unsigned int first, unsigned int last, unsigned int flags)
{
    return ret(syscall(SYS_close_range, first, last, flags));
}

int mr_capget(uint32_t effective[2], uint32_t permitted[2], uint32_t inheritable[2])
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        effective[i] = data[i].effective;
        permitted[i] = data[i].permitted;
        inheritable[i] = data[i].inheritable;
    }
    return 0;
}

int mr_capset(const uint32_t effective[2], const uint32_t permitted[2], const uint32_t inheritable[2])
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    for (int i = 0; i < 2; i++) {
        data[i].effective = effective[i];
        data[i].permitted = permitted[i];
        data[i].inheritable = inheritable[i];
    }
    return ret(syscall(SYS_capset, &hdr, data));
}

int mr_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)
{
    return ret(prctl(option, a2, a3, a4, a5));
}

int mr_statfs_type(int fd, int64_t *fstype)
{
    struct statfs st;
    if (fstatfs(fd, &st) < 0)
        return -errno;
    *fstype = (int64_t)st.f_type;
    return 0;
}

int mr_bpf(int cmd, void *attr, unsigned int size) { return ret(syscall(SYS_bpf, cmd, attr, size)); }

/* Our own copy of the kernel's struct sched_attr (SCHED_ATTR_SIZE_VER1): glibc 2.36 has no wrapper and
 * <linux/sched/types.h> clashes with newer glibc headers. */
struct mr_sched_attr {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};

int mr_sched_setattr(uint32_t policy, uint64_t flags, int32_t nice, uint32_t priority, uint64_t runtime,
                     uint64_t deadline, uint64_t period)
{
    struct mr_sched_attr attr = {
        .size = sizeof(attr), .sched_policy = policy, .sched_flags = flags, .sched_nice = nice,
        .sched_priority = priority, .sched_runtime = runtime, .sched_deadline = deadline,
        .sched_period = period, .sched_util_min = 0, .sched_util_max = 1024,
    };
    return ret(syscall(SYS_sched_setattr, 0, &attr, 0));
}

int mr_ioprio_set(int which, int who, int ioprio) { return ret(syscall(SYS_ioprio_set, which, who, ioprio)); }

int mr_personality(unsigned long persona)
{
    /* personality() returns the previous persona, never -1 on success: only errno tells failure. */
    errno = 0;
    int r = personality(persona);
    return r == -1 && errno ? -errno : 0;
}

int mr_set_mempolicy(int mode, const unsigned long *nodemask, unsigned long maxnode)
{
    return ret(syscall(SYS_set_mempolicy, mode, nodemask, maxnode));
}

int mr_open_tree(int dirfd, const char *path, unsigned int flags)
{
    return ret(syscall(SYS_open_tree, dirfd, path, flags));
}

int mr_mount_setattr(int dirfd, const char *path, unsigned int flags, uint64_t attr_set, uint64_t attr_clr,
                     uint64_t propagation, uint64_t userns_fd)
{
    struct mount_attr attr = {
        .attr_set = attr_set, .attr_clr = attr_clr, .propagation = propagation, .userns_fd = userns_fd,
    };
    return ret(syscall(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof(attr)));
}

int mr_move_mount(int from_dirfd, const char *from_path, int to_dirfd, const char *to_path, unsigned int flags)
{
    return ret(syscall(SYS_move_mount, from_dirfd, from_path, to_dirfd, to_path, flags));
}
