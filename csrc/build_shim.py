"""cffi API-mode build of ``minirun._shim`` from shim.c; constants are taken from the C headers."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

# Constants Python reads from the kernel headers through the shim rather than as literals.
CONSTANTS = """
CLONE_NEWNS CLONE_NEWUTS CLONE_NEWIPC CLONE_NEWNET CLONE_NEWPID CLONE_NEWCGROUP CLONE_NEWUSER
CLONE_NEWTIME
MS_RDONLY MS_NOSUID MS_NODEV MS_NOEXEC MS_SYNCHRONOUS MS_REMOUNT MS_MANDLOCK MS_DIRSYNC
MS_NOSYMFOLLOW MS_NOATIME MS_NODIRATIME MS_BIND MS_MOVE MS_REC MS_SILENT MS_UNBINDABLE MS_PRIVATE
MS_SLAVE MS_SHARED MS_RELATIME MS_I_VERSION MS_STRICTATIME MS_LAZYTIME
MNT_DETACH MNT_FORCE UMOUNT_NOFOLLOW
RESOLVE_NO_XDEV RESOLVE_NO_MAGICLINKS RESOLVE_NO_SYMLINKS RESOLVE_BENEATH RESOLVE_IN_ROOT
CLOSE_RANGE_CLOEXEC
PR_SET_KEEPCAPS PR_CAPBSET_DROP PR_CAP_AMBIENT PR_CAP_AMBIENT_RAISE PR_CAP_AMBIENT_CLEAR_ALL
PR_SET_NO_NEW_PRIVS PR_SET_DUMPABLE PR_SET_CHILD_SUBREAPER PR_SET_PDEATHSIG
PROC_SUPER_MAGIC RAMFS_MAGIC TMPFS_MAGIC NSFS_MAGIC NS_GET_NSTYPE
SIOCGIFFLAGS SIOCSIFFLAGS IFF_UP
CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID CAP_SETUID
CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW
CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT
CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD
CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG
CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE
BPF_PROG_LOAD BPF_PROG_ATTACH BPF_PROG_DETACH BPF_PROG_QUERY BPF_PROG_GET_FD_BY_ID BPF_OBJ_GET_INFO_BY_FD
BPF_PROG_TYPE_CGROUP_DEVICE BPF_CGROUP_DEVICE BPF_F_ALLOW_MULTI BPF_OBJ_NAME_LEN
BPF_DEVCG_ACC_MKNOD BPF_DEVCG_ACC_READ BPF_DEVCG_ACC_WRITE BPF_DEVCG_DEV_BLOCK BPF_DEVCG_DEV_CHAR
BPF_LDX BPF_ALU BPF_JMP BPF_JMP32 BPF_ALU64 BPF_W BPF_MEM BPF_K BPF_X
BPF_AND BPF_RSH BPF_MOV BPF_JA BPF_JEQ BPF_JNE BPF_JSET BPF_EXIT
OPEN_TREE_CLONE OPEN_TREE_CLOEXEC MOUNT_ATTR_IDMAP MOVE_MOUNT_F_EMPTY_PATH MOVE_MOUNT_T_EMPTY_PATH
AT_RECURSIVE AT_EMPTY_PATH AT_FDCWD
PER_LINUX PER_LINUX32
SCHED_OTHER SCHED_BATCH SCHED_IDLE SCHED_FIFO SCHED_RR SCHED_DEADLINE
SCHED_FLAG_RESET_ON_FORK SCHED_FLAG_RECLAIM SCHED_FLAG_DL_OVERRUN SCHED_FLAG_KEEP_POLICY
SCHED_FLAG_KEEP_PARAMS SCHED_FLAG_UTIL_CLAMP_MIN SCHED_FLAG_UTIL_CLAMP_MAX
IOPRIO_CLASS_RT IOPRIO_CLASS_BE IOPRIO_CLASS_IDLE IOPRIO_CLASS_SHIFT IOPRIO_WHO_PROCESS
MPOL_DEFAULT MPOL_PREFERRED MPOL_BIND MPOL_INTERLEAVE MPOL_LOCAL MPOL_PREFERRED_MANY
MPOL_F_STATIC_NODES MPOL_F_RELATIVE_NODES MPOL_F_NUMA_BALANCING
SCMP_ACT_KILL SCMP_ACT_KILL_PROCESS SCMP_ACT_KILL_THREAD SCMP_ACT_TRAP SCMP_ACT_NOTIFY SCMP_ACT_LOG
SCMP_ACT_ALLOW
SCMP_CMP_NE SCMP_CMP_LT SCMP_CMP_LE SCMP_CMP_EQ SCMP_CMP_GE SCMP_CMP_GT SCMP_CMP_MASKED_EQ
SCMP_ARCH_X86 SCMP_ARCH_X86_64 SCMP_ARCH_X32 SCMP_ARCH_ARM SCMP_ARCH_AARCH64 SCMP_ARCH_MIPS
SCMP_ARCH_MIPS64 SCMP_ARCH_MIPS64N32 SCMP_ARCH_MIPSEL SCMP_ARCH_MIPSEL64 SCMP_ARCH_MIPSEL64N32
SCMP_ARCH_PPC SCMP_ARCH_PPC64 SCMP_ARCH_PPC64LE SCMP_ARCH_S390 SCMP_ARCH_S390X SCMP_ARCH_PARISC
SCMP_ARCH_PARISC64 SCMP_ARCH_RISCV64
SCMP_FLTATR_CTL_NNP SCMP_FLTATR_CTL_TSYNC SCMP_FLTATR_CTL_LOG SCMP_FLTATR_CTL_SSB SCMP_FLTATR_API_SYSRAWRC
__NR_SCMP_ERROR SECCOMP_IOCTL_NOTIF_RECV SECCOMP_IOCTL_NOTIF_SEND
TIOCSPTLCK TIOCGPTN TIOCGPTPEER
"""

# libseccomp, declared here rather than in shim.h: these are the library's own functions (which
# already return -errno), plus two helpers for its function-like action macros.
SECCOMP_CDEF = """
typedef void *scmp_filter_ctx;
enum scmp_compare { ... };
struct scmp_arg_cmp { unsigned int arg; enum scmp_compare op; uint64_t datum_a; uint64_t datum_b; };
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg_cnt,
                           const struct scmp_arg_cmp *arg_array);
int seccomp_load(const scmp_filter_ctx ctx);
int seccomp_notify_fd(const scmp_filter_ctx ctx);
uint32_t mr_scmp_act_errno(uint32_t err);
uint32_t mr_scmp_act_trace(uint32_t msg);
"""

CDEF = (
    Path(HERE / "shim.h").read_text().split("#include <stdint.h>", 1)[1].rsplit("#endif", 1)[0]
    + "".join(f"#define {name} ...\n" for name in CONSTANTS.split())
    + SECCOMP_CDEF
)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "minirun._shim",
    """
#include "shim.h"
#include <sched.h>
#include <sys/mount.h>
#include <linux/mount.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <linux/openat2.h>
#include <linux/close_range.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <linux/bpf.h>
#include <sys/personality.h>
#include <linux/sched.h>
#include <linux/ioprio.h>
#include <linux/mempolicy.h>
#include <seccomp.h>
static uint32_t mr_scmp_act_errno(uint32_t err) { return SCMP_ACT_ERRNO(err); }
static uint32_t mr_scmp_act_trace(uint32_t msg) { return SCMP_ACT_TRACE(msg); }
""",
    sources=["csrc/shim.c"],
    libraries=["seccomp"],
    include_dirs=["csrc"],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
