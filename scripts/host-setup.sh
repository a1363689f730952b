#!/usr/bin/env bash
# Install the system packages imageci needs on Debian 12 (idempotent).
# Uses sudo when not root. Safe to run again: installs only what is missing.
#
#   scripts/host-setup.sh            # runtime: mmdebstrap, bubblewrap, python venv
#   scripts/host-setup.sh --test     # + what the test suite starts for real (PostgreSQL, a registry, …)
set -euo pipefail

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "host-setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "host-setup: not root and no sudo; run as root" >&2; exit 1; }
  SUDO="sudo"
fi

packages=(
  mmdebstrap          # the Debian builder, and what it recommends for our use:
  arch-test gpg libdistro-info-perl libdpkg-perl mount debian-archive-keyring
  bubblewrap          # sandbox testbed namespaces
  libseccomp2         # the sandbox's seccomp filter (loaded through ctypes)
  util-linux          # unshare, mount, nsenter (archive-only network), loop devices
  python3 python3-venv python3-pip
  ca-certificates
  uidmap              # mmdebstrap --mode=unshare for non-root builds
  git make
  podman runc skopeo  # podman testbed (runc: crun rejects hybrid cgroup layouts); skopeo: `imageci import`
  zstd                # `imageci import` of zstd-compressed tarballs and layers
  qemu-system-x86 qemu-utils e2fsprogs  # qemu testbed: VM disks and direct kernel boot
  openssh-client      # ssh testbed, and talking to VMs
  rsync               # tmt (the peer in bench/podman_vs_tmt.py) needs it
  dpkg-dev            # dpkg-source, for DEP-8 source trees fetched with apt-get source
  squashfs-tools      # the LXD form of every version (root.squashfs), served by the channels' feeds
  lxd lxd-client      # the lxd testbed (scripts/lxd-up.sh starts and initialises the daemon)
  openssl             # the lxd testbed's run feed: a throwaway certificate for its HTTPS
  qemu-user-static binfmt-support  # foreign architectures (arm64 on x86_64): built and tested through binfmt_misc
  qemu-system-arm     # arm64 images booted as VMs (qemu-system-aarch64, TCG on x86_64)
  openscap-utils      # the compliance gate: oscap-chroot evaluates a root file system offline
  diffoscope-minimal  # `imageci repro`: why a rebuild differs (tar archives and text)
  ovmf                # cloud disk images boot through UEFI firmware (SeaBIOS for BIOS comes with qemu)
  fdisk dosfstools mtools  # bootable disks: GPT (sfdisk), the EFI system partition and the NoCloud seed (FAT)
  grub-common         # grub-mkimage (the modules it links come from the image itself)
)
if [ "$want_test" = 1 ]; then
  packages+=(postgresql)      # the catalog is tested against a real server
  packages+=(openssh-server)  # the ssh testbed is tested against a real sshd on 127.0.0.1
  packages+=(autopkgtest)     # DEP-8 verdict parity is checked against the real autopkgtest
  packages+=(buildah umoci)   # `imageci import` is tested with images other tools built and unpacked
  packages+=(docker-registry) # and pulled from a real registry (the tests start their own on 127.0.0.1)
  packages+=(busybox-static)  # the smallest image LXD boots (/sbin/init), for the feed's tests
  packages+=(redis-server)    # Celery's broker for the workers' tests (they start their own on 127.0.0.1)
  packages+=(chromium chromium-driver)  # the dashboard is tested in a real headless browser (Selenium)
  packages+=(rpm)             # BOMs of rpm-based images: test packages made with rpmbuild, read with rpm --dbpath
  packages+=(ssg-debian)      # Debian's SCAP content (Debian 10/11 only): shown notapplicable on bookworm
  packages+=(debootstrap syslinux syslinux-common)  # a cloud disk made another way (tests/otherdisk.sh) to import
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "host-setup: all system packages present"
fi

# PostgreSQL's Debian package starts a cluster; the tests start their own
# private server instead, so the packaged one is not needed running.
if [ "$want_test" = 1 ] && command -v pg_lsclusters >/dev/null; then
  $SUDO pg_ctlcluster --force 15 main stop >/dev/null 2>&1 || true
fi
# The same for the registry: its packaged service would listen on all interfaces.
if [ "$want_test" = 1 ] && [ -x /etc/init.d/docker-registry ]; then
  $SUDO /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi

# gitlab-ci-local (npm) runs the pipelines `imageci ci gitlab` writes, in the tests (node ≥ 18).
GCL_VERSION=4.64.1
if [ "$want_test" = 1 ] && [ "$(gitlab-ci-local --version 2>/dev/null | tail -1)" != "$GCL_VERSION" ]; then
  command -v npm >/dev/null || $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
  $SUDO npm install -g --no-audit --no-fund "gitlab-ci-local@$GCL_VERSION" >/dev/null 2>&1 \
    || echo "host-setup: warning: npm could not install gitlab-ci-local@$GCL_VERSION" >&2
fi

# The packaged Redis would listen for anyone; the tests (and `imageci worker` setups) start their own.
if [ "$want_test" = 1 ] && [ -x /etc/init.d/redis-server ]; then
  $SUDO /etc/init.d/redis-server stop >/dev/null 2>&1 || true
fi

# binfmt_misc: without systemd nothing mounts it or registers qemu-user's handlers.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    || echo "host-setup: warning: cannot mount binfmt_misc; foreign-architecture images will be skipped" >&2
fi
if [ -e /proc/sys/fs/binfmt_misc/status ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    && command -v update-binfmts >/dev/null; then
  $SUDO update-binfmts --enable >/dev/null 2>&1 \
    || echo "host-setup: warning: could not register qemu-aarch64 with binfmt_misc" >&2
fi

# podman: runc as the runtime, and default rlimits no higher than this host's
# (podman's defaults exceed them here and runc then refuses to start anything).
# imageci passes both explicitly anyway; this makes plain `podman run` work too.
if command -v podman >/dev/null; then
  conf=/etc/containers/containers.conf.d/50-imageci.conf
  nofile=$(ulimit -Hn); nproc=4096
  [ "$nofile" = unlimited ] && nofile=1048576
  want=$(printf '# written by imageci scripts/host-setup.sh\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n\n[engine]\nruntime = "runc"\n' \
    "$nofile" "$nofile" "$nproc" "$nproc")
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    $SUDO mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$want" | $SUDO tee "$conf" >/dev/null
    echo "host-setup: wrote $conf"
  fi
fi

# DEP-8 suites come from Debian source packages (`apt-get source`): enable deb-src.
src=/etc/apt/sources.list.d/imageci-deb-src.sources
if [ ! -f "$src" ]; then
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    | $SUDO tee "$src" >/dev/null
  $SUDO apt-get update -qq || echo "host-setup: warning: apt-get update failed after adding deb-src" >&2
  echo "host-setup: enabled deb-src ($src)"
fi

# autopkgtest's unshare backend (the DEP-8 peer) maps root through /etc/subuid.
if [ "$want_test" = 1 ]; then
  for f in /etc/subuid /etc/subgid; do
    grep -q '^root:' "$f" 2>/dev/null || echo 'root:100000:65536' | $SUDO tee -a "$f" >/dev/null
  done
fi

# LXD: no systemd here to start it; the tests need it running (containers only, no network).
if [ "$want_test" = 1 ]; then
  "$(dirname "$0")/lxd-up.sh"
fi

# overlayfs is needed by the sandbox testbed.
if ! grep -qw overlay /proc/filesystems; then
  $SUDO modprobe overlay 2>/dev/null || echo "host-setup: warning: overlayfs unavailable; the sandbox testbed needs it" >&2
fi
echo "host-setup: done"
