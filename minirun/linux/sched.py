"""Per-process kernel settings the container's process inherits across exec: personality,
scheduling policy, I/O priority, CPU affinity and NUMA memory policy."""

from __future__ import annotations

import errno
import os

from minirun.errors import KernelError, MinirunError
from minirun.linux import syscalls

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.spec.extras import IoPriority, MemoryPolicy, Scheduler

BITS_PER_WORD = 64  # unsigned long on the 64-bit kernels minirun runs on


def _check(rc: int, operation: str) -> None:
    if rc < 0:
        raise KernelError(operation, -rc)


def set_personality(domain: str) -> None:
    """linux.personality: `LINUX32` makes uname(2) report i686 on x86-64, as `setarch` does."""
    if domain:
        _check(syscalls.shim().lib.mr_personality(syscalls.const(f"PER_{domain}")),
               f'linux.personality.domain: personality "{domain}"')


def set_scheduler(s: Scheduler | None) -> None:
    if s is None:
        return
    flags = 0
    for name in s.flags:
        flags |= syscalls.const(name)
    rc = syscalls.shim().lib.mr_sched_setattr(syscalls.const(s.policy), flags, s.nice, s.priority, s.runtime,
                                               s.deadline, s.period)
    if rc == -errno.EPERM and s.policy in ("SCHED_FIFO", "SCHED_RR"):
        # Root gets EPERM too when the cgroup v1 cpu controller grants the cgroup no realtime time.
        raise MinirunError(f"process.scheduler: sched_setattr {s.policy}: operation not permitted "
                           "(with cgroup v1, the container's cpu cgroup needs cpu.rt_runtime_us > 0)")
    _check(rc, f"process.scheduler: sched_setattr {s.policy}")


def set_io_priority(p: IoPriority | None) -> None:
    if p is None:
        return
    value = syscalls.const(p.ioclass) << syscalls.const("IOPRIO_CLASS_SHIFT") | p.priority
    rc = syscalls.shim().lib.mr_ioprio_set(syscalls.const("IOPRIO_WHO_PROCESS"), 0, value)
    _check(rc, f"process.ioPriority: ioprio_set {p.ioclass} {p.priority}")


def set_affinity(cpus: list[int], field: str, pid: int = 0) -> None:
    """An empty list leaves the affinity alone (the spec's "omitted or empty")."""
    if not cpus:
        return
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError as e:
        raise KernelError(f"{field}: sched_setaffinity", e.errno or 0) from None


def set_memory_policy(p: MemoryPolicy | None) -> None:
    if p is None:
        return
    mode = syscalls.const(p.mode)
    for name in p.flags:
        mode |= syscalls.const(name)
    ffi, lib = syscalls.shim().ffi, syscalls.shim().lib
    words = [0] * (max(p.nodes, default=0) // BITS_PER_WORD + 1)
    for node in p.nodes:
        words[node // BITS_PER_WORD] |= 1 << (node % BITS_PER_WORD)
    mask = ffi.new("unsigned long[]", words) if p.nodes else ffi.NULL
    # The kernel reads maxnode - 1 bits (a historical off-by-one every caller of set_mempolicy honours).
    maxnode = len(words) * BITS_PER_WORD + 1 if p.nodes else 0
    _check(lib.mr_set_mempolicy(mode, mask, maxnode), f"linux.memoryPolicy: set_mempolicy {p.mode}")
