# chinwag: `make run` serves on the default models, `make test` runs the tests.
# Both set everything up first: Debian packages, .venv, Python packages, model weights.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A real MQTT broker and a real browser for the tests; strace for the privacy proof; espeak-ng
# for synthesized speech in tests and benchmarks; PortAudio for `chinwag satellite`.
APT_PACKAGES := mosquitto mosquitto-clients chromium strace espeak-ng libportaudio2
# Portable CPU build of llama.cpp: a native build picks up every instruction the build machine
# advertises, and AMX tiles advertised inside a VM crashed it with SIGILL here. AVX2/FMA/F16C
# runs on any x86-64 CPU of the last ten years (the flags are ignored on other architectures).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: setup run test test-slow test-fast bench bench-load bench-fairness bench-remote bench-stages bench-levers bench-quality lint system-deps models frameworks satellite clean

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
	# llama-cpp-python compiles from source the first time (~6 min on 2 cores); pip caches it.
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Idempotent: present files are only checked against their sha256.
models: $(STAMP)
	$(BIN)/chinwag models fetch

run: setup
	$(BIN)/chinwag serve

# Every test but the slowest end-to-end ones (marked `slow`), which CI runs with test-slow.
test: setup satellite
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest -q -m "not slow" --durations=25

test-slow: setup frameworks satellite
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest -q -m slow --durations=25

# The Realtime frameworks (OpenAI Agents SDK, LiveKit Agents, Pipecat) as clients of the server,
# each in its own venv (their pins conflict with chinwag's), from the same package index;
# tests/e2e/test_realtime_frameworks.py runs them. Pins: tests/e2e/realtime_frameworks/.
FRAMEWORKS := agents livekit pipecat
frameworks: $(foreach f,$(FRAMEWORKS),.venv-frameworks/$(f)/.installed)

.venv-frameworks/%/.installed: tests/e2e/realtime_frameworks/requirements-%.txt
	test -x .venv-frameworks/$*/bin/python || $(PYTHON) -m venv .venv-frameworks/$*
	.venv-frameworks/$*/bin/pip install --quiet -r $<
	touch $@

# A real wyoming-satellite (1.0.0, the one on the package index) for the tests that drive it
# (tests/e2e/test_satellites.py), in its own venv: it pins an older `wyoming` than chinwag's.
# Pins: tests/e2e/satellite/requirements.txt.
satellite: .venv-satellite/.installed

.venv-satellite/.installed: tests/e2e/satellite/requirements.txt
	test -x .venv-satellite/bin/python || $(PYTHON) -m venv .venv-satellite
	.venv-satellite/bin/pip install --quiet -r $<
	touch $@

# Unit tests only, on fakes: no model weights needed, a few seconds.
test-fast: $(STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest -q tests/unit -m "not models"

# Text, then voice over the broader set (human recordings, Piper and espeak-ng voices, made into
# bench/.cache on the first run), then the pause corpus (docs/performance.md).
bench: setup
	$(BIN)/python -m bench.text_latency
	$(BIN)/python -m bench.voice_latency
	$(BIN)/python -m bench.pause_cuts

# The Wyoming server against wyoming-faster-whisper and wyoming-piper on the same model files
# (docs/performance.md, docs/home-assistant.md), with a second chinwag speaking Piper whole
# beside the default streamed decoder; writes bench/results-wyoming.json.
bench-wyoming: setup
	$(BIN)/python -m bench.wyoming_latency --compare CHINWAG_TTS__STREAM_DECODER=false

# A Wyoming satellite driven by chinwag vs a native WebSocket client on one server, alternated
# (docs/satellites.md); writes bench/results-satellites.json.
.PHONY: bench-satellites
bench-satellites: setup
	$(BIN)/python -m bench.satellite_latency

# The intent stage: accuracy on typed and spoken commands (Piper and espeak-ng), false actions
# on chit-chat, end of speech -> first audio (docs/performance.md, docs/intents.md); writes
# bench/results-intents.json. BENCH_ARGS="--every 5" speaks a sample.
.PHONY: bench-intents
bench-intents: setup
	$(BIN)/python -m bench.intent_accuracy $(BENCH_ARGS)

# Concurrent conversations: N = 1, 2, 4, 8 voice and text sessions at once, p50/p95 end of
# speech -> first audio, time to first token, tokens/s, fairness (docs/scaling.md); writes
# bench/results-load.json. BENCH_ARGS="--sessions 4 --compare-checkout DIR" compares.
bench-load: setup
	$(BIN)/python -m bench.load_latency $(BENCH_ARGS)

# A remote LLM (llama_cpp.server on loopback): what chinwag adds to its time to first token,
# side by side with the same requests sent straight to the server (docs/scaling.md).
bench-remote: setup
	$(BIN)/python -m bench.remote_llm $(BENCH_ARGS)

# What each stage of a turn costs, each engine alone in one process (docs/scaling.md);
# writes bench/results-stages.json.
bench-stages: setup
	$(BIN)/python -m bench.stage_costs

# Fairness of text replies: time to first token beside a long reply and with 8 sessions at
# once (docs/performance.md, "Several replies at once"); writes bench/results-fairness.json.
bench-fairness: setup
	$(BIN)/python -m bench.reply_fairness

# Answer quality with the receptionist's example venue file: site facts, honest "I don't know",
# no claimed actions, for every LLM preset present (docs/performance.md, "Answer quality");
# writes bench/results-quality.json.
bench-quality: setup
	$(BIN)/python -m bench.quality

# The voice benchmark once per latency lever (bench/levers/*.toml); see docs/performance.md.
bench-levers: setup
	bench/levers.sh

lint: $(STAMP)
	$(BIN)/ruff check server clients tests bench
	$(BIN)/ruff format --check server clients tests bench
	$(BIN)/mypy server clients bench tests

clean:
	rm -rf $(VENV) .venv-frameworks .venv-satellite models/*/
