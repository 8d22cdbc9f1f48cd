"""`minirun create`: the container is left `created`, its init waiting for `start`."""

from __future__ import annotations

from minirun.errors import UsageError
from minirun.process.create import CreateOptions, create
from minirun.spec import load_bundle
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def check_terminal(console_socket: str, preserve_fds: int, terminal: bool, detach: bool) -> None:
    """runc's rules: a detached terminal needs a console socket to go to, and only one may use it."""
    if console_socket and not terminal:
        raise UsageError(f"--console-socket {console_socket}: the process has no terminal (process.terminal "
                         "is not true)")
    if console_socket and not detach:
        raise UsageError(f"--console-socket {console_socket}: only for a detached process (create, run -d, "
                         "exec -d); in the foreground minirun itself is the terminal")
    if terminal and detach and not console_socket:
        raise UsageError("process.terminal: a detached process needs --console-socket to send its terminal to")
    if preserve_fds < 0:
        raise UsageError(f"--preserve-fds {preserve_fds}: must not be negative")


def execute(g: Globals, *, bundle: str, pid_file: str, console_socket: str, no_pivot: bool,
            no_new_keyring: bool, preserve_fds: int, container_id: str) -> int:
    validate_id(container_id)
    config = load_bundle(bundle)
    check_terminal(console_socket, preserve_fds, config.process.terminal, detach=True)
    create(g.store, container_id, config, CreateOptions(pid_file=pid_file, no_pivot=no_pivot,
                                                        console_socket=console_socket, preserve_fds=preserve_fds))
    return 0
