"""Resolve and create paths inside a container's rootfs without ever leaving it.

Every lookup goes through openat2(RESOLVE_IN_ROOT): the kernel treats the rootfs as "/" for `..` and
absolute symlinks, so a symlinked mount destination such as `/etc -> /../../host/etc` stays inside the
rootfs (runc's symlink-exchange breakouts). Callers mount onto the returned O_PATH fd through
/proc/self/fd/N, so what was resolved is what gets mounted on, even if the path is swapped later.
"""

from __future__ import annotations

import errno
import os

from minirun.errors import KernelError
from minirun.linux import syscalls


def _resolve_flags(no_symlinks: bool) -> int:
    flags = syscalls.const("RESOLVE_IN_ROOT") | syscalls.const("RESOLVE_NO_MAGICLINKS")
    return flags | syscalls.const("RESOLVE_NO_SYMLINKS") if no_symlinks else flags


def fd_path(fd: int) -> str:
    """A path naming what `fd` refers to; valid only while the host's /proc is mounted at /proc."""
    return f"/proc/self/fd/{fd}"


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, no_symlinks: bool = False) -> int:
    return syscalls.openat2(root_fd, path.lstrip("/") or ".", flags, _resolve_flags(no_symlinks),
                            what=f"open `{path}` in the container")


def mkdir_all(root_fd: int, path: str, mode: int = 0o755) -> int:
    """Create every missing directory of `path` inside the rootfs; an O_PATH fd of the last one."""
    parts = [p for p in path.split("/") if p and p != "."]
    fd = open_in_root(root_fd, "/", os.O_PATH | os.O_DIRECTORY)
    for i, name in enumerate(parts):
        prefix = "/" + "/".join(parts[: i + 1])
        try:
            nxt = open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY)
        except KernelError as e:
            if e.errno != errno.ENOENT:
                os.close(fd)
                raise
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except FileExistsError:
                os.close(fd)
                raise KernelError(f"create directory `{prefix}` in the container (a dangling symlink?)",
                                  errno.EEXIST) from None
            except OSError as e2:
                os.close(fd)
                raise KernelError(f"create directory `{prefix}` in the container", e2.errno or 0) from None
            nxt = open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY)
        os.close(fd)
        fd = nxt
    return fd


def make_file(root_fd: int, path: str, mode: int = 0o644) -> int:
    """An O_PATH fd of the file at `path`, creating it (and its parents) empty when missing."""
    try:
        return open_in_root(root_fd, path)
    except KernelError as e:
        if e.errno != errno.ENOENT:
            raise
    parent = mkdir_all(root_fd, os.path.dirname(path))
    try:
        os.close(os.open(os.path.basename(path), os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode, dir_fd=parent))
    except FileExistsError:
        pass  # made by someone else meanwhile; resolving again below checks it
    except OSError as e:
        raise KernelError(f"create file `{path}` in the container", e.errno or 0) from None
    finally:
        os.close(parent)
    return open_in_root(root_fd, path)
