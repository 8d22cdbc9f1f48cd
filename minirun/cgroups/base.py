"""The cgroup manager interface both drivers implement, and the file helpers they share.

A manager is created for one container (`manager_for`), or rebuilt from what a previous command
saved in state.json (`from_state`). Every kernel refusal is reported naming the resource and the file,
e.g. ``linux.resources.memory.limit: write 1048576 to /sys/fs/cgroup/memory/.../memory.limit_in_bytes:
device or resource busy``.
"""

from __future__ import annotations

import errno
import os
import time

from minirun.errors import KernelError
from minirun.log import logger

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.cgroups.resources import DeviceRule, Resources


class Manager:
    """One container's cgroup(s). Subclasses: cgroups.v1.V1Manager, cgroups.v2.V2Manager."""

    mode = ""  # "v1" (v1 or hybrid host) or "v2" (unified)
    RMDIR_TIMEOUT = 5.0  # seconds for an emptied cgroup to stop being busy

    def apply(self, pid: int) -> None:
        """Create the cgroup(s) (parents included) and move `pid` into them."""
        raise NotImplementedError

    def join(self, pid: int) -> None:
        """Move `pid` into the container's existing cgroup(s) (`exec`); nothing is created."""
        for leaf in self.leaves():
            write_file(os.path.join(leaf, "cgroup.procs"), str(pid), "join the container's cgroup")

    def leaves(self) -> list[str]:
        """The container's own cgroup directories (one per hierarchy on v1, one on v2)."""
        raise NotImplementedError

    def set(self, resources: Resources, extra_device_rules: list[DeviceRule] | None = None) -> None:
        """Write every limit `resources` names; used at create and by `update`. `extra_device_rules` allow
        the nodes of linux.devices; None keeps the ones given before (update)."""
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every process in the container's cgroup (and below it)."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Stats in the shape of runc's `events --stats` "data" object."""
        raise NotImplementedError

    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in this cgroup so far."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Thaw, SIGKILL what is left, wait for it to go, remove every directory apply() created."""
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        """JSON-able description saved in state.json; `from_state` rebuilds the manager from it."""
        raise NotImplementedError

    def _rmdir(self, d: str, must: bool) -> None:
        """Remove cgroup `d`. A cgroup stays busy for a moment after its last process died: retry for
        RMDIR_TIMEOUT when `must`, else keep it (a shared parent another container still uses)."""
        deadline = time.monotonic() + self.RMDIR_TIMEOUT
        while True:
            try:
                os.rmdir(d)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise KernelError(f"delete cgroup: rmdir {d}", e.errno or errno.EIO) from None
                if not must:
                    logger.debug(f"delete cgroup: {d} is still in use; kept")
                    return
                if time.monotonic() > deadline:
                    raise KernelError(f"delete cgroup: rmdir {d}", e.errno) from None
                time.sleep(0.005)


def write_file(path: str, value: str, what: str) -> None:
    """Write one cgroup file; `what` names the config field (e.g. linux.resources.pids.limit)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KernelError(f"{what}: open {path}", e.errno or errno.EIO) from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise KernelError(f"{what}: write {value!r} to {path}", e.errno or errno.EIO) from None
    finally:
        os.close(fd)


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def read_text(path: str) -> str:
    """A cgroup file's stripped text; "" when there is no such file (controller or feature missing)."""
    if not path:
        return ""
    try:
        return read_file(path).strip()
    except FileNotFoundError:
        return ""


def int_or_zero(path: str) -> int:
    text = read_text(path)
    return int(text) if text.lstrip("-").isdigit() else 0


def is_zombie(pid: int) -> bool:
    """A killed process that its parent has not reaped yet: it holds no resources and cannot die again."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def read_int(path: str) -> int:
    """An integer cgroup file; "max" reads as -1."""
    text = read_file(path).strip()
    return -1 if text == "max" else int(text)


def read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file such as memory.stat or memory.events: "key value" per line."""
    out: dict[str, int] = {}
    for line in read_file(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out
