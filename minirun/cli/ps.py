"""`minirun ps`: the container's processes, from its cgroup, as ps(1) lines or a JSON list of pids."""

from __future__ import annotations

import json
import subprocess

from minirun import container
from minirun.errors import MinirunError
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals, *, format: str, container_id: str, ps_args: list[str]) -> int:
    pids = container.processes(g.store, validate_id(container_id))
    if format == "json":
        print(json.dumps(pids))
        return 0
    # As runc does: run the host's ps with the given arguments and keep the header and our lines.
    try:
        out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise MinirunError(f"ps {' '.join(ps_args or ['-ef'])}: {e}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise MinirunError("ps: its output has no PID column")
    column = header.index("PID")
    wanted = set(pids)
    print(lines[0])
    for line in lines[1:]:
        fields = line.split(None, column + 1)
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            print(line)
    return 0
