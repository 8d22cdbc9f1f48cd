"""The one exception tree. Only the CLI turns these into exit codes and log lines.

Messages are lowercase and name the operation and the path or config field, e.g.
``mount `proc` on `/rootfs/proc`: operation not permitted`` or
``config.json: linux.namespaces[2].type: unknown namespace "foo"``.
"""

from __future__ import annotations

import errno as _errno
import os


class MinirunError(Exception):
    """Base of every error minirun reports; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(MinirunError):
    """A command line that cannot be acted on (bad id, bad signal, conflicting flags)."""


class ConfigError(MinirunError):
    """config.json is malformed or asks for something impossible; names the field."""

    def __init__(self, field: str, problem: str, source: str = "config.json") -> None:
        self.field = field
        super().__init__(f"{source}: {field}: {problem}" if field else f"{source}: {problem}")


class ContainerNotFound(MinirunError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container `{container_id}` does not exist")


class ContainerExists(MinirunError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container `{container_id}` already exists")


class WrongState(MinirunError):
    """The container's status does not allow the operation (start twice, delete running...)."""


class KernelError(MinirunError):
    """A system call failed; keeps the errno so callers can choose a fallback."""

    def __init__(self, operation: str, err: int) -> None:
        self.errno = err
        self.operation = operation
        super().__init__(f"{operation}: {os.strerror(err).lower()}")


class ExecNotFound(MinirunError):
    """The container's executable does not exist: exit 127 like a shell, runc's wording."""

    exit_code = 127


class ExecNotPermitted(MinirunError):
    """The container's executable exists but cannot be executed: exit 126 like a shell."""

    exit_code = 126


class ChildError(MinirunError):
    """An error raised in the container's init before exec, carried to the parent."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def kernel_error(operation: str, exc: OSError) -> KernelError:
    return KernelError(operation, exc.errno if exc.errno is not None else _errno.EIO)
