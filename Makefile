# chinwag: `make run` serves on the default models, `make test` runs the tests.
# Both set everything up first: Debian packages, .venv, Python packages, model weights.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A real MQTT broker and a real browser for the tests.
APT_PACKAGES := mosquitto mosquitto-clients chromium
# llama.cpp built for this machine's CPU. Not GGML_NATIVE: inside a VM that advertises AMX
# tiles it crashed with SIGILL here. Instead each x86 extension llama.cpp can use is switched
# on when /proc/cpuinfo lists it, AMX always off. AVX-512 with VNNI evaluated a prompt ~20 %
# faster than the AVX2 build on these machines (docs/performance.md). The wheel is built once
# per set of flags into ~/.cache/chinwag (pip's own cache would hand back a wheel built with
# other flags), so a fresh clone on the same machine does not compile again.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2)
cpu_has = $(if $(strip $(foreach f,$(1),$(if $(filter $(f),$(CPU_FLAGS)),,missing))),OFF,ON)
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=$(call cpu_has,avx) \
  -DGGML_AVX2=$(call cpu_has,avx2) -DGGML_FMA=$(call cpu_has,fma) \
  -DGGML_F16C=$(call cpu_has,f16c) -DGGML_BMI2=$(call cpu_has,bmi2) \
  -DGGML_AVX_VNNI=$(call cpu_has,avx_vnni) \
  -DGGML_AVX512=$(call cpu_has,avx512f avx512cd avx512vl avx512dq avx512bw) \
  -DGGML_AVX512_VBMI=$(call cpu_has,avx512f avx512vbmi) \
  -DGGML_AVX512_VNNI=$(call cpu_has,avx512f avx512_vnni) \
  -DGGML_AVX512_BF16=$(call cpu_has,avx512f avx512_bf16) \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE_ARGS ?=
endif
LLAMA_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/chinwag/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | md5sum | cut -c1-10)

.PHONY: setup run test test-fast bench bench-levers lint system-deps models clean

setup: system-deps $(STAMP) models

# Debian packages the tests and tools use; installed only when missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) for this CPU, once (~6 min on 2 cores)"; \
	  echo "  CMAKE_ARGS=$(strip $(LLAMA_CMAKE_ARGS))"; \
	  CMAKE_ARGS="$(strip $(LLAMA_CMAKE_ARGS))" $(BIN)/pip wheel --quiet --no-deps \
	    --no-cache-dir --no-binary llama-cpp-python -w $(LLAMA_WHEELS).tmp \
	    llama-cpp-python==$(LLAMA_VERSION) && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); \
	fi
	$(BIN)/pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Idempotent: present files are only checked against their sha256.
models: $(STAMP)
	$(BIN)/chinwag models fetch

run: setup
	$(BIN)/chinwag serve

test: setup
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: setup
	$(BIN)/python -m bench.text_latency
	$(BIN)/python -m bench.voice_latency

# The voice benchmark once per latency lever (bench/levers/*.toml); see docs/performance.md.
bench-levers: setup
	bench/levers.sh

lint: $(STAMP)
	$(BIN)/ruff check server clients tests bench
	$(BIN)/ruff format --check server clients tests bench
	$(BIN)/mypy server clients bench

clean:
	rm -rf $(VENV) models/*/
