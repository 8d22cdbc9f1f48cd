"""Find the container's executable and exec it through the sealed trampoline (see csrc/trampoline.c)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from minirun.errors import ExecNotFound, ExecNotPermitted, KernelError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import NoReturn

TRAMPOLINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "libexec", "minirun-exec")
TRAMPOLINE_MAGIC = "minirun-exec-trampoline"


def env_path(env: list[str]) -> str:
    for entry in env:
        if entry.startswith("PATH="):
            return entry[5:]
    return ""


def find_executable(arg0: str, env: list[str]) -> str:
    """The path to exec for `arg0`, looked up in the container's PATH; errors in runc's wording."""
    if "/" in arg0:
        try:
            st = os.stat(arg0)
        except OSError as e:
            raise ExecNotFound(f'exec: "{arg0}": stat {arg0}: {os.strerror(e.errno or 0).lower()}') from None
        if stat.S_ISDIR(st.st_mode) or not os.access(arg0, os.X_OK):
            raise ExecNotPermitted(f'exec: "{arg0}": permission denied')
        return arg0
    for directory in env_path(env).split(":"):
        candidate = os.path.join(directory or ".", arg0)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    raise ExecNotFound(f'exec: "{arg0}": executable file not found in $PATH')


def sealed_trampoline() -> int:
    """A write-sealed memfd copy of the trampoline; open it while the host filesystem is visible."""
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fd = os.memfd_create("minirun-exec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        src = os.open(TRAMPOLINE, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(src).st_size
            copied = 0
            while copied < size:
                n = os.sendfile(fd, src, copied, size - copied)
                if n == 0:
                    break
                copied += n
        finally:
            os.close(src)
        os.fchmod(fd, 0o555)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError as e:
        os.close(fd)
        raise KernelError(f"prepare the exec trampoline `{TRAMPOLINE}`", e.errno or errno.EIO) from None
    return fd


def exec_container(trampoline_fd: int, path: str, args: list[str], env: list[str]) -> NoReturn:
    os.execve(trampoline_fd, [TRAMPOLINE_MAGIC, path, *args], dict(_split(e) for e in env))


def _split(entry: str) -> tuple[str, str]:
    key, _, value = entry.partition("=")
    return key, value
