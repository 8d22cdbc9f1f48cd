"""`minirun create`: the container is left `created`, its init waiting for `start`."""

from __future__ import annotations

from minirun.errors import UsageError
from minirun.process.create import CreateOptions, create
from minirun.spec import load_bundle
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def check_unsupported(console_socket: str, preserve_fds: int, terminal: bool) -> None:
    if console_socket or terminal:
        raise UsageError("terminals (process.terminal, --console-socket) are not supported by this "
                         "version of minirun")
    if preserve_fds:
        raise UsageError("--preserve-fds is not supported by this version of minirun")


def execute(g: Globals, *, bundle: str, pid_file: str, console_socket: str, no_pivot: bool,
            no_new_keyring: bool, preserve_fds: int, container_id: str) -> int:
    validate_id(container_id)
    config = load_bundle(bundle)
    check_unsupported(console_socket, preserve_fds, config.process.terminal)
    create(g.store, container_id, config, CreateOptions(pid_file=pid_file, no_pivot=no_pivot))
    return 0
