"""User namespaces: writing a new one's maps, becoming its root, and id-mapped bind mounts.

The order of a container with a new user namespace (see process/init.py and process/create.py):
stage1 unshares CLONE_NEWUSER alone and says so; the runtime, root in the parent user namespace,
writes /proc/PID/uid_map and gid_map; stage1 becomes root inside (setresgid/setresuid 0) and only
then unshares the other namespaces, which the new user namespace therefore owns (sysfs, for one,
can only be mounted from a network namespace owned by the mounter's user namespace).

An id-mapped bind mount needs a user namespace carrying the mount's own mapping. The runtime makes
one with a short-lived helper process, and makes the mount itself (open_tree + mount_setattr) on the
host, before any fork: changing a tree's idmap needs CAP_SYS_ADMIN over the filesystem, which the
container's user namespace lacks. The container's init only moves the detached tree into place.
With a user namespace every bind source is taken that way, for the reason in prepare_bind_trees().
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import signal
from functools import cache

import prctl

from minirun.errors import ConfigError, KernelError, kernel_error
from minirun.linux import mountopts, syscalls
from minirun.spec.idmap import map_text
from minirun.spec.model import Config, IDMapping, Linux


def needs_new(linux: Linux) -> bool:
    ns = linux.namespace("user")
    return ns is not None and not ns.path


# --- the container's user namespace ------------------------------------------------------------------


def write_maps(pid: int, linux: Linux) -> None:
    """Write a new user namespace's maps from the parent side, as root in the parent user namespace.

    setgroups is left at "allow": user_namespaces(7) requires "deny" before gid_map only from a writer
    without CAP_SETGID in the parent namespace, which root has. Keeping it lets the container call
    setgroups() for process.user.additionalGids. Only if the kernel still refuses the gid map is
    "deny" written and the write retried.
    """
    _write_proc(pid, "uid_map", map_text(linux.uid_mappings), "linux.uidMappings")
    try:
        _write_proc(pid, "gid_map", map_text(linux.gid_mappings), "linux.gidMappings")
    except KernelError as e:
        if e.errno != errno.EPERM:
            raise
        _write_proc(pid, "setgroups", "deny", "linux.gidMappings")
        _write_proc(pid, "gid_map", map_text(linux.gid_mappings), "linux.gidMappings")


def _write_proc(pid: int, name: str, text: str, field: str) -> None:
    path = f"/proc/{pid}/{name}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())  # one write: the kernel takes a map only whole, and only once
        finally:
            os.close(fd)
    except OSError as e:
        raise kernel_error(f"write `{path}` ({field})", e) from None


def _maps_zero(path: str) -> bool:
    with open(path) as f:
        for line in f:
            inside, _, count = (int(x) for x in line.split())
            if inside <= 0 < inside + count:
                return True
    return False


def become_root() -> None:
    """In a new or joined user namespace: switch to its uid/gid 0 where they are mapped.

    Until then this process still has the host's ids, which are unmapped inside (they show as the
    overflow id); as 0 it owns what it creates in the container's tmpfs, devpts and so on. Changing
    ids resets the parent-death signal and may reset dumpability, so both are set again.

    From here on this process is an unprivileged host user to host files: its capabilities only
    count on inodes whose owner is mapped. A Python installed under a private directory (/root/.pyenv)
    is then out of reach, so what the child side loads lazily is loaded now: the codec that reads
    mountinfo's escapes (rootfs.mount_point_of) and the shim.
    """
    codecs.lookup("unicode_escape")
    syscalls.shim()
    if _maps_zero("/proc/self/gid_map"):
        try:
            os.setresgid(0, 0, 0)
        except OSError as e:
            raise kernel_error("setresgid 0 in the user namespace", e) from None
    if _maps_zero("/proc/self/uid_map"):
        try:
            os.setresuid(0, 0, 0)
        except OSError as e:
            raise kernel_error("setresuid 0 in the user namespace", e) from None
    prctl.set_dumpable(False)
    prctl.set_pdeathsig(signal.SIGKILL)


# --- the kernel calls of id-mapped mounts ------------------------------------------------------------


def open_tree(path: str, flags: int, what: str) -> int:
    rc = int(syscalls.shim().lib.mr_open_tree(syscalls.const("AT_FDCWD"), path.encode(), flags))
    if rc < 0:
        raise KernelError(what, -rc)
    return rc


def set_idmap(tree_fd: int, userns_fd: int, recursive: bool) -> int:
    """mount_setattr(MOUNT_ATTR_IDMAP) on a detached tree; 0 or -errno (the caller words the error)."""
    flags = syscalls.const("AT_EMPTY_PATH") | (syscalls.const("AT_RECURSIVE") if recursive else 0)
    return int(syscalls.shim().lib.mr_mount_setattr(tree_fd, b"", flags, syscalls.const("MOUNT_ATTR_IDMAP"),
                                                     0, 0, userns_fd))


def move_mount(tree_fd: int, target_fd: int, what: str) -> None:
    """Attach a detached tree onto an (O_PATH) file descriptor: no path is looked up again."""
    flags = syscalls.const("MOVE_MOUNT_F_EMPTY_PATH") | syscalls.const("MOVE_MOUNT_T_EMPTY_PATH")
    rc = int(syscalls.shim().lib.mr_move_mount(tree_fd, b"", target_fd, b"", flags))
    if rc < 0:
        raise KernelError(what, -rc)


@cache
def idmap_mounts_supported() -> bool:
    """Whether this kernel has mount_setattr(2) (5.12+), for `minirun features`. Whether a given
    filesystem can be id-mapped is only known when trying (tmpfs since 6.3, for one)."""
    rc = int(syscalls.shim().lib.mr_mount_setattr(-1, b"", 0, 0, 0, 0, 0))
    return rc != -errno.ENOSYS


# --- id-mapped bind mounts ---------------------------------------------------------------------------


def mapped_userns(uids: list[IDMapping], gids: list[IDMapping]) -> int:
    """An O_RDONLY fd of a fresh user namespace with these maps, held by a helper that is gone on return."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            syscalls.unshare(syscalls.const("CLONE_NEWUSER"))
            os.write(ready_w, b"1")
            os.read(done_r, 1)  # EOF when the runtime has opened our namespace (or died)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise KernelError("unshare a user namespace for an id-mapped mount", errno.EPERM)
        _write_proc(pid, "uid_map", map_text(uids), "uidMappings")
        _write_proc(pid, "gid_map", map_text(gids), "gidMappings")
        try:
            return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise kernel_error(f"open `/proc/{pid}/ns/user`", e) from None
    finally:
        os.close(ready_r)
        os.close(done_w)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def fstype_of(path: str) -> str:
    """The filesystem type of the mount holding `path`, from mountinfo (for error messages)."""
    best, fstype = "", "this filesystem"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                point = fields[4].encode().decode("unicode_escape")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, fstype = point, fields[fields.index("-") + 1]
    except OSError:
        pass
    return fstype


def prepare_bind_trees(config: Config) -> dict[int, int]:
    """Index in config.mounts -> fd of a detached copy of the bind mount's source, made on the host.

    For a mount with its own uid/gidMappings, id-mapped. With a user namespace, for every bind mount:
    the container's root is an unprivileged host user to host files, and could not even look up a
    source below a private directory (a bind from another mount namespace is refused, a detached tree
    is not). Made before the container's processes exist; a tree that is never attached disappears
    when its fd is closed, so a failed create leaves nothing mounted.
    """
    trees: dict[int, int] = {}
    namespaces: dict[tuple[str, str], int] = {}
    with_userns = config.linux.namespace("user") is not None
    try:
        for i, m in enumerate(config.mounts):
            opts = mountopts.parse(m.options)
            if not (opts.bind or m.type == "bind") or not (m.uid_mappings or with_userns):
                continue
            source = os.path.join(config.bundle, m.source) if m.source else ""
            if not source:
                raise ConfigError(f"mounts[{i}].source", "required for a bind mount")
            userns_fd = -1
            if m.uid_mappings:
                key = (map_text(m.uid_mappings), map_text(m.gid_mappings))
                if key not in namespaces:
                    namespaces[key] = mapped_userns(m.uid_mappings, m.gid_mappings)
                userns_fd = namespaces[key]
            trees[i] = _bind_tree(i, source, opts.recursive, userns_fd)
    except BaseException:
        for fd in trees.values():
            os.close(fd)
        raise
    finally:
        for fd in namespaces.values():
            os.close(fd)
    return trees


def _bind_tree(index: int, source: str, recursive: bool, userns_fd: int) -> int:
    """A detached copy of `source`, id-mapped with `userns_fd` unless that is -1."""
    flags = syscalls.const("OPEN_TREE_CLONE") | syscalls.const("OPEN_TREE_CLOEXEC")
    if recursive:
        flags |= syscalls.const("AT_RECURSIVE")
    try:
        tree = open_tree(source, flags, f"open_tree `{source}` (mounts[{index}])")
    except KernelError as e:
        if e.errno == errno.ENOENT:
            raise ConfigError(f"mounts[{index}].source", f"`{source}`: {os.strerror(e.errno).lower()}") from None
        raise
    rc = set_idmap(tree, userns_fd, recursive) if userns_fd >= 0 else 0
    if rc < 0:
        os.close(tree)
        field = f"mounts[{index}].uidMappings"
        if rc == -errno.ENOSYS:
            raise KernelError(f"{field}: id-mapped mounts are not supported by this kernel: mount_setattr", -rc)
        if rc in (-errno.EINVAL, -errno.EOPNOTSUPP):
            raise KernelError(f"{field}: id-mapped mounts are not supported by {fstype_of(os.path.realpath(source))} "
                              f"on this kernel: mount_setattr `{source}`", -rc)
        raise KernelError(f"{field}: mount_setattr `{source}`", -rc)
    return tree
