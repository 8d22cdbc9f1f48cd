"""`minirun delete`: remove a stopped container (or, with --force, kill it first)."""

from __future__ import annotations

from minirun import container
from minirun.errors import ContainerNotFound
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals, *, force: bool, container_id: str) -> int:
    try:
        container.delete(g.store, validate_id(container_id), force)
    except ContainerNotFound:
        # Like runc: engines (Podman after a failed create) force-delete to make sure nothing is left;
        # a container that is already gone is what they asked for.
        if not force:
            raise
    return 0
