"""`minirun spec`: write a default config.json."""

from __future__ import annotations

import json
import os

from minirun.errors import UsageError
from minirun.spec.default import default_spec

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals, *, bundle: str, rootless: bool) -> int:
    if rootless:
        raise UsageError("spec --rootless: rootless containers are not supported by this version of minirun")
    path = os.path.join(bundle, "config.json")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise UsageError(f"spec: `{path}` exists; remove it first") from None
    except OSError as e:
        raise UsageError(f"spec: cannot create `{path}`: {os.strerror(e.errno or 0).lower()}") from None
    with os.fdopen(fd, "w") as f:
        json.dump(default_spec(), f, indent="\t")
        f.write("\n")
    return 0
