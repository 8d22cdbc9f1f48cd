"""Namespaces: new ones by unshare, existing ones joined by path with setns."""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from minirun.errors import kernel_error
from minirun.linux import syscalls
from minirun.spec.model import Namespace

CLONE_FLAG = {
    "pid": "CLONE_NEWPID", "network": "CLONE_NEWNET", "mount": "CLONE_NEWNS", "ipc": "CLONE_NEWIPC",
    "uts": "CLONE_NEWUTS", "user": "CLONE_NEWUSER", "cgroup": "CLONE_NEWCGROUP", "time": "CLONE_NEWTIME",
}
# The name of each namespace under /proc/PID/ns.
PROC_NAME = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
             "cgroup": "cgroup", "time": "time"}
# Joining the mount namespace changes root and cwd, so it goes after every other path was opened.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def flag(ns_type: str) -> int:
    return syscalls.const(CLONE_FLAG[ns_type])


def check_namespace_file(path: str, ns_type: str) -> str | None:
    """None when `path` is a namespace of `ns_type`, else what is wrong with it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return f"`{path}`: {os.strerror(e.errno or 0).lower()}"
    try:
        if syscalls.fs_type(fd) != syscalls.const("NSFS_MAGIC"):
            return f"`{path}` is not a namespace file"
        actual = fcntl.ioctl(fd, syscalls.const("NS_GET_NSTYPE"))
        if actual != flag(ns_type):
            kind = next((k for k in CLONE_FLAG if flag(k) == actual), "other")
            return f"`{path}` is a {kind} namespace, not a {ns_type} namespace"
        return None
    finally:
        os.close(fd)


def unshare_flags(namespaces: list[Namespace]) -> int:
    flags = 0
    for ns in namespaces:
        if not ns.path:
            flags |= flag(ns.type)
    return flags


def open_joined(namespaces: list[Namespace]) -> list[tuple[Namespace, int]]:
    """Open every namespace to join up front: after joining a mount namespace the paths may be gone."""
    fds = []
    for ns_type in JOIN_ORDER:
        ns = next((n for n in namespaces if n.type == ns_type and n.path), None)
        if ns is not None:
            try:
                fds.append((ns, os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise kernel_error(f"open namespace `{ns.path}`", e) from None
    return fds


def join(opened: list[tuple[Namespace, int]]) -> None:
    for ns, fd in opened:
        syscalls.setns(fd, flag(ns.type), ns.path)
        os.close(fd)


def bring_up_loopback() -> None:
    """A new network namespace starts with `lo` down; containers expect 127.0.0.1 to work."""
    iff_up = syscalls.const("IFF_UP")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh14x", b"lo", 0)
        current = struct.unpack("16sh14x", fcntl.ioctl(s, syscalls.const("SIOCGIFFLAGS"), ifreq))[1]
        try:
            fcntl.ioctl(s, syscalls.const("SIOCSIFFLAGS"), struct.pack("16sh14x", b"lo", current | iff_up))
        except OSError as e:
            raise kernel_error("bring up `lo`", e) from None
