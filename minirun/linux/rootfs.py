"""The container's filesystem view: mounts in order, masked and read-only paths, then pivot_root.

Everything that mounts runs before pivot_root, while /proc is still the host's procfs: the
/proc/self/fd/N paths used as mount targets then go through a procfs the container cannot fake.
"""

from __future__ import annotations

import errno
import os
import stat

from minirun.errors import ConfigError, KernelError, kernel_error
from minirun.linux import cgroupfs, mountopts, syscalls, userns
from minirun.linux.paths import fd_path, make_file, mkdir_all, open_in_root
from minirun.spec.model import Config, Mount

_ST_TO_MS = {"ST_RDONLY": "MS_RDONLY", "ST_NOSUID": "MS_NOSUID", "ST_NODEV": "MS_NODEV",
             "ST_NOEXEC": "MS_NOEXEC", "ST_NOATIME": "MS_NOATIME", "ST_NODIRATIME": "MS_NODIRATIME",
             "ST_RELATIME": "MS_RELATIME"}


def c(name: str) -> int:
    return syscalls.const(name)


def kept_flags(path: str) -> int:
    """The per-mount flags already on `path`: a bind remount must repeat them or it clears them."""
    st_flags = os.statvfs(path).f_flag
    flags = 0
    for st_name, ms_name in _ST_TO_MS.items():
        if st_flags & getattr(os, st_name):
            flags |= c(ms_name)
    return flags


def mount_point_of(path: str) -> tuple[str, bool]:
    """The mount point under which `path` lies (`path` itself if it is one), from this mount namespace's
    mountinfo, and whether that mount is shared. The last one mounted there wins: it is the visible one."""
    best, shared = "/", False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best = point
                shared = any(o.startswith("shared:") for o in fields[6:fields.index("-")])
    return best, shared


def prepare_root(config: Config) -> int:
    """Stop mount events reaching the host, then make the rootfs a mount point; its O_PATH fd."""
    propagation = c("MS_SLAVE") | c("MS_REC")
    if config.linux.rootfs_propagation:
        for bits in mountopts.parse([config.linux.rootfs_propagation]).propagation:
            propagation = bits | c("MS_REC")
    if propagation & c("MS_UNBINDABLE"):
        # Nothing could be bound from an unbindable tree (the rootfs, /dev/null for maskedPaths):
        # private until pivot_root, finish_root() makes `/` unbindable.
        propagation = c("MS_PRIVATE") | c("MS_REC")
    syscalls.mount(None, "/", None, propagation, None, what="set propagation of `/`")
    # The mount holding the rootfs (the rootfs itself when it is a mount point) becomes the parent of the
    # bind below. As runc does, only a shared one is made private: pivot_root refuses a shared parent,
    # and the bind and every mount on it would propagate to the host. A slave one stays a slave, so a
    # slave root keeps receiving the host's mount events.
    parent, shared = mount_point_of(os.path.realpath(config.root_path))
    if shared:
        syscalls.mount(None, parent, None, c("MS_PRIVATE"), None, what=f"make `{parent}` private")
    syscalls.mount(config.root_path, config.root_path, None, c("MS_BIND") | c("MS_REC"), None,
                   what=f"bind the rootfs `{config.root_path}` onto itself")
    return os.open(config.root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def mount_all(root_fd: int, config: Config, trees: dict[int, int] | None = None, start: int = 0,
              stop: int | None = None) -> None:
    """config.mounts[start:stop], in order. `trees`: mount index -> detached (id-mapped) tree to attach
    instead of binding (linux/userns.py)."""
    end = len(config.mounts) if stop is None else stop
    for index in range(start, end):
        mount_one(root_fd, config.mounts[index], index, config, (trees or {}).get(index))


def mount_one(root_fd: int, m: Mount, index: int, config: Config, tree: int | None = None) -> None:
    opts = mountopts.parse(m.options)
    if opts.bind or m.type == "bind":
        _bind_mount(root_fd, m, index, opts, config.bundle, tree)
    elif m.type in ("cgroup", "cgroup2"):
        cgroupfs.mount_cgroups(root_fd, m, opts, config.linux.namespace("cgroup") is not None)
    else:
        # proc and sysfs mounted through a symlink is how "fake /proc" attacks start: refuse links.
        strict = m.type in ("proc", "sysfs")
        target = _dir_target(root_fd, m.destination, strict)
        below = -1
        try:
            if opts.copyup and m.type == "tmpfs":
                # Opened before the mount: afterwards the path shows the empty tmpfs, the fd what it hides.
                below = os.open(fd_path(target), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            syscalls.mount(m.source or m.type, fd_path(target), m.type, opts.flags, opts.data_string,
                           what=f"mount `{m.type}` on `{m.destination}` (mounts[{index}])")
            if below >= 0:
                _copy_up(below, root_fd, m.destination, index)
        finally:
            os.close(target)
            if below >= 0:
                os.close(below)
    if opts.propagation:
        target = open_in_root(root_fd, m.destination)
        try:
            for bits in opts.propagation:
                syscalls.mount(None, fd_path(target), None, bits, None,
                               what=f"set propagation of `{m.destination}` (mounts[{index}])")
        finally:
            os.close(target)


def _copy_up(below: int, root_fd: int, destination: str, index: int) -> None:
    """`tmpcopyup`: copy the directory a fresh tmpfs covers into it (files, links, nodes, owners)."""
    top = open_in_root(root_fd, destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, no_symlinks=True)
    try:
        _copy_tree(below, top)
    except OSError as e:
        raise kernel_error(f"copy `{destination}` into its tmpfs (mounts[{index}] tmpcopyup)", e) from None
    finally:
        os.close(top)


def _copy_tree(src: int, dst: int) -> None:
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    for name in os.listdir(src):
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            sub_src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=src)
            try:
                sub_dst = os.open(name, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=dst)
                try:
                    _copy_tree(sub_src, sub_dst)
                finally:
                    os.close(sub_dst)
            finally:
                os.close(sub_src)
        elif stat.S_ISREG(st.st_mode):
            fin = os.open(name, os.O_RDONLY | nofollow, dir_fd=src)
            try:
                fout = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600, dir_fd=dst)
                try:
                    while os.sendfile(fout, fin, None, 1 << 20) > 0:
                        pass
                finally:
                    os.close(fout)
            finally:
                os.close(fin)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        else:
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst)  # after chown, which clears setuid bits


def _dir_target(root_fd: int, destination: str, strict: bool) -> int:
    fd = mkdir_all(root_fd, destination)
    if strict:
        os.close(fd)
        try:
            fd = open_in_root(root_fd, destination, os.O_PATH | os.O_DIRECTORY, no_symlinks=True)
        except KernelError as e:
            if e.errno == errno.ELOOP:
                raise KernelError(f"mount on `{destination}`: it is reached through a symlink",
                                  errno.ELOOP) from None
            raise
    return fd


def _bind_mount(root_fd: int, m: Mount, index: int, opts: mountopts.MountOptions, bundle: str,
                tree: int | None = None) -> None:
    source = os.path.join(bundle, m.source) if m.source else ""
    if not source:
        raise ConfigError(f"mounts[{index}].source", "required for a bind mount")
    try:
        is_dir = stat.S_ISDIR((os.stat(source) if tree is None else os.fstat(tree)).st_mode)
    except OSError as e:
        raise ConfigError(f"mounts[{index}].source", f"`{source}`: {os.strerror(e.errno or 0).lower()}") from None
    target = mkdir_all(root_fd, m.destination) if is_dir else make_file(root_fd, m.destination)
    flags = c("MS_BIND") | (c("MS_REC") if opts.recursive else 0)
    try:
        if tree is not None:
            userns.move_mount(tree, target, f"attach `{source}` on `{m.destination}` (mounts[{index}])")
        else:
            syscalls.mount(source, fd_path(target), None, flags, None,
                           what=f"bind `{source}` on `{m.destination}` (mounts[{index}])")
    finally:
        os.close(target)
    if opts.flags & ~(c("MS_REC") | c("MS_BIND")) or opts.clear:
        # The first bind ignores flags; remount the new mount (reopened: the old fd names what is
        # underneath it) with the asked flags plus those the source already had.
        target = open_in_root(root_fd, m.destination)
        try:
            path = fd_path(target)
            wanted = (kept_flags(path) | opts.flags) & ~opts.clear
            syscalls.mount(None, path, None, c("MS_BIND") | c("MS_REMOUNT") | wanted, None,
                           what=f"remount `{m.destination}` with its options (mounts[{index}])")
        finally:
            os.close(target)


def open_host_null() -> int:
    """The host's /dev/null, checked: masks bind this file, never the container's (which may be a link)."""
    fd = os.open("/dev/null", os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise KernelError("open the host's /dev/null: it is not the null device", errno.EINVAL)
    return fd


def mask_paths(root_fd: int, paths: list[str], null_fd: int) -> None:
    for i, path in enumerate(paths):
        try:
            target = open_in_root(root_fd, path)
        except KernelError as e:
            if e.errno == errno.ENOENT:
                continue
            raise KernelError(f"linux.maskedPaths[{i}]: {e.operation}", e.errno) from None
        try:
            if stat.S_ISDIR(os.fstat(target).st_mode):
                syscalls.mount("tmpfs", fd_path(target), "tmpfs", c("MS_RDONLY"), None,
                               what=f"mask `{path}` (linux.maskedPaths[{i}])")
            else:
                syscalls.mount(fd_path(null_fd), fd_path(target), None, c("MS_BIND"), None,
                               what=f"mask `{path}` (linux.maskedPaths[{i}])")
        finally:
            os.close(target)


def readonly_paths(root_fd: int, paths: list[str]) -> None:
    for i, path in enumerate(paths):
        try:
            target = open_in_root(root_fd, path)
        except KernelError as e:
            if e.errno == errno.ENOENT:
                continue
            raise KernelError(f"linux.readonlyPaths[{i}]: {e.operation}", e.errno) from None
        try:
            syscalls.mount(fd_path(target), fd_path(target), None, c("MS_BIND") | c("MS_REC"), None,
                           what=f"bind `{path}` read-only (linux.readonlyPaths[{i}])")
        finally:
            os.close(target)
        target = open_in_root(root_fd, path)
        try:
            flags = kept_flags(fd_path(target)) | c("MS_BIND") | c("MS_REMOUNT") | c("MS_RDONLY")
            syscalls.mount(None, fd_path(target), None, flags, None,
                           what=f"remount `{path}` read-only (linux.readonlyPaths[{i}])")
        finally:
            os.close(target)


def pivot(root_path: str) -> None:
    """pivot_root(".", "."): stack the old root under the new one, then detach it (pivot_root(2))."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new_root = os.open(root_path, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new_root)
        syscalls.pivot_root(".", ".")
        os.fchdir(old_root)
        # The old root may be shared; unmounting it must not propagate to the host.
        syscalls.mount(None, ".", None, c("MS_SLAVE") | c("MS_REC"), None, what="set propagation of the old root")
        syscalls.umount2(".", c("MNT_DETACH"))
        os.chdir("/")
    finally:
        os.close(old_root)
        os.close(new_root)


def move_root(root_path: str) -> None:
    """The fallback when "/" cannot be pivoted away (initramfs): move the rootfs over "/" and chroot."""
    os.chdir(root_path)
    syscalls.mount(root_path, "/", None, c("MS_MOVE"), None, what=f"move the rootfs `{root_path}` to `/`")
    os.chroot(".")
    os.chdir("/")


def root_cannot_pivot() -> bool:
    """True when "/" is the initial ramfs, which pivot_root cannot move away from."""
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    try:
        return syscalls.fs_type(fd) == c("RAMFS_MAGIC")
    finally:
        os.close(fd)


def finish_root(config: Config) -> None:
    """After pivot: the root read-only if asked, and its final propagation."""
    if config.root_readonly:
        flags = kept_flags("/") | c("MS_BIND") | c("MS_REMOUNT") | c("MS_RDONLY")
        syscalls.mount(None, "/", None, flags, None, what="remount `/` read-only (root.readonly)")
    if config.linux.rootfs_propagation:
        for bits in mountopts.parse([config.linux.rootfs_propagation]).propagation:
            syscalls.mount(None, "/", None, bits, None, what="set linux.rootfsPropagation on `/`")


def chdir_cwd(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as e:
        raise kernel_error(f"chdir to `{cwd}` (process.cwd)", e) from None
