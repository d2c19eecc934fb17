#!/usr/bin/env bash
# make test-pi64 / test-pi32: an emulated Raspberry Pi OS stand-in (Debian bookworm arm64 or
# armhf under qemu-user, a Pi 4 CPU model) installs the sdist with exactly the commands of
# docs/raspberry-pi.md (the blocks marked <!-- pi-install: ARCH --> and <!-- pi-test: ARCH -->
# are extracted and run), then runs the torch-free tests, the install smoke test, and loads and
# runs a signed bundle on every backend installed there, also through examples/camera.py on a still
# frame (tests/pi/check_bundles.py).
#
#   test-pi.sh ARCH PYTHON       ARCH: arm64 | armhf | armhf-k64; PYTHON: the workstation venv's python
#
# armhf-k64 is 32-bit Pi OS on a 64-bit kernel (the default on Pi 4 and Pi 5): the armhf root with
# uname_aarch64.c preloaded into every process, so `uname -m` and platform.machine() say aarch64,
# and the arm64 kernel's /proc/cpuinfo; the compiler, libraries and AT_HWCAP stay armv7's.
#
# The roots are cached under build/pi-roots (ARCH-base: debootstrap only; ARCH-user: the base
# plus what the page's apt commands installed, kept between runs). The venv on the Pi is made
# anew on every run, so the pip install is really done each time.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=$1 PY=$2
ROOTS=${PI_ROOTS:-build/pi-roots}
ROOT_ARCH=${ARCH%-k64}  # the userland's Debian architecture
BASE=$ROOTS/$ROOT_ARCH-base USER_ROOT=$ROOTS/$ARCH-user
STAGE=/root/edgeguard-check
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
case $ARCH in
  arm64) REQUIRE=onnxruntime,litert ;;
  armhf) REQUIRE=tflite_runtime ;;
  armhf-k64) REQUIRE=tflite_runtime ;;
  *) echo "ARCH must be arm64, armhf or armhf-k64" >&2; exit 2 ;;
esac
# torch-free test files (tests needing ONNX tools skip themselves where those have no wheels)
TESTS="tests/test_squeeze.py tests/test_squeeze_errors.py tests/test_native_binding.py tests/test_bundle.py
       tests/test_build_flags.py"
t0=$(date +%s)
stamp() { echo "[test-pi $ARCH] $1: $(( $(date +%s) - t0 )) s"; }

$SUDO bash .ci/pi/root.sh create "$ROOT_ARCH" "$BASE"
stamp "base root ready"
if [ ! -e "$USER_ROOT/.complete" ]; then $SUDO bash .ci/pi/root.sh clone "$BASE" "$USER_ROOT"; fi
CHECK_MACHINE=""
if [ "$ARCH" = armhf-k64 ]; then
  # every process of the root sees the 64-bit kernel's machine name (see uname_aarch64.c)
  mkdir -p build/pi-$ARCH
  arm-linux-gnueabihf-gcc -shared -fPIC -O2 -Wall -Werror -o build/pi-$ARCH/uname_aarch64.so .ci/pi/uname_aarch64.c
  $SUDO cp build/pi-$ARCH/uname_aarch64.so "$USER_ROOT/usr/local/lib/uname_aarch64.so"
  echo /usr/local/lib/uname_aarch64.so | $SUDO tee "$USER_ROOT/etc/ld.so.preload" >/dev/null
  # what this stand-in must show: the kernel's name, an armv7 (32-bit) Python, NEON built and picked
  CHECK_MACHINE='test "$(uname -m)" = aarch64
python - <<"EOF"
import platform, struct
from edgeguard import _lowlevel
print("platform.machine():", platform.machine(), "| pointer bits:", 8 * struct.calcsize("P"),
      "| ISAs:", _lowlevel.available_isas(), "| picked:", _lowlevel.best_isa())
assert platform.machine() == "aarch64" and struct.calcsize("P") == 4
assert _lowlevel.best_isa() == "neon", "the armv7 NEON kernels were not built or not picked"
EOF'
fi

# the workstation side: the sdist and a signed bundle with small real models
# one sdist at a time: setup.py assembles it in ./edgeguard-<version>/, which concurrent targets share
mkdir -p build && rm -rf build/pi-$ARCH/sdist && flock build/.sdist.lock "$PY" setup.py -q sdist -d build/pi-$ARCH/sdist >/dev/null
"$PY" tests/pi/make_bundles.py build/pi-$ARCH/bundles >/dev/null 2>&1 || "$PY" tests/pi/make_bundles.py build/pi-$ARCH/bundles
stamp "sdist and bundles made"

# the page's commands for this ARCH, in page order
page_block() {  # KIND (pi-install | pi-test)
  python3 - "$1" "$ARCH" <<'EOF'
import re, sys
kind, arch = sys.argv[1], sys.argv[2]
page = open("docs/raspberry-pi.md", encoding="utf-8").read()
blocks = re.findall(r"<!-- %s: ([a-z0-9, -]+) -->\s*```sh\n(.*?)```" % kind, page, re.S)
chosen = [body for archs, body in blocks if arch in [a.strip() for a in archs.split(",")]]
if not chosen:
    sys.exit(f"docs/raspberry-pi.md has no <!-- {kind}: {arch} --> block")
print("".join(chosen))
EOF
}
$SUDO rm -rf "$USER_ROOT$STAGE" "$USER_ROOT"/root/edgeguard-*.tar.gz
$SUDO mkdir -p "$USER_ROOT$STAGE"
$SUDO cp build/pi-$ARCH/sdist/edgeguard-*.tar.gz "$USER_ROOT/root/"
$SUDO cp -r tests "$USER_ROOT$STAGE/tests"
# what the tests read besides the installed package (the C header, the ISA table, setup.py's extras)
$SUDO cp -r native setup.py CMakeLists.txt examples "$USER_ROOT$STAGE/"
$SUDO cp -r build/pi-$ARCH/bundles "$USER_ROOT$STAGE/bundles"
{
  echo 'set -euo pipefail'
  echo 'sudo() { "$@"; }  # the page is written for the pi user; the chroot runs as root'
  echo 'cd ~ && rm -rf ~/edgeguard-venv'
  echo 't0=$(date +%s); stamp() { echo "[on the Pi '"$ARCH"'] $1: $(( $(date +%s) - t0 )) s"; }'
  page_block pi-install
  echo 'stamp "installed as docs/raspberry-pi.md says"'
  page_block pi-test
  echo 'stamp "test tools installed"'
  echo "cd $STAGE"
  echo 'python tests/smoke_install.py'
  if [ -n "$CHECK_MACHINE" ]; then echo "$CHECK_MACHINE"; echo 'stamp "machine aarch64, armv7 NEON build picked"'; fi
  echo "python -m pytest -q -p no:cacheprovider -x $(echo $TESTS)"
  echo 'stamp "tests passed"'
  echo "python tests/pi/check_bundles.py bundles --require $REQUIRE --camera-example examples/camera.py"
  echo 'stamp "bundles checked"'
} > build/pi-$ARCH/run.sh
$SUDO cp build/pi-$ARCH/run.sh "$USER_ROOT$STAGE/run.sh"
# bounded: qemu runs can hang on an emulation gap; 60 minutes is several times a normal run
CPUINFO=$ROOT_ARCH
if [ "$ARCH" = armhf-k64 ]; then CPUINFO=arm64; fi
timeout 3600 $SUDO env PI_CPUINFO=$CPUINFO bash .ci/pi/root.sh run "$ROOT_ARCH" "$USER_ROOT" /bin/bash "$STAGE/run.sh"
stamp "done"
