"""`minirun exec`: run a new process in a running container.

The process starts from the container's own `process` (env, user, capabilities, rlimits, cwd,
no_new_privs), as runc does; the flags change it: ARGS replace args, -e overrides or adds variables,
--cwd, --user, --additional-gids, --cap (added to every set), --no-new-privs. --process FILE gives a
whole OCI process object instead.
"""

from __future__ import annotations

import json

from minirun import container
from minirun.errors import ConfigError, UsageError
from minirun.process.enter import ExecOptions, exec_in
from minirun.spec.load import parse_process
from minirun.spec.model import Process
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals

CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def execute(g: Globals, *, process: str, tty: bool, console_socket: str, detach: bool, pid_file: str, cwd: str,
            env: list[str], user: str, additional_gids: list[str], cap: list[str], no_new_privs: bool,
            preserve_fds: int, ignore_paused: bool, process_label: str, apparmor: str, container_id: str,
            args: list[str]) -> int:
    from minirun.cli.create import check_terminal

    validate_id(container_id)
    if process:
        proc = _from_file(process)
        proc.terminal = proc.terminal or tty
    else:
        state, _ = container.load(g.store, container_id)
        proc = parse_process(state.config.get("process", {}), "process")
        if not args:
            raise UsageError("exec: give the command to run (ARGS), or --process FILE")
        proc.args = list(args)
        proc.terminal = tty  # as runc: the container's own process.terminal is not inherited
    _apply_flags(proc, cwd, env, user, additional_gids, cap, no_new_privs)
    check_terminal(console_socket, preserve_fds, proc.terminal, detach)
    opts = ExecOptions(detach=detach, pid_file=pid_file, preserve_fds=preserve_fds, ignore_paused=ignore_paused,
                       console_socket=console_socket)
    return exec_in(g.store, container_id, proc, opts)


def _from_file(path: str) -> Process:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except OSError as e:
        raise UsageError(f"--process `{path}`: {(e.strerror or str(e)).lower()}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError("", f"invalid JSON: {e}", source=path) from None
    return parse_process(data, "process")


def _apply_flags(proc: Process, cwd: str, env: list[str], user: str, additional_gids: list[str], caps: list[str],
                 no_new_privs: bool) -> None:
    if cwd:
        if not cwd.startswith("/"):
            raise UsageError(f"--cwd {cwd!r}: must be an absolute path in the container")
        proc.cwd = cwd
    for entry in env:
        key, eq, _ = entry.partition("=")
        if not eq or not key:
            raise UsageError(f"--env {entry!r}: expected KEY=VALUE")
        proc.env = [e for e in proc.env if e.partition("=")[0] != key] + [entry]
    if user:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise UsageError(f"--user {user!r}: expected UID[:GID] (numbers)")
        proc.user.uid, proc.user.gid = int(uid), int(gid) if gid else 0
    for g in additional_gids:
        if not g.isdigit():
            raise UsageError(f"--additional-gids {g!r}: expected a number")
        proc.user.additional_gids.append(int(g))
    if caps:
        from minirun.linux.capabilities import is_known
        from minirun.spec.model import Capabilities

        for name in caps:
            if not is_known(name):
                raise UsageError(f"--cap {name!r}: unknown capability")
        if proc.capabilities is None:
            proc.capabilities = Capabilities([], [], [], [], [])
        for set_name in CAP_SETS:
            current = getattr(proc.capabilities, set_name)
            current.extend(c for c in caps if c not in current)
    if no_new_privs:
        proc.no_new_privileges = True
