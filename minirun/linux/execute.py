"""Find the container's executable and exec it through the sealed trampoline (see csrc/trampoline.c)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from minirun.errors import ExecNotFound, ExecNotPermitted, KernelError
from minirun.linux import syscalls
from minirun.linux.identity import home_of

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import NoReturn

    from minirun.spec.model import Process

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


def process_env(process: Process, preserve_fds: int) -> list[str]:
    """The process's environment: HOME from the container's /etc/passwd when not set (read after the
    root is the container's), and LISTEN_FDS/LISTEN_PID for preserved fds."""
    env = list(process.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home_of(process.user.uid)}")
    return with_listen_fds(env, preserve_fds)


def with_listen_fds(env: list[str], preserve_fds: int) -> list[str]:
    """sd_listen_fds(3): the preserved fds are announced to the process (its pid is ours: we exec)."""
    if preserve_fds <= 0:
        return list(env)
    kept = [e for e in env if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))]
    return [*kept, f"LISTEN_FDS={preserve_fds}", f"LISTEN_PID={os.getpid()}"]


def keep_only_preserved_fds(preserve_fds: int) -> None:
    """Fds 3..3+N-1 are the caller's to pass on (socket activation); every other one closes on exec.

    Those in the range are left as they are: one the caller really passed came through its exec of
    minirun, so it is not close-on-exec; one minirun opened itself in a gap of the range (N larger than
    what was passed) is close-on-exec, as Python opens everything, and must not reach the container."""
    syscalls.close_range_cloexec(3 + max(preserve_fds, 0))
