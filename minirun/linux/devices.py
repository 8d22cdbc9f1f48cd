"""/dev inside the container: the spec's default devices, linux.devices, and the usual symlinks."""

from __future__ import annotations

import errno
import os
import stat

from minirun.errors import KernelError
from minirun.linux import syscalls
from minirun.linux.paths import fd_path, make_file, mkdir_all, open_in_root
from minirun.spec.model import Config, Device

# runtime-spec config-linux.md "Default Devices": always provided.
DEFAULT_DEVICES = [
    Device("/dev/null", "c", 1, 3, 0o666, 0, 0),
    Device("/dev/zero", "c", 1, 5, 0o666, 0, 0),
    Device("/dev/full", "c", 1, 7, 0o666, 0, 0),
    Device("/dev/random", "c", 1, 8, 0o666, 0, 0),
    Device("/dev/urandom", "c", 1, 9, 0o666, 0, 0),
    Device("/dev/tty", "c", 5, 0, 0o666, 0, 0),
]
SYMLINKS = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
]
_TYPE_BITS = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def wanted_devices(config: Config) -> list[Device]:
    configured = {d.path for d in config.linux.devices}
    return [d for d in DEFAULT_DEVICES if d.path not in configured] + config.linux.devices


def dev_is_bound_from_host(config: Config) -> bool:
    return any(m.destination.rstrip("/") == "/dev" and ({"bind", "rbind"} & set(m.options) or m.type == "bind")
               for m in config.mounts)


def create_devices(root_fd: int, config: Config) -> None:
    if dev_is_bound_from_host(config):
        return
    for i, dev in enumerate(wanted_devices(config)):
        _create_device(root_fd, dev, f"linux.devices[{i}]" if dev in config.linux.devices else dev.path)
    _create_symlinks(root_fd)


def _create_device(root_fd: int, dev: Device, label: str) -> None:
    parent = mkdir_all(root_fd, os.path.dirname(dev.path))
    name = os.path.basename(dev.path)
    mode = (0o666 if dev.file_mode is None else dev.file_mode) | _TYPE_BITS[dev.type]
    try:
        try:
            os.unlink(name, dir_fd=parent)  # whatever the image put there, a link included
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise KernelError(f"create device `{dev.path}` ({label}): a directory is in the way",
                              errno.EISDIR) from None
        try:
            os.mknod(name, mode, os.makedev(dev.major, dev.minor), dir_fd=parent)
        except PermissionError:
            # No CAP_MKNOD (e.g. a user namespace): bind the host's node over an empty file instead.
            os.close(parent)
            parent = -1
            _bind_host_device(root_fd, dev, label)
            return
        except OSError as e:
            raise KernelError(f"mknod `{dev.path}` ({label})", e.errno or 0) from None
        os.chown(name, dev.uid or 0, dev.gid or 0, dir_fd=parent, follow_symlinks=False)
    finally:
        if parent >= 0:
            os.close(parent)


def _bind_host_device(root_fd: int, dev: Device, label: str) -> None:
    target = make_file(root_fd, dev.path)
    try:
        syscalls.mount(dev.path, fd_path(target), None, syscalls.const("MS_BIND"), None,
                       what=f"bind the host's `{dev.path}` ({label})")
    finally:
        os.close(target)


def _create_symlinks(root_fd: int) -> None:
    dev = open_in_root(root_fd, "/dev", os.O_PATH | os.O_DIRECTORY)
    try:
        for target, link in SYMLINKS:
            try:
                os.symlink(target, os.path.basename(link), dir_fd=dev)
            except FileExistsError:
                pass  # the image or a mount already provides it
            except OSError as e:
                raise KernelError(f"symlink `{link}` -> `{target}`", e.errno or 0) from None
    finally:
        os.close(dev)
