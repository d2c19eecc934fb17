#!/usr/bin/env bash
# Installs the Debian packages the tests need (cross compilers and qemu-user for
# the ARM C tests, debootstrap for the emulated Raspberry Pi roots, mosquitto for the telemetry tests,
# clang and its compiler-rt for the libFuzzer harnesses of `make fuzz`). Skips apt when all are present.
set -euo pipefail
PACKAGES=(
  build-essential
  qemu-user-static debootstrap
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
  mosquitto mosquitto-clients
  clang libclang-rt-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
