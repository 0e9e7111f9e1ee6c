#!/usr/bin/env bash
# Dev aid: boots a Cairn image with cairn-boot under QEMU/OVMF (TCG) in a
# few scenarios and checks the serial log.
#
#   boot/scripts/qemu-smoke.sh IMAGE [SCENARIO...]
#
# IMAGE is a built image (`cairn build ... --boot-efi cairn-boot.efi`, which
# already writes USR-A's slot footer, kernel and initramfs). The freshly
# built cairn-boot.efi ($CAIRN_BOOT_EFI, default
# $CARGO_TARGET_DIR/x86_64-unknown-uefi/release/cairn-boot.efi) is copied
# over \EFI\BOOT\BOOTX64.EFI of a sparse copy of the image for each scenario.
# Scenarios (default: all):
#   normal       USR-A successful: boots A, kernel command line carries cairn.*
#   unbootable   both slots priority 0: message, no kernel, reset
#   primary-gpt  primary GPT header corrupted before boot
#   trial-b      USR-B = copy of USR-A, prio 2 tries 1: boots B, tries 1->0
# Needs qemu-system-x86_64, ovmf, mtools, cgpt (vboot-utils), python3.
set -euo pipefail

img=${1:?usage: $0 IMAGE [SCENARIO...]}
shift
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(normal unbootable primary-gpt trial-b)
efi=${CAIRN_BOOT_EFI:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-uefi/release/cairn-boot.efi}
ovmf_code=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE.fd}
ovmf_vars=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS.fd}
timeout_s=${QEMU_TIMEOUT:-240}
work=${WORK:-$(mktemp -d /tmp/cairn-boot-smoke.XXXXXX)}
mkdir -p "$work"
echo "work dir: $work"

# Byte offset and size of partition N (from the GPT, via sgdisk-free python).
part() { # part IMG N -> "offset size"
    python3 - "$1" "$2" <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb'); n = int(sys.argv[2])
f.seek(512); h = f.read(92)
lba, count, esz = struct.unpack_from('<QII', h, 72)
f.seek(lba * 512 + (n - 1) * esz); e = f.read(esz)
first, last = struct.unpack_from('<QQ', e, 32)
print(first * 512, (last - first + 1) * 512)
PY
}

fail=0
check() { # check LOG PATTERN DESCRIPTION
    if grep -qaE -- "$2" "$1"; then echo "  ok: $3"; else echo "  FAIL: $3 (no /$2/ in $1)"; fail=1; fi
}
check_not() {
    if grep -qaE -- "$2" "$1"; then echo "  FAIL: $3 (found /$2/ in $1)"; fail=1; else echo "  ok: $3"; fi
}

run() { # run NAME IMG -> log file $work/NAME.log
    local vars="$work/$1.vars.fd"
    cp "$ovmf_vars" "$vars"
    timeout "$timeout_s" qemu-system-x86_64 -accel tcg -m 1024 -nographic -no-reboot \
        -drive if=pflash,format=raw,readonly=on,file="$ovmf_code" \
        -drive if=pflash,format=raw,file="$vars" \
        -drive file="$2",format=raw,if=virtio \
        -serial mon:stdio </dev/null >"$work/$1.log" 2>&1 && rc=0 || rc=$?
    echo "$rc" >"$work/$1.rc" # 124: still running at the timeout
    tr -d '\r' <"$work/$1.log" >"$work/$1.txt"
    grep -a 'cairn-boot:' "$work/$1.txt" | sed 's/^/    | /' || true
}

prepare() { # prepare NAME -> image path
    local copy="$work/$1.img"
    cp --sparse=always "$img" "$copy"
    mcopy -i "$copy@@1M" -o "$efi" ::/EFI/BOOT/BOOTX64.EFI
    echo "$copy"
}

for s in "${scenarios[@]}"; do
    echo "== $s"
    i=$(prepare "$s")
    case $s in
    normal)
        run "$s" "$i"
        t="$work/$s.txt"
        check "$t" 'cairn-boot: skipping USR-B partition 4 \(prio 0 tries 0 successful 0\): priority 0' "USR-B skipped"
        check "$t" 'cairn-boot: USR-A prio 1 successful, booting ' "decision line"
        check "$t" 'Linux version 6\.1' "kernel started"
        check "$t" 'Command line:.* cairn\.usr=PARTUUID=[0-9a-f-]{36} cairn\.slot=USR-A cairn\.usrhash=[0-9a-f]{64} cairn\.verity=[0-9]+:[0-9]+:[0-9a-f]{64} cairn\.version=' "cmdline"
        check "$t" 'Unpacking initramfs|Freeing initrd memory|Run /init' "initramfs handed over"
        ;;
    unbootable)
        cgpt add -i 3 -P 0 "$i"
        run "$s" "$i"
        t="$work/$s.txt"
        check "$t" 'cairn-boot: no bootable slot: USR-A partition 3 \(prio 0 tries 0 successful 1\): priority 0; USR-B partition 4' "no-slot message"
        check "$t" 'cairn-boot: resetting in 10 seconds' "reset announced"
        check_not "$t" 'Linux version' "no kernel started"
        # -no-reboot turns the reset into a QEMU exit (timeout says 124).
        check "$work/$s.rc" '^0$' "machine reset (QEMU exited before the timeout)"
        ;;
    primary-gpt)
        # Flip a byte of the primary header's disk GUID (header CRC breaks).
        printf '\xff' | dd of="$i" bs=1 seek=$((512 + 60)) conv=notrunc status=none
        run "$s" "$i"
        t="$work/$s.txt"
        check "$t" 'cairn-boot: USR-A prio 1 successful, booting ' "decision line"
        check "$t" 'Linux version 6\.1' "kernel started"
        echo "  after boot: $(sgdisk -v "$i" 2>&1 | grep -iE 'problem|No problems|corrupt' | head -2 | tr '\n' ' ')"
        ;;
    trial-b)
        read -r a_off a_size < <(part "$i" 3)
        read -r b_off b_size < <(part "$i" 4)
        [ "$a_size" = "$b_size" ] || { echo "  FAIL: A and B differ in size"; fail=1; continue; }
        dd if="$i" of="$i" bs=1M skip=$((a_off >> 20)) seek=$((b_off >> 20)) count=$((a_size >> 20)) conv=notrunc,sparse status=none
        cgpt add -i 4 -P 2 -T 1 -S 0 "$i"
        run "$s" "$i"
        t="$work/$s.txt"
        check "$t" 'cairn-boot: skipping USR-A partition 3 \(prio 1 tries 0 successful 1\): lower priority' "USR-A skipped"
        check "$t" 'cairn-boot: USR-B prio 2 tries 1->0, booting ' "decision line"
        check "$t" 'Command line:.* cairn\.slot=USR-B ' "cmdline names USR-B"
        after=$(cgpt show -i 4 -A "$i")
        echo "  cgpt -i 4 attributes after boot: $after"
        check <(cgpt show -i 4 -T "$i") '^0$' "USR-B tries now 0"
        check <(cgpt show -i 4 -P "$i") '^2$' "USR-B priority still 2"
        ;;
    *) echo "unknown scenario $s"; fail=1 ;;
    esac
done
[ $fail = 0 ] && echo "all scenarios passed" || echo "some checks FAILED"
exit $fail
