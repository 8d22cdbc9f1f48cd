"""Typed wrappers over the cffi shim: raise KernelError naming the operation on -errno.

The shim module is imported on first use so that verbs which never touch these calls (state, list)
do not pay for loading it.
"""

from __future__ import annotations

import os
from functools import cache

from minirun.errors import KernelError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any


@cache
def shim() -> Any:
    from minirun import _shim  # type: ignore[attr-defined]

    return _shim


def const(name: str) -> int:
    """A constant from the kernel headers, read through the shim."""
    return int(getattr(shim().lib, name))


def _check(result: int, operation: str) -> int:
    if result < 0:
        raise KernelError(operation, -result)
    return result


def unshare(flags: int) -> None:
    _check(shim().lib.mr_unshare(flags), "unshare")


def setns(fd: int, nstype: int, what: str) -> None:
    _check(shim().lib.mr_setns(fd, nstype), f"setns `{what}`")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(shim().lib.mr_pivot_root(new_root.encode(), put_old.encode()), f"pivot_root `{new_root}`")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None,
          what: str | None = None) -> None:
    null = shim().ffi.NULL

    def enc(s: str | None) -> Any:
        return null if s is None else s.encode()

    rc = shim().lib.mr_mount(enc(source), target.encode(), enc(fstype), flags, enc(data))
    _check(rc, what or f"mount `{source}` on `{target}`")


def umount2(target: str, flags: int) -> None:
    _check(shim().lib.mr_umount2(target.encode(), flags), f"umount `{target}`")


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0, what: str | None = None) -> int:
    rc = shim().lib.mr_openat2(dirfd, path.encode(), flags | os.O_CLOEXEC, mode, resolve)
    return _check(rc, what or f"open `{path}`")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(shim().lib.mr_setdomainname(raw, len(raw)), f"setdomainname `{name}`")


def close_range_cloexec(first: int) -> None:
    """Mark every fd from `first` up close-on-exec in one call, whatever RLIMIT_NOFILE is."""
    _check(shim().lib.mr_close_range(first, 0xFFFFFFFF, const("CLOSE_RANGE_CLOEXEC")), "close_range")


def capget() -> tuple[int, int, int]:
    ffi = shim().ffi
    eff, prm, inh = ffi.new("uint32_t[2]"), ffi.new("uint32_t[2]"), ffi.new("uint32_t[2]")
    _check(shim().lib.mr_capget(eff, prm, inh), "capget")
    return tuple(int(a[0]) | int(a[1]) << 32 for a in (eff, prm, inh))  # type: ignore[return-value]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    ffi = shim().ffi
    words = [ffi.new("uint32_t[2]", [v & 0xFFFFFFFF, v >> 32]) for v in (effective, permitted, inheritable)]
    _check(shim().lib.mr_capset(*words), "capset")


def prctl(option: str, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0, what: str | None = None) -> int:
    return _check(shim().lib.mr_prctl(const(option), a2, a3, a4, a5), what or f"prctl {option}")


def fs_type(fd: int) -> int:
    out = shim().ffi.new("int64_t *")
    _check(shim().lib.mr_statfs_type(fd, out), "fstatfs")
    return int(out[0])
