#!/bin/sh
# End-to-end smoke test of cairn-init under QEMU/KVM, until the real
# builder initramfs and boot manager exist:
#   1. builds the static cairn-init,
#   2. makes an initramfs the way the builder contract says (/init,
#      /dev/console, empty dirs, /lib/modules/<kver>/...ko and
#      /etc/cairn/modules in dependency order),
#   3. boots Debian's kernel with the cairn.* command line the boot manager
#      would pass (taken from the build report) on a copy-on-write view of
#      a built image, and waits for the real init to run.
# usage: init/scripts/qemu-smoke.sh IMAGE.img REPORT.json KERNEL.deb [extra cmdline...]
# Needs root (mknod for /dev/console), cpio, dpkg-deb, objcopy, jq,
# python3 and qemu-system-x86_64. ACCEL=kvm to use KVM (TCG by default:
# nested KVM is unreliable on CI machines), TIMEOUT (s), WORK (directory).
set -eu
img=$1 report=$2 deb=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK:-$(mktemp -d)}
target=${CARGO_TARGET_DIR:-/work/target-init}
(cd "$here/../.." && CARGO_TARGET_DIR=$target cargo build -q -p cairn-init --release --target x86_64-unknown-linux-musl)

rm -rf "$work/k" "$work/root"
mkdir -p "$work/k" "$work/root"
dpkg-deb -x "$deb" "$work/k"
kver=$(ls "$work/k/lib/modules")
r=$work/root
mkdir -p "$r/dev" "$r/proc" "$r/sys" "$r/run" "$r/sysroot" "$r/etc/cairn" "$r/lib/modules"
mknod -m 600 "$r/dev/console" c 5 1
cp "$target/x86_64-unknown-linux-musl/release/cairn-init" "$r/init"
strip "$r/init" 2>/dev/null || true
python3 "$here/modclosure.py" "$work/k" "$kver" virtio_pci virtio_blk dm-mod dm-verity crc32c_generic ext4 > "$r/etc/cairn/modules"
grep -v '^#' "$r/etc/cairn/modules" | while read -r m; do
    mkdir -p "$r/lib/modules/$(dirname "$m")"
    cp "$work/k/lib/modules/$m" "$r/lib/modules/$m"
done
(cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$work/initrd"

usr_uuid=$(jq -r '.partitions[] | select(.label=="USR-A") | .uuid' "$report")
v=$(jq -r '.usr.verity | "\(.data_blocks):\(.hash_offset):\(.salt)"' "$report")
hash=$(jq -r '.usr.verity.root_hash' "$report")
ver=$(jq -r '.image.version' "$report")
cmdline="console=ttyS0 rw panic=-1 cairn.usr=PARTUUID=$usr_uuid cairn.slot=USR-A cairn.usrhash=$hash cairn.verity=$v cairn.version=$ver $*"
echo "cmdline: $cmdline"
timeout "${TIMEOUT:-180}" qemu-system-x86_64 -accel "${ACCEL:-tcg}" -m 768 -smp 2 -nographic -no-reboot \
    -kernel "$work/k/boot/vmlinuz-$kver" -initrd "$work/initrd" -append "$cmdline" \
    -drive "file=$img,if=virtio,format=raw,snapshot=on" \
    -serial mon:stdio </dev/null | tee "$work/console.log" || true
echo "console log: $work/console.log"
