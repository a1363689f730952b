#!/bin/sh
# A Debian cloud disk made the way imageci does not make disks, for the import tests:
# debootstrap (not mmdebstrap), an MBR partition table (not GPT), SYSLINUX on a FAT /boot
# partition (not GRUB), BIOS only, the root filesystem second, a plain uncompressed qcow2.
# Mount-free (no loop devices): mke2fs -d, mkfs.fat + mtools, syslinux --offset. (debootstrap does not
# resolve virtual packages: dbus and python3-cffi-backend are named for what provides them.)
#
# usage: otherdisk.sh OUT.qcow2 WORKDIR [MIRROR]
set -eu
out=$1 work=$2 mirror=${3:-http://deb.debian.org/debian}
root=$work/root raw=$work/disk.raw
mkdir -p "$work/cache"
rm -rf "$root"
debootstrap --variant=minbase --cache-dir="$work/cache" \
  --include=systemd-sysv,udev,dbus,python3-cffi-backend,linux-image-cloud-amd64,initramfs-tools,cloud-init,cloud-guest-utils,openssh-server,systemd-resolved,iproute2,netbase \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

uuid=8d1c2a9e-0b5e-4c51-9a4e-0f0e6b3c1d22
cat >"$root/etc/fstab" <<EOF
UUID=$uuid / ext4 errors=remount-ro 0 1
EOF
mkdir -p "$root/etc/cloud/cloud.cfg.d"
printf 'datasource_list: [NoCloud, None]\nlocale: C.UTF-8\n' >"$root/etc/cloud/cloud.cfg.d/90-other.cfg"  # minbase: no locales
chroot "$root" systemctl enable systemd-networkd systemd-resolved ssh >/dev/null 2>&1
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
rm -f "$root"/etc/ssh/ssh_host_*key* && : >"$root/etc/machine-id" && rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/* "$root/etc/hostname"

# 2 GiB disk: partition 1 FAT32 /boot (active, SYSLINUX) at 1 MiB, 127 MiB; partition 2 the ext4 root
rm -f "$raw" && truncate -s 2G "$raw"
printf 'label: dos\nstart=2048, size=260096, type=c, bootable\nstart=262144, type=83\n' | sfdisk -q "$raw"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
boot_at=$((2048 * 512)) root_at=$((262144 * 512))
mkfs.fat -F 32 -s 1 -S 512 --offset 2048 -n BOOT "$raw" $((260096 / 2)) >/dev/null
syslinux --install --offset "$boot_at" "$raw"
kernel=$(ls "$root"/boot/vmlinuz-* | tail -n1) initrd=$(ls "$root"/boot/initrd.img-* | tail -n1)
cat >"$work/syslinux.cfg" <<EOF
DEFAULT debian
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$uuid ro console=ttyS0
EOF
export MTOOLS_SKIP_CHECK=1
mcopy -i "$raw@@$boot_at" "$kernel" ::/vmlinuz
mcopy -i "$raw@@$boot_at" "$initrd" ::/initrd.img
mcopy -i "$raw@@$boot_at" "$work/syslinux.cfg" ::/syslinux.cfg
mke2fs -q -t ext4 -b 4096 -U "$uuid" -L root -d "$root" -E offset="$root_at" "$raw" $(((2147483648 - root_at) / 4096))
qemu-img convert -f raw -O qcow2 "$raw" "$out"
rm -f "$raw"
