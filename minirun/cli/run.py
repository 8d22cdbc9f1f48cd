"""`minirun run`: create and start; in the foreground, wait and return the container's exit status.

Besides runc's ``run [-b DIR] ID``, ``run BUNDLE_DIR`` works: the positional argument is taken as a
bundle when no --bundle is given and it contains a `/` (ids never do), or names a directory with a
config.json while the current directory has none; the id is then --name/--id or made up from the
bundle's name.
"""

from __future__ import annotations

import os

from minirun.cli.create import check_terminal
from minirun.errors import UsageError
from minirun.process.create import CreateOptions
from minirun.process.foreground import run
from minirun.spec import load_bundle
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def split_target(target: str, bundle: str | None, name: str) -> tuple[str, str]:
    """(bundle, id) from the positional argument and the options."""
    looks_like_bundle = "/" in target or (
        os.path.isfile(os.path.join(target, "config.json")) and not os.path.isfile("config.json"))
    if bundle is None and target and looks_like_bundle:
        base = os.path.basename(os.path.abspath(target))
        safe = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in base).lstrip(".") or "bundle"
        return target, name or f"{safe}-{os.urandom(4).hex()}"
    if name and target and name != target:
        raise UsageError(f"container id given twice: {target!r} and --name {name!r}")
    return bundle or ".", target or name


def execute(g: Globals, *, bundle: str | None, pid_file: str, console_socket: str, no_pivot: bool,
            no_new_keyring: bool, preserve_fds: int, detach: bool, keep: bool, no_subreaper: bool,
            name: str, target: str) -> int:
    bundle_dir, container_id = split_target(target, bundle, name)
    validate_id(container_id)
    config = load_bundle(bundle_dir)
    check_terminal(console_socket, preserve_fds, config.process.terminal, detach)
    opts = CreateOptions(pid_file=pid_file, no_pivot=no_pivot, console_socket=console_socket,
                         preserve_fds=preserve_fds)
    return run(g.store, container_id, config, opts, detach=detach, keep=keep)
