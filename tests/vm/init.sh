#!/bin/sh
# Stage 2 and PID 1 of the cgroup v2 test VM (see tests/vm/README.md). The initramfs has mounted the
# host's root filesystem read-only over 9p and switch_root'ed here, so this runs the host's own /bin/sh
# and tools. It makes the places the tests write to, mounts cgroup2 as a pure v2 host (systemd) would,
# runs the command that run_vm.py left in the results share, records its exit status there and powers off.
#
# Results share (9p tag "results", mounted at /run/vm-results), written by the host before boot:
#   repo      the repository's path, where the "repo" share is mounted
#   cwd       the directory to run in
#   argv      the command, one argument per line
# and by this script:
#   boot-uptime    /proc/uptime when this script started (kernel + initramfs time)
#   output.txt     the command's stdout and stderr
#   exitcode       its exit status (written last, after output and junit are complete)
#   test-seconds   how long the command ran
#   setup.log      anything that went wrong while setting the VM up
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
RESULTS=/run/vm-results

say() { echo "vm-init: $*"; }

power_off() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 10
    # Still here: returning from PID 1 panics the kernel, panic=-1 reboots, qemu -no-reboot exits.
    exit 1
}

die() {
    say "error: $*"
    [ -d "$RESULTS" ] && echo "error: $*" >> "$RESULTS/setup.log"
    power_off
}

mount -t proc -o nosuid,nodev,noexec proc /proc || die "mount /proc"
read -r boot_uptime _ < /proc/uptime
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || die "mount /sys"
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || die "mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts || die "mount /dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm || die "mount /dev/shm"
# The host's root is read-only: these are the writable places.
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run || die "mount /run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp || die "mount /tmp"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /var/tmp || die "mount /var/tmp"

mkdir -p "$RESULTS"
# cache=none: every write goes straight through to the host's directory.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none results "$RESULTS" \
    || die "cannot mount the results share (tag results)"
echo "$boot_uptime" > "$RESULTS/boot-uptime"
# The repository at its host path again, should it sit below one of the tmpfs mounts above.
repo=$(cat "$RESULTS/repo" 2>/dev/null) || die "no repo in the results share"
mkdir -p "$repo" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro repo "$repo" \
    || die "cannot mount the repository share (tag repo) on $repo"
say "up after ${boot_uptime}s"

# cgroup v2 only (the kernel has cgroup_no_v1=all), with systemd's mount options.
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup \
    || die "mount cgroup2 on /sys/fs/cgroup"
for controller in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$controller" > /sys/fs/cgroup/cgroup.subtree_control \
        || echo "error: cannot enable controller $controller" >> "$RESULTS/setup.log"
done
# The no-internal-process rule: a cgroup with processes cannot hand controllers to children, so
# PID 1 (and everything it starts) leaves the root for a leaf; the root keeps only kernel threads.
mkdir /sys/fs/cgroup/init || die "mkdir /sys/fs/cgroup/init"
echo $$ > /sys/fs/cgroup/init/cgroup.procs || die "cannot move PID 1 into /sys/fs/cgroup/init"
say "cgroup2 controllers enabled: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

ip link set lo up 2>/dev/null || true
hostname vm 2>/dev/null || true

[ -f "$RESULTS/argv" ] && [ -f "$RESULTS/cwd" ] || die "no argv or cwd in the results share"
set --
while IFS= read -r arg; do
    set -- "$@" "$arg"
done < "$RESULTS/argv"
cd "$(cat "$RESULTS/cwd")" || die "cannot cd to $(cat "$RESULTS/cwd")"

say "running: $*"
read -r start _ < /proc/uptime
env -i PATH="$PATH" HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb PYTHONDONTWRITEBYTECODE=1 \
    MINIRUN_IN_VM=1 "$@" < /dev/null > "$RESULTS/output.txt" 2>&1
rc=$?
read -r end _ < /proc/uptime
echo "$start $end" | awk '{ printf "%.2f\n", $2 - $1 }' > "$RESULTS/test-seconds"
cat "$RESULTS/output.txt"
sync
echo "$rc" > "$RESULTS/exitcode.tmp" && mv "$RESULTS/exitcode.tmp" "$RESULTS/exitcode"
say "exit status $rc"
umount "$RESULTS"
power_off
