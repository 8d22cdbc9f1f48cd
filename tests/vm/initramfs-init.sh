#!/bin/busybox sh
# Stage 1, the /init of the tiny initramfs that run_vm.py builds (busybox-static plus the 9p and
# virtio modules, nothing else). It loads the modules, mounts the host's root filesystem, shared by
# qemu read-only over virtio-9p with the tag "hostroot", and hands PID 1 to stage 2: the script named
# by minirun.vm_init= on the kernel command line (tests/vm/init.sh), now running on the host's tree.
#
# On any failure it exits: the kernel panics, panic=-1 reboots at once and qemu's -no-reboot turns
# that into qemu exiting, so a broken boot costs seconds, not the host's whole timeout.

/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "vm-initramfs: error: $*"
    exit 1
}

mount -t proc proc /proc || fail "cannot mount /proc"

# Insert the modules in the order run_vm.py wrote (every module after the ones it depends on).
while read -r module; do
    [ -n "$module" ] || continue
    insmod "/modules/$module" || fail "insmod $module failed"
done < /modules/order

vm_init=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        minirun.vm_init=*) vm_init="${arg#minirun.vm_init=}" ;;
    esac
done
[ -n "$vm_init" ] || fail "no minirun.vm_init= on the kernel command line"

# cache=loose: the share is read-only and nothing in the VM changes it, so the guest may cache
# freely; this matters under TCG, where every 9p round trip is emulated.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /newroot \
    || fail "cannot mount the host's root over 9p (tag hostroot)"
[ -x "/newroot$vm_init" ] || fail "$vm_init is not an executable file on the host's root"

umount /proc
echo "vm-initramfs: switching to $vm_init"
exec switch_root /newroot "$vm_init"
