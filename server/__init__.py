"""chinwag: a local, real-time streaming chatbot and voice assistant server."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Where chinwag's files are. In a source checkout (also the editable install `make setup`
# makes) they are the checkout's own prompts/, models/manifest.toml and clients/web/. An
# installed wheel carries the prompts and the manifest as package data in server/_data/ (laid
# out the same way; see setup.py) and the widget as package data of `clients`, installed beside
# `server`. Where the model weights go is a setting: server.config.default_models_dir().
PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout that holds server/, or for an installed chinwag the site-packages directory.
PROJECT_ROOT = PACKAGE_DIR.parent
IS_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "prompts").is_dir()
_DATA_ROOT = PROJECT_ROOT if IS_CHECKOUT else PACKAGE_DIR / "_data"
PROMPTS_DIR = _DATA_ROOT / "prompts"
MANIFEST = _DATA_ROOT / "models" / "manifest.toml"
WEB_DIR = PROJECT_ROOT / "clients" / "web"

# No outbound connection at run time (docs/security.md). Set here, at the first import of
# the package, so that every entry point (the CLI, the tests, the benchmarks) has them before
# any dependency loads; a value already in the environment wins.
# - onnxruntime (under Piper and Silero VAD) otherwise resolves mobile.events.data.microsoft.com,
#   uploads usage events and keeps a device id under ~/.cache/Microsoft/DeveloperTools/. It
#   reads the variable when it creates its environment, so it must be set before that;
#   onnxruntime.disable_telemetry_events() comes too late. Releases spell it both ways.
# - huggingface_hub (under faster-whisper): never reach the Hub, not even for a model name
#   given instead of a directory, and no usage pings.
# - DO_NOT_TRACK: the cross-tool convention (https://consoledonottrack.com).
PRIVACY_ENVIRONMENT = {
    "ORT_DISABLE_TELEMETRY": "1",
    "ORT_TELEMETRY_DISABLED": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
# The names chinwag set itself (not the user): `chinwag models fetch NAME` lifts its own
# HF_HUB_OFFLINE for that download only, and still honours a user's.
PRIVACY_DEFAULTS = frozenset(name for name in PRIVACY_ENVIRONMENT if name not in os.environ)
for _name, _value in PRIVACY_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

# numpy's OpenBLAS starts one thread per core for every matrix product. The sentence encoder
# (server/pipeline/embedding.py) multiplies small matrices per question, where those threads
# cost more than they save, and on a busy machine they make a 20 ms encoding take seconds
# (docs/performance.md, "Site knowledge"). One thread; a value already set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
