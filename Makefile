# Two commands on a fresh machine (see README):
#   make demo   set everything up, then run the main job on the embedded default data
#   make demo-colour   the same for the colour job (scikit-image photographs)
#   make test   set everything up, then run every test (C natively, with sanitizers,
#               under qemu for aarch64 and armv7, then pytest)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := build
JOBS ?= 2

.PHONY: setup system-packages venv native-ext demo demo-colour bench test test-c test-c-native test-c-sanitize \
        test-c-aarch64 test-c-armv7 test-python test-sdist fuzz fuzz-build test-fuzz clean poison-experiment \
        test-pi test-pi64 test-pi32 test-pi32-k64 pi-wheels

setup: system-packages venv

system-packages:
	bash .ci/system-packages.sh

# The virtualenv is rebuilt when the pinned requirements or the build change.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements/dev.txt setup.py pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $@

# The editable install rebuilds the extension (setup.py relinks when a native source changed).
native-ext: venv
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .

OUT ?= out/mnist
demo: setup native-ext
	$(PY) -m edgeguard.converters.mnist --out $(OUT)

# The colour main job: a colour classifier of scikit-image photographs, guarded with the colour defaults.
COLOUR_OUT ?= out/colour
demo-colour: setup native-ext
	$(PY) -m edgeguard.converters.colour --out $(COLOUR_OUT)

# The planted-trigger experiment of docs/data-governance.md (BadNets trigger on MNIST, poisoning scan,
# int8 attack success with and without removal).
poison-experiment: setup native-ext
	$(PY) -m edgeguard.converters.poison_experiment --out out/poison

bench: setup native-ext
	$(PY) benchmarks/bench_kernels.py

test: setup test-c test-python test-sdist test-fuzz

test-c: test-c-native test-c-sanitize test-c-aarch64 test-c-armv7

define ctest_build
	$(VENV)/bin/cmake -S . -B $(BUILD)/$(1) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja $(2) >/dev/null
	$(VENV)/bin/cmake --build $(BUILD)/$(1) -j $(JOBS)
	$(VENV)/bin/ctest --test-dir $(BUILD)/$(1) --output-on-failure -j $(JOBS)
endef

test-c-native: venv
	$(call ctest_build,native,)

test-c-sanitize: venv
	$(call ctest_build,sanitize,-DEG_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)

test-c-aarch64: venv system-packages
	$(call ctest_build,aarch64,-DCMAKE_TOOLCHAIN_FILE=native/cmake/aarch64-linux-gnu.cmake)

test-c-armv7: venv system-packages
	$(call ctest_build,armv7,-DCMAKE_TOOLCHAIN_FILE=native/cmake/armv7-linux-gnueabihf.cmake)

test-python: venv native-ext
	$(PY) -m pytest -q

# The source distribution builds and works in a clean virtualenv (as on a Raspberry Pi).
test-sdist: venv
	rm -rf $(BUILD)/sdist $(BUILD)/sdist-venv
	$(PY) setup.py -q sdist -d $(BUILD)/sdist >/dev/null
	python3 -m venv $(BUILD)/sdist-venv
	$(BUILD)/sdist-venv/bin/pip install -q "$$(ls $(BUILD)/sdist/edgeguard-*.tar.gz)[onnx]"
	cd $(BUILD) && sdist-venv/bin/python ../tests/smoke_install.py

# Fuzzing (docs/fuzzing.md): libFuzzer + ASan/UBSan harnesses of every C kernel (each SIMD
# variant against the scalar reference) and atheris harnesses of the bundle reader and the
# manifest parser. `make fuzz` runs each for FUZZ_SECONDS; `make test` runs a short pass.
FUZZ_SECONDS ?= 300
FUZZ_CI_SECONDS ?= 30

fuzz-build: venv system-packages
	$(VENV)/bin/cmake -S . -B $(BUILD)/fuzz -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
	    -DCMAKE_C_COMPILER=clang -DEG_FUZZ=ON -DEG_SANITIZE=ON -DEG_BUILD_TESTS=OFF \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	$(VENV)/bin/cmake --build $(BUILD)/fuzz -j $(JOBS)

fuzz: fuzz-build native-ext
	bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(BUILD)/fuzz $(PY)

test-fuzz: fuzz-build native-ext
	bash tests/fuzz/run.sh $(FUZZ_CI_SECONDS) $(BUILD)/fuzz $(PY)

# Emulated Raspberry Pi OS stand-ins (docs/raspberry-pi.md): Debian bookworm arm64 / armhf roots
# under qemu-user with a Pi 4 CPU model, cached in $(BUILD)/pi-roots; the sdist installed with
# the page's commands, torch-free tests, a signed bundle run on every backend there.
test-pi: test-pi64 test-pi32 test-pi32-k64

test-pi64: venv system-packages
	bash .ci/pi/test-pi.sh arm64 $(PY)

test-pi32: venv system-packages
	bash .ci/pi/test-pi.sh armhf $(PY)

# 32-bit Pi OS on a 64-bit kernel (Pi 4/5 default): the armhf root, uname reporting aarch64
test-pi32-k64: venv system-packages
	bash .ci/pi/test-pi.sh armhf-k64 $(PY)

# aarch64 and armv7l wheels (dist/pi/), built in the emulated roots, checked in a root without a compiler
pi-wheels: venv system-packages
	bash .ci/pi/wheels.sh arm64 $(PY)
	bash .ci/pi/wheels.sh armhf $(PY)

clean:
	rm -rf $(BUILD) edgeguard/_native*.so edgeguard/_native.c
