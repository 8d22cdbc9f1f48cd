#!/usr/bin/env bash
# `make run`: a throwaway bundle on the busybox rootfs, run in the foreground, then removed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/minirun-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle"
"$repo/.venv/bin/minirun" spec --bundle "$work/bundle"
"$repo/.venv/bin/python" - "$work/bundle/config.json" "$repo/rootfs/busybox" <<'PY'
import json, sys
path, rootfs = sys.argv[1], sys.argv[2]
config = json.load(open(path))
config["root"]["path"] = rootfs
config["process"]["args"] = ["sh", "-c", 'echo "hostname: $(hostname)"; echo "my pid: $$"; echo "mounts:"; mount']
json.dump(config, open(path, "w"), indent=2)
PY
echo "+ minirun run $work/bundle"
"$repo/.venv/bin/minirun" --root "$work/state" run "$work/bundle"
