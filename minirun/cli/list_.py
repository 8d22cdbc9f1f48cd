"""`minirun list`: the containers in the state directory."""

from __future__ import annotations

import json

from minirun import container

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals, *, format: str, quiet: bool) -> int:
    states = container.list_all(g.store)
    if quiet:
        for s in states:
            print(s["id"])
    elif format == "json":
        print(json.dumps(states))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]) for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0
