#!/usr/bin/env bash
# Assemble the minimal busybox root filesystem used by minirun's integration
# tests, at rootfs/busybox/ next to this script, plus the static `probe`
# helper at /usr/bin/probe inside it.
#
#   bash rootfs/build.sh
#
# Idempotent: if rootfs/busybox/ already exists, the only thing that may
# change is /usr/bin/probe, rebuilt when probe.c is newer than it.  The
# first build happens in a temporary directory that is renamed into place
# at the end, so an interrupted build never leaves a half-built rootfs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/busybox"
probe_src="$here/probe.c"
busybox_bin="/bin/busybox"
cc="${CC:-cc}"

die() {
    echo "rootfs/build.sh: error: $*" >&2
    exit 1
}

# True when the ELF file has no program interpreter, i.e. is static.
is_static() {
    if command -v readelf >/dev/null 2>&1; then
        readelf -l "$1" 2>/dev/null | grep -q 'LOAD' || return 1
        ! readelf -l "$1" 2>/dev/null | grep -q 'INTERP'
    elif command -v file >/dev/null 2>&1; then
        file -L "$1" | grep -Eq 'statically linked|static-pie linked'
    else
        die "need readelf or file to inspect $1"
    fi
}

compile_probe() { # OUTPUT
    "$cc" -static -O2 -Wall -Wextra -o "$1" "$probe_src" ||
        die "compiling probe.c failed (static glibc missing? run \`make deps\`)"
}

# --- preconditions ---------------------------------------------------------
[[ -f "$probe_src" ]] || die "$probe_src not found"
command -v "$cc" >/dev/null 2>&1 ||
    die "no C compiler ($cc); run \`make deps\`"
[[ -x "$busybox_bin" ]] ||
    die "$busybox_bin is missing; install busybox-static (run \`make deps\`)"
is_static "$busybox_bin" ||
    die "$busybox_bin is not statically linked (the dynamic 'busybox' package is installed?); install busybox-static (run \`make deps\`)"

# Serialise concurrent builds (e.g. several test workers starting at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$here/.build.lock"
    flock 9
fi

owner_root() { # PATH...: chown when we can; rootless builds keep our uid
    if [[ $EUID -eq 0 ]]; then
        chown -hR 0:0 "$@"
    fi
}

# --- already built: only refresh the probe ---------------------------------
if [[ -d "$dest" ]]; then
    probe="$dest/usr/bin/probe"
    if [[ "$probe_src" -nt "$probe" ]]; then
        # Build next to the target and rename, so a running container never
        # sees a truncated binary.
        tmp_probe="$dest/usr/bin/.probe.tmp.$$"
        trap 'rm -f "$tmp_probe"' EXIT
        compile_probe "$tmp_probe"
        owner_root "$tmp_probe"
        chmod 0755 "$tmp_probe"
        mv -f "$tmp_probe" "$probe"
        echo "rootfs/build.sh: rebuilt $probe"
    fi
    exit 0
fi

# --- first build -------------------------------------------------------------
# Leftovers of a build that was killed hard (the lock makes this safe).
rm -rf "$here"/.busybox.tmp.*

tmp="$(mktemp -d "$here/.busybox.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"   # mktemp -d creates it 0700; this becomes "/"

for d in bin sbin usr/bin usr/sbin etc root home/user tmp proc sys dev run \
         var/tmp mnt; do
    mkdir -p "$tmp/$d"
done
chmod 0700 "$tmp/root"
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"

cp "$busybox_bin" "$tmp/bin/busybox"
chmod 0755 "$tmp/bin/busybox"

# Applet symlinks at their canonical paths, all pointing at /bin/busybox
# (absolute, so they resolve inside the container's root).
while IFS= read -r applet; do
    [[ -n "$applet" ]] || continue
    link="$tmp/$applet"
    [[ -e "$link" || -L "$link" ]] && continue
    mkdir -p "$(dirname "$link")"
    ln -s /bin/busybox "$link"
done < <("$busybox_bin" --list-full)

cat >"$tmp/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$tmp/etc/group" <<'EOF'
root:x:0:
tty:x:5:
users:x:100:
user:x:1000:
nogroup:x:65534:
EOF
cat >"$tmp/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
chmod 0644 "$tmp/etc/passwd" "$tmp/etc/group" "$tmp/etc/hosts"
# Deliberately no /etc/hostname: tests check the UTS hostname, not a file.
rm -f "$tmp/etc/hostname"

compile_probe "$tmp/usr/bin/probe"
chmod 0755 "$tmp/usr/bin/probe"

owner_root "$tmp"
if [[ $EUID -eq 0 ]]; then
    chown 1000:1000 "$tmp/home/user"
fi

mv -T "$tmp" "$dest"
trap - EXIT
echo "rootfs/build.sh: built $dest"
