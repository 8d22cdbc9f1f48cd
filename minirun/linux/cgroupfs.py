"""A `cgroup`/`cgroup2` mount inside the container, showing the container's own hierarchy.

With a cgroup namespace a fresh mount of each hierarchy is already rooted at the container's cgroup.
Without one, a fresh mount would show the host's whole tree, so the container's own cgroup directory
is bound instead (what runc does too). On a v1 or hybrid host `/sys/fs/cgroup` is a tmpfs holding one
directory per hierarchy, as on the host.
"""

from __future__ import annotations

import errno
import os

from minirun.errors import KernelError
from minirun.linux import syscalls
from minirun.linux.mountopts import MountOptions
from minirun.linux.paths import fd_path, mkdir_all, open_in_root
from minirun.spec.model import Mount


class Hierarchy:
    __slots__ = ("controllers", "fstype", "mount_point")

    def __init__(self, mount_point: str, fstype: str, controllers: str) -> None:
        self.mount_point = mount_point  # on the host, e.g. /sys/fs/cgroup/memory
        self.fstype = fstype  # cgroup or cgroup2
        self.controllers = controllers  # v1 mount data such as "memory" or "name=systemd"; "" for cgroup2


def host_hierarchies() -> list[Hierarchy]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, super_opts = fields[sep + 1], fields[sep + 3]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            controllers = ",".join(o for o in super_opts.split(",") if o not in ("rw", "ro")
                                   and (o.startswith("name=") or "=" not in o))
            found.append(Hierarchy(fields[4], fstype, controllers if fstype == "cgroup" else ""))
    return found


def own_cgroup(h: Hierarchy) -> str:
    """This process's cgroup path within hierarchy `h`, from /proc/self/cgroup."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if (h.fstype == "cgroup2" and ctrls == "") or (h.fstype == "cgroup" and ctrls == h.controllers):
                return path
    return "/"


def _mount_hierarchy(root_fd: int, h: Hierarchy, destination: str, flags: int, cgroupns: bool) -> None:
    target = mkdir_all(root_fd, destination)
    try:
        if cgroupns:
            syscalls.mount(h.fstype, fd_path(target), h.fstype, flags, h.controllers or None,
                           what=f"mount `{h.fstype}` ({h.controllers or 'unified'}) on `{destination}`")
        else:
            source = h.mount_point + own_cgroup(h)
            syscalls.mount(source, fd_path(target), None, syscalls.const("MS_BIND"), None,
                           what=f"bind `{source}` on `{destination}`")
            _remount(root_fd, destination, flags)
    finally:
        os.close(target)


def _remount(root_fd: int, destination: str, flags: int) -> None:
    fd = open_in_root(root_fd, destination)
    try:
        syscalls.mount(None, fd_path(fd), None, syscalls.const("MS_BIND") | syscalls.const("MS_REMOUNT") | flags,
                       None, what=f"remount `{destination}`")
    finally:
        os.close(fd)


def mount_cgroups(root_fd: int, m: Mount, opts: MountOptions, cgroupns: bool) -> None:
    hierarchies = host_hierarchies()
    unified = [h for h in hierarchies if h.fstype == "cgroup2" and h.mount_point == "/sys/fs/cgroup"]
    if m.type == "cgroup2" or unified:
        h = unified[0] if unified else next((h for h in hierarchies if h.fstype == "cgroup2"), None)
        if h is None:
            raise KernelError(f"mount `cgroup2` on `{m.destination}` (the host has no cgroup2 mount)", errno.ENOENT)
        _mount_hierarchy(root_fd, h, m.destination, opts.flags, cgroupns)
        return
    # v1 or hybrid: a tmpfs with one directory per hierarchy; read-only only after they are in.
    target = mkdir_all(root_fd, m.destination)
    try:
        syscalls.mount("tmpfs", fd_path(target), "tmpfs", opts.flags & ~syscalls.const("MS_RDONLY"), "mode=755",
                       what=f"mount `tmpfs` on `{m.destination}`")
    finally:
        os.close(target)
    for h in hierarchies:
        name = os.path.basename(h.mount_point)
        _mount_hierarchy(root_fd, h, f"{m.destination}/{name}", opts.flags, cgroupns)
    if opts.flags & syscalls.const("MS_RDONLY"):
        _remount(root_fd, m.destination, opts.flags)
