#!/usr/bin/env bash
# Builds the bootable Open Connect appliance disk image from Debian packages:
#   images/build.sh [--out FILE] [--size SIZE] [--suite SUITE] [--mirror URL] [--profile P]
# Default: images/out/oca-appliance.img, 2G, bookworm, http://deb.debian.org/debian, release
# (`--profile dev` takes the debug binaries a test run has built: hwtests/tests/image_boot.rs).
# Writes FILE.sha256 beside the image (`sha256sum -c` format).
# Needs root, mmdebstrap, sfdisk, losetup, mkfs.ext4, mkfs.vfat, mkfs.xfs, extlinux and mtools
# (apt-get install mmdebstrap fdisk dosfstools xfsprogs extlinux syslinux-common mtools
# dpkg-dev), and cargo-deb for the appliance package it installs (docs/packaging.md).
#
# Layout (MBR; boots with BIOS through SYSLINUX's MBR and EXTLINUX, and with UEFI through GRUB
# from the EFI system partition's removable-media path):
#   p1 OCAROOT   ext4  Debian (kernel, systemd), our binaries, units and setup
#   p2 OCACONFIG vfat  the appliance's configuration: oca.conf, tls/, service configs
#   p3 OCASTORE0 xfs   a first store disk (real appliances label their NVMe disks OCASTORE<N>)
#   p4 OCAESP    vfat  EFI system partition: EFI/BOOT/BOOTX64.EFI, a GRUB that reads
#                      /boot/grub/grub.cfg from OCAROOT
# See images/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$REPO/images/out/oca-appliance.img
SIZE=2G
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
CACHE=${OCA_IMAGE_CACHE:-/var/cache/oca-images}
PROFILE=release
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (loop devices, mounts, chroot)" >&2; exit 1; }
for t in mmdebstrap sfdisk losetup mkfs.ext4 mkfs.vfat mkfs.xfs extlinux mmd mcopy cargo-deb dpkg-shlibdeps; do
  command -v $t >/dev/null || { echo "build.sh: $t not found (see the header of $0)" >&2; exit 1; }
done
SYSLINUX=/usr/lib/syslinux
[ -f $SYSLINUX/mbr/mbr.bin ] || { echo "build.sh: $SYSLINUX/mbr/mbr.bin missing (apt-get install syslinux-common)" >&2; exit 1; }

t0=$(date +%s)
case $PROFILE in
  release|dev) ;;
  *) echo "build.sh: --profile is release or dev, not $PROFILE" >&2; exit 2 ;;
esac
echo "build.sh: $PROFILE packages"
# The appliance is installed from its Debian package (packaging/build-debs.sh builds it from
# the $PROFILE binaries), as on any Debian machine: the same files, users and maintainer
# scripts, and dpkg knows them, so a later package upgrades them (images/README.md, "Upgrades").
DEBS=$(mktemp -d /var/tmp/oca-image-debs.XXXXXX)
# Removed if the package build fails; `cleanup` below takes over once the image's work starts.
trap 'rm -rf "$DEBS"' EXIT
"$REPO/packaging/build-debs.sh" --profile "$PROFILE" --fast --out "$DEBS" >&2
APPLIANCE_DEB=$(ls "$DEBS"/oca-appliance_*_amd64.deb)

mkdir -p "$(dirname "$OUT")" "$CACHE/debs"
WORK=$(mktemp -d /var/tmp/oca-image.XXXXXX)
MNT=$WORK/root
# Loop devices are found by their backing file: part_loop runs in a command substitution, a
# subshell, so a list it kept would be lost (each build leaked its three loop devices so).
detach_loops() { losetup -j "$IMG" -n -O NAME 2>/dev/null | xargs -r -n1 losetup -d; }
cleanup() {
  set +e
  rm -rf "$DEBS"
  umount "$MNT/var/cache/apt/archives" 2>/dev/null
  umount "$MNT" 2>/dev/null
  detach_loops
  rm -rf "$WORK"
}
trap cleanup EXIT

IMG=$WORK/image.raw
truncate -s "$SIZE" "$IMG"
# Config, store and EFI partitions at the end, the root takes the rest.
total=$(( $(stat -c %s "$IMG") / 512 ))
cfg_sectors=$((64 * 2048)); store_sectors=$((320 * 2048)); esp_sectors=$((32 * 2048))
root_sectors=$((total - 2048 - cfg_sectors - store_sectors - esp_sectors))
esp_start=$((2048 + root_sectors + cfg_sectors + store_sectors))
sfdisk -q "$IMG" <<PARTS
label: dos
start=2048, size=$root_sectors, type=83, bootable
start=$((2048 + root_sectors)), size=$cfg_sectors, type=c
start=$((2048 + root_sectors + cfg_sectors)), size=$store_sectors, type=83
start=$esp_start, size=$esp_sectors, type=ef
PARTS
# One loop device per partition (offset + size): partition scanning on loop devices is not
# available in every container or CI sandbox.
part_loop() { # start-sector sectors
  losetup --find --show --offset $(($1 * 512)) --sizelimit $(($2 * 512)) "$IMG"
}
ROOT_DEV=$(part_loop 2048 $root_sectors)
CFG_DEV=$(part_loop $((2048 + root_sectors)) $cfg_sectors)
STORE_DEV=$(part_loop $((2048 + root_sectors + cfg_sectors)) $store_sectors)
ESP_DEV=$(part_loop $esp_start $esp_sectors)
# No 64bit feature: EXTLINUX 6.04 cannot boot from a 64bit ext4.
mkfs.ext4 -q -O ^64bit -L OCAROOT "$ROOT_DEV"
mkfs.vfat -n OCACONFIG "$CFG_DEV" >/dev/null
mkfs.xfs -q -f -L OCASTORE0 "$STORE_DEV"
mkfs.vfat -F 16 -n OCAESP "$ESP_DEV" >/dev/null
mkdir -p "$MNT"
mount "$ROOT_DEV" "$MNT"

echo "build.sh: mmdebstrap $SUITE from $MIRROR"
# mmdebstrap, not debootstrap: it installs with one apt run instead of dpkg package by package,
# the build takes half the time (images/README.md). The downloaded packages are
# kept in $CACHE/debs, bind-mounted as the root's apt archive (and never unlinked), so a rebuild
# downloads only what changed. update-initramfs is diverted to a no-op meanwhile: the kernel's
# postinst and initramfs-tools' trigger would each build an initramfs (25 s apiece), both before
# the modules below are pruned; it is built once, at the end. The merged-/usr hook makes /usr
# merged itself, as debootstrap does: without it bookworm's mmdebstrap installs `usrmerge`,
# which brings perl (50 MiB) into the image.
mmdebstrap --variant=minbase --skip=essential/unlink \
  --hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr \
  --include=systemd,systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,iproute2,openssl,ca-certificates,procps,xfsprogs,wrk,prometheus-node-exporter,grub-efi-amd64-bin \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="mount --bind '$CACHE/debs' \"\$1/var/cache/apt/archives\"" \
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
  --essential-hook='printf "#!/bin/sh\nexit 0\n" > "$1/usr/sbin/update-initramfs"; chmod 755 "$1/usr/sbin/update-initramfs"' \
  --customize-hook='umount "$1/var/cache/apt/archives"' \
  "$SUITE" "$MNT" "$MIRROR" > "$WORK/mmdebstrap.log" 2>&1 \
  || { tail -30 "$WORK/mmdebstrap.log" >&2; exit 1; }
KVER=$(ls "$MNT/lib/modules" | sort -V | tail -1)

echo "build.sh: installing oca ($KVER)"
cp "$APPLIANCE_DEB" "$MNT/tmp/"
# Nothing starts in the chroot (systemctl knows it is in one; policy-rc.d makes sure).
printf '#!/bin/sh\nexit 101\n' > "$MNT/usr/sbin/policy-rc.d"; chmod 755 "$MNT/usr/sbin/policy-rc.d"
chroot "$MNT" dpkg -i "/tmp/$(basename "$APPLIANCE_DEB")" > "$WORK/dpkg.log" 2>&1 \
  || { tail -30 "$WORK/dpkg.log" >&2; exit 1; }
rm -f "$MNT/usr/sbin/policy-rc.d" "$MNT/tmp/$(basename "$APPLIANCE_DEB")"
mkdir -p "$MNT/usr/lib/oca"
# The image's own manual (oca.conf keys), where oca-setup and its unit point.
install -m644 "$REPO/images/README.md" "$MNT/usr/share/doc/oca-appliance/image.md"
install -m644 "$REPO/images/oca.conf.example" "$MNT/usr/share/doc/oca-appliance/"
cp -r "$REPO/images/rootfs/." "$MNT/"
chmod 755 "$MNT/usr/lib/oca/oca-setup" "$MNT/usr/lib/oca/oca-bgp-toml"
cat > "$MNT/etc/fstab" <<FSTAB
LABEL=OCAROOT / ext4 noatime,errors=remount-ro 0 1
FSTAB
echo oca-appliance > "$MNT/etc/hostname"
# No password login: the console shows the boot, operators use the config partition.
chroot "$MNT" passwd -l root >/dev/null
chroot "$MNT" systemd-sysusers >/dev/null 2>&1
chroot "$MNT" systemctl enable -q oca-setup.service oca-daemon.service fill-agent.service systemd-networkd.service
# The image is a server: no suspend/hibernate targets, no getty on the VGA console.
chroot "$MNT" systemctl mask -q getty@tty1.service

# Kernel modules a video appliance never loads (graphics, sound, video capture, radios).
for d in drivers/gpu sound drivers/media drivers/net/wireless net/wireless net/mac80211 drivers/bluetooth net/bluetooth drivers/staging drivers/iio drivers/input/joystick drivers/input/touchscreen drivers/hid drivers/isdn drivers/infiniband/hw/hfi1 drivers/net/can; do
  rm -rf "$MNT/lib/modules/$KVER/kernel/$d"
done
chroot "$MNT" depmod -a "$KVER"
rm "$MNT/usr/sbin/update-initramfs"
chroot "$MNT" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
chroot "$MNT" update-initramfs -c -k "$KVER" > "$WORK/initramfs.log" 2>&1 \
  || { tail -30 "$WORK/initramfs.log" >&2; exit 1; }
rm -rf "$MNT"/var/cache/apt/*.bin "$MNT"/var/cache/apt/archives/*.deb "$MNT"/var/lib/apt/lists/* "$MNT"/var/log/*.log

echo "build.sh: bootloaders (BIOS: EXTLINUX; UEFI: GRUB)"
# One kernel command line for both: an operator's oca.<key>= arguments go on it in both files.
CMDLINE="root=LABEL=OCAROOT ro console=tty0 console=ttyS0,115200"
mkdir -p "$MNT/boot/syslinux"
cp $SYSLINUX/modules/bios/{ldlinux.c32,libcom32.c32,libutil.c32,menu.c32} "$MNT/boot/syslinux/"
cat > "$MNT/boot/syslinux/syslinux.cfg" <<CFG
# Kernel arguments oca.<key>=<value> (oca.id=, oca.credential=, oca.control_plane=, ...) may be
# added to APPEND; they win over oca.conf on the OCACONFIG partition (images/README.md).
SERIAL 0 115200
PROMPT 0
TIMEOUT 10
DEFAULT oca
LABEL oca
  MENU LABEL Open Connect appliance ($KVER)
  LINUX /boot/vmlinuz-$KVER
  INITRD /boot/initrd.img-$KVER
  APPEND $CMDLINE
CFG
# UEFI: the firmware starts EFI/BOOT/BOOTX64.EFI from the EFI system partition (the removable-
# media path: no NVRAM entry to write, the disk boots in any machine). It is a GRUB image with
# the modules it needs built in, which finds OCAROOT by label and reads /boot/grub/grub.cfg
# there, so the kernel, the initrd and the command line are the root filesystem's, as EXTLINUX's.
mkdir -p "$MNT/boot/grub"
cat > "$MNT/boot/grub/grub.cfg" <<CFG
# Kernel arguments oca.<key>=<value> may be added to the linux line, as to syslinux.cfg's APPEND.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
menuentry "Open Connect appliance ($KVER)" {
  linux /boot/vmlinuz-$KVER $CMDLINE
  initrd /boot/initrd.img-$KVER
}
CFG
cat > "$MNT/tmp/grub-embedded.cfg" <<'CFG'
search --no-floppy --label OCAROOT --set=root
configfile ($root)/boot/grub/grub.cfg
CFG
chroot "$MNT" grub-mkstandalone --format=x86_64-efi --output=/tmp/BOOTX64.EFI \
  --modules="part_msdos ext2 search search_label configfile linux normal serial terminal echo" \
  --locales= --fonts= --themes= "boot/grub/grub.cfg=/tmp/grub-embedded.cfg"
# mtools, not a mount: kernels without vfat (some CI sandboxes) build the image too.
MTOOLS_SKIP_CHECK=1 mmd -i "$ESP_DEV" ::/EFI ::/EFI/BOOT
MTOOLS_SKIP_CHECK=1 mcopy -i "$ESP_DEV" "$MNT/tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
rm -f "$MNT/tmp/BOOTX64.EFI" "$MNT/tmp/grub-embedded.cfg"
extlinux --install "$MNT/boot/syslinux" 2> "$WORK/extlinux.log" >&2 || { cat "$WORK/extlinux.log" >&2; exit 1; }
# Deleted packages and modules leave written blocks behind: discard them so the image stays sparse.
fstrim "$MNT" 2>/dev/null || true
umount "$MNT"
detach_loops
# The MBR's boot code (partition table kept) loads the active partition's boot sector.
dd if=$SYSLINUX/mbr/mbr.bin of="$IMG" bs=440 count=1 conv=notrunc status=none
mv "$IMG" "$OUT"
(cd "$(dirname "$OUT")" && sha256sum "$(basename "$OUT")" > "$(basename "$OUT").sha256")
alloc=$(du -k "$OUT" | cut -f1)
echo "build.sh: $OUT: $(du -h --apparent-size "$OUT" | cut -f1) disk, $((alloc / 1024)) MiB written, in $(( $(date +%s) - t0 )) s"
