"""Container status, the transitions between them, and the on-disk state store.

Layout: ``<root>/<id>/state.json`` (written atomically) and ``<root>/<id>/exec.fifo`` (exists while the
container is `created`). The live status is derived, not trusted from disk: a container whose init
has died is `stopped` whatever state.json says.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time

from minirun import OCI_VERSION
from minirun.cli.table import ROOT_DEFAULT
from minirun.errors import ContainerExists, ContainerNotFound, KernelError, UsageError, WrongState

# This module is on the start-up path of every verb: no typing, enum, re or dataclasses at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DEFAULT_ROOT = ROOT_DEFAULT
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


class Status:
    """The statuses of runtime.md, as plain strings (an enum costs start-up time)."""

    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


# Which statuses each verb accepts (runtime.md "Lifecycle", and runc where the spec is silent).
ALLOWED: dict[str, tuple[str, ...]] = {
    "start": (Status.CREATED,),
    "kill": (Status.CREATED, Status.RUNNING, Status.PAUSED),
    "delete": (Status.STOPPED, Status.CREATED),
    "pause": (Status.RUNNING,),
    "resume": (Status.PAUSED,),
    "exec": (Status.RUNNING,),
    "update": (Status.CREATED, Status.RUNNING, Status.PAUSED),
}


def check_transition(verb: str, container_id: str, status: str) -> None:
    if status not in ALLOWED[verb]:
        raise WrongState(f"cannot {verb} container `{container_id}`: it is {status}")


def validate_id(container_id: str) -> str:
    if not container_id:
        raise UsageError("container id: must not be empty")
    if not _ID_CHARS.issuperset(container_id) or container_id.startswith(".") or len(container_id) > 1024:
        raise UsageError(f"container id {container_id!r}: only letters, digits, `_`, `.` and `-`, "
                         "not starting with `.`")
    return container_id


class State:
    """What state.json holds (a plain class: dataclasses cost milliseconds to import)."""

    FIELDS = ("id", "bundle", "rootfs", "pid", "pid_start", "created", "owner", "annotations", "config",
              "cgroup")
    __slots__ = FIELDS

    def __init__(self, id: str, bundle: str, rootfs: str, pid: int = 0, pid_start: int = 0,
                 created: str = "", owner: str = "", annotations: dict[str, str] | None = None,
                 config: dict[str, Any] | None = None, cgroup: dict[str, Any] | None = None) -> None:
        self.id, self.bundle, self.rootfs = id, bundle, rootfs
        self.pid = pid
        self.pid_start = pid_start  # /proc/PID/stat starttime: tells our init from a later process with its pid
        self.created, self.owner = created, owner
        self.annotations = annotations or {}
        self.config = config or {}
        self.cgroup = cgroup or {}

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def oci(self, status: str) -> dict[str, Any]:
        """The state as runtime.md defines it, plus runc's extra keys."""
        return {
            "ociVersion": OCI_VERSION, "id": self.id, "status": status,
            "pid": self.pid if status in (Status.CREATED, Status.RUNNING, Status.PAUSED) else 0,
            "bundle": self.bundle, "rootfs": self.rootfs, "created": self.created, "owner": self.owner,
            "annotations": self.annotations,
        }


def process_start_time(pid: int) -> int | None:
    """starttime of `pid` (field 22 of /proc/PID/stat), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


class Store:
    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, validate_id(container_id))

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), "exec.fifo")

    def claim(self, container_id: str) -> str:
        """Create the container's directory; mkdir is atomic, so of two creates exactly one wins."""
        path = self.dir(container_id)
        try:
            os.makedirs(self.root, mode=0o711, exist_ok=True)
            os.mkdir(path, 0o711)
        except FileExistsError:
            raise ContainerExists(container_id) from None
        except OSError as e:
            raise KernelError(f"create state directory `{path}`", e.errno or errno.EIO) from None
        return path

    def remove(self, container_id: str) -> None:
        """The directory holds files we made and at most one level of directories (notify/); no
        shutil.rmtree: it costs milliseconds to import, and nothing here is deeper."""
        _remove_dir(self.dir(container_id), depth=1)

    def save(self, state: State) -> None:
        path = os.path.join(self.dir(state.id), "state.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state.to_dict(), f)
        os.replace(tmp, path)

    def load(self, container_id: str) -> State:
        path = os.path.join(self.dir(container_id), "state.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ContainerNotFound(container_id) from None
        except (OSError, ValueError) as e:
            raise KernelError(f"read state `{path}` ({e})", errno.EIO) from None
        return State(**{k: v for k, v in data.items() if k in State.FIELDS})

    def ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names if os.path.isfile(os.path.join(self.root, n, "state.json"))]

    def status(self, state: State) -> str:
        if not state.pid:
            return Status.CREATING
        if process_start_time(state.pid) != state.pid_start:
            return Status.STOPPED
        if os.path.exists(self.fifo(state.id)):
            return Status.CREATED
        if _frozen(state):
            return Status.PAUSED
        return Status.RUNNING

    @contextlib.contextmanager
    def locked(self, container_id: str) -> Iterator[None]:
        """Serialise verbs that change one container (start, delete, kill...)."""
        try:
            fd = os.open(self.dir(container_id), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound(container_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _remove_dir(path: str, depth: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path):
            with contextlib.suppress(FileNotFoundError):
                if depth > 0 and entry.is_dir(follow_symlinks=False):
                    _remove_dir(entry.path, depth - 1)
                else:
                    os.unlink(entry.path)
        os.rmdir(path)


def _frozen(state: State) -> bool:
    freezer = state.cgroup.get("freezer_state_file")
    if not freezer:
        return False
    try:
        with open(freezer) as f:
            return f.read().strip() in ("FROZEN", "1")
    except OSError:
        return False


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
