#!/usr/bin/env bash
# Raspberry Pi OS stand-ins: Debian bookworm arm64 (64-bit Pi OS) and armhf (32-bit Pi OS) root
# file systems, run through qemu-user with binfmt_misc on an x86 machine.
#
#   root.sh create ARCH DIR          debootstrap a minimal root (python3, venv, CA certificates; no
#                                    compiler), once: DIR/.complete marks a finished root
#   root.sh clone SRC DST            fresh copy of a finished root
#   root.sh run ARCH DIR CMD...      run CMD inside as root, in a clean environment, with a Pi CPU model
#                                    (PI_CPUINFO=arm64|armhf: whose /proc/cpuinfo to show; default ARCH's)
#
# Needs root (chroot, mount), debootstrap and qemu-user-static (.ci/system-packages.sh).
# Facts this relies on: ../shared/notes/pi-emulation.md -- ONNX Runtime and LiteRT crash under
# qemu-user after reading an x86 /proc/cpuinfo, so a Pi 4 cpuinfo is bound over it; QEMU_CPU picks a
# Pi-like core (never `max`: qemu 7.2 mis-emulates instructions no Pi has).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
MIRROR="${PI_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# A Pi 4 core (Cortex-A72) for 64-bit; for 32-bit qemu-arm has no A72, a Cortex-A7 has the same
# ARMv7 NEON/VFPv4 user-mode instruction set that 32-bit Pi OS compiles for.
declare -A QEMU_CPU_OF=([arm64]=cortex-a72 [armhf]=cortex-a7)
declare -A QEMU_OF=([arm64]=aarch64 [armhf]=arm)

die() { echo "root.sh: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (chroot and mounts)"
# Every mount below lives in a private mount namespace, so none can reach the host's mount table
# (a bind over DIR/proc/cpuinfo once showed up as the host's own /proc/cpuinfo).
if [ -z "${EG_PI_PRIVATE_MOUNTS:-}" ]; then
  EG_PI_PRIVATE_MOUNTS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi

check_arch() { [ -n "${QEMU_OF[$1]:-}" ] || die "unknown ARCH '$1' (arm64 or armhf)"; }

register_binfmt() {
  local qemu=$1
  [ "$(uname -m)" = aarch64 ] && return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ]; then
    # flag F (in Debian's entry) opens the interpreter now, so it also works inside a chroot
    head -1 "/usr/lib/binfmt.d/qemu-$qemu.conf" > /proc/sys/fs/binfmt_misc/register
  fi
}

mount_all() {
  local arch=$1 dir=$2
  mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
  mountpoint -q "$dir/sys" || mount --rbind /sys "$dir/sys"
  mountpoint -q "$dir/dev" || mount --bind /dev "$dir/dev"
  mountpoint -q "$dir/dev/pts" || mount --bind /dev/pts "$dir/dev/pts"
  # PI_CPUINFO=arm64 in an armhf root: what a 32-bit process reads on a Pi's 64-bit kernel
  mountpoint -q "$dir/proc/cpuinfo" || mount --bind "$HERE/cpuinfo-${PI_CPUINFO:-$arch}" "$dir/proc/cpuinfo"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # PyPI may be reached through a TLS-intercepting proxy: give pip the host's CA bundle
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/host-ca-certificates.crt"
}

umount_all() {
  local dir=$1 m
  for m in proc/cpuinfo dev/pts dev sys proc; do
    if mountpoint -q "$dir/$m"; then umount -l "$dir/$m"; fi
  done
}

# A clean environment: the host's pip settings (find-links, CA bundle paths) must not leak in.
run_in() {
  local arch=$1 dir=$2; shift 2
  chroot "$dir" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    QEMU_CPU="${QEMU_CPU_OF[$arch]}" PIP_CERT=/etc/host-ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 DEBIAN_FRONTEND=noninteractive \
    "$@"
}

cmd=${1:-}; shift || true
case "$cmd" in
  create)
    arch=$1 dir=$2; check_arch "$arch"
    [ -e "$dir/.complete" ] && exit 0
    register_binfmt "${QEMU_OF[$arch]}"
    umount_all "$dir" 2>/dev/null || true
    rm -rf "$dir"; mkdir -p "$dir"
    # first stage on the host (downloads), second stage emulated (unpacks and configures)
    debootstrap --foreign --arch="$arch" --variant=minbase \
      --include=python3,python3-venv,ca-certificates "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 \
      || { tail -20 "$dir.log"; die "debootstrap first stage failed ($dir.log)"; }
    trap 'umount_all "$dir"' EXIT
    mount_all "$arch" "$dir"
    run_in "$arch" "$dir" /bin/bash /debootstrap/debootstrap --second-stage >>"$dir.log" 2>&1 \
      || { tail -20 "$dir.log"; die "debootstrap second stage failed ($dir.log)"; }
    echo "deb $MIRROR $SUITE main" > "$dir/etc/apt/sources.list"
    touch "$dir/.complete"
    ;;
  clone)
    src=$1 dst=$2
    [ -e "$src/.complete" ] || die "$src is not a finished root"
    umount_all "$dst" 2>/dev/null || true
    rm -rf "$dst"
    cp -a "$src" "$dst"
    ;;
  run)
    arch=$1 dir=$2; shift 2; check_arch "$arch"
    [ -e "$dir/.complete" ] || die "$dir is not a finished root"
    register_binfmt "${QEMU_OF[$arch]}"
    trap 'umount_all "$dir"' EXIT
    mount_all "$arch" "$dir"
    run_in "$arch" "$dir" "$@"
    ;;
  *) die "usage: root.sh create ARCH DIR | clone SRC DST | run ARCH DIR CMD..." ;;
esac
