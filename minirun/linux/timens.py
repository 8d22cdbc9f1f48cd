"""linux.timeOffsets: the clock offsets of a new time namespace."""

from __future__ import annotations

import os

from minirun.errors import KernelError


def write_offsets(offsets: dict[str, tuple[int, int]]) -> None:
    """Set the offsets of the time namespace our children will be in.

    unshare(CLONE_NEWTIME) puts only the caller's future children into the new namespace, and the
    kernel accepts offsets only until a first process enters it: so this runs after unshare and
    before the fork of the init. /proc/self/timens_offsets shows the children's namespace.
    """
    if not offsets:
        return
    text = "".join(f"{clock} {secs} {nsecs}\n" for clock, (secs, nsecs) in offsets.items())
    try:
        fd = os.open("/proc/self/timens_offsets", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KernelError("linux.timeOffsets: open `/proc/self/timens_offsets`", e.errno or 0) from None
    try:
        os.write(fd, text.encode())  # one write: the kernel applies all lines or none
    except OSError as e:
        raise KernelError(f"linux.timeOffsets: write {text.strip()!r}", e.errno or 0) from None
    finally:
        os.close(fd)
