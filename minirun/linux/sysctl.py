"""linux.sysctl: write namespaced kernel parameters through /proc/sys."""

from __future__ import annotations

import os

from minirun.errors import KernelError, MinirunError
from minirun.linux import syscalls

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.spec.extras import Sysctl


def apply(sysctls: list[Sysctl]) -> None:
    """Write each sysctl; runs in the init after its namespaces exist and before pivot_root.

    /proc here is still the host's procfs, and that is right: the net, ipc and uts entries under
    /proc/sys are not tied to the procfs mount but to the namespaces of the process that opens (net) or
    writes (ipc, uts) them, which are the container's. Spec parsing allowed only such keys, so nothing
    here can change the host.
    """
    if not sysctls:
        return
    try:
        root = os.open("/proc/sys", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise KernelError("open `/proc/sys`", e.errno or 0) from None
    try:
        if syscalls.fs_type(root) != syscalls.const("PROC_SUPER_MAGIC"):
            raise MinirunError("linux.sysctl: `/proc/sys` is not on procfs")
        # Every component below /proc/sys, no symlink, no `..`, no other mount: the key cannot point
        # at anything but the sysctl it names.
        resolve = (syscalls.const("RESOLVE_BENEATH") | syscalls.const("RESOLVE_NO_SYMLINKS")
                   | syscalls.const("RESOLVE_NO_MAGICLINKS") | syscalls.const("RESOLVE_NO_XDEV"))
        for s in sysctls:
            _write(root, s, resolve)
    finally:
        os.close(root)


def _write(root: int, s: Sysctl, resolve: int) -> None:
    rel = "/".join(s.parts)
    try:
        fd = syscalls.openat2(root, rel, os.O_WRONLY, resolve)
    except KernelError as e:
        raise KernelError(f'linux.sysctl."{s.key}": open `/proc/sys/{rel}`', e.errno) from None
    try:
        os.write(fd, s.value.encode())
    except OSError as e:
        raise KernelError(f'linux.sysctl."{s.key}": write "{s.value}"', e.errno or 0) from None
    finally:
        os.close(fd)
