"""tests/vm/test_*.py run inside the cgroup v2 VM (tests/integration/test_v2_vm.py boots it), not on the host.

init.sh sets MINIRUN_IN_VM=1 in the VM. On the host these files are left out of collection, so
`pytest tests` does not run them against the host's cgroup v1 hierarchy. MINIRUN_VM_COLLECT=1 lets the
host collect them (only collect: test_v2_vm.py does that to learn their ids).
"""

from __future__ import annotations

import os

IN_VM = os.environ.get("MINIRUN_IN_VM") == "1"

collect_ignore_glob = [] if IN_VM or os.environ.get("MINIRUN_VM_COLLECT") == "1" else ["test_*.py"]
