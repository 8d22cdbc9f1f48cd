#define _GNU_SOURCE
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/mount.h>
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
