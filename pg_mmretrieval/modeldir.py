"""Model directories (docs/model-format.md): manifest, discovery and checksum verification."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import project_model_dir, user_model_dir
from .errors import ConfigError, NotFoundError

__all__ = [
    "MANIFEST",
    "Manifest",
    "discover_models",
    "file_sha256",
    "find_model",
    "model_dirs",
    "read_manifest",
    "verify_model",
]

MANIFEST = "manifest.json"
FORMAT = 1
KINDS = ("clip", "siglip", "text")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``; ``raw`` keeps every key, known or not."""

    path: Path
    name: str
    kind: str
    dimension: int
    modalities: frozenset[str]
    raw: dict[str, Any]

    @property
    def directory(self) -> Path:
        return self.path.parent

    def tower(self, modality: str) -> dict[str, Any]:
        """The ``towers`` entry for ``text`` or ``image``."""
        towers: dict[str, Any] = self.raw.get("towers", {})
        if modality not in towers:
            raise ConfigError(f"model {self.name!r} has no {modality} tower ({self.path})")
        tower: dict[str, Any] = towers[modality]
        return tower

    def tower_file(self, modality: str, variant: str | None = None) -> Path:
        """The ONNX file of a tower, for the fp32 graph or a variant (``int8``, ``fp16``)."""
        if variant:
            variants: dict[str, Any] = self.raw.get("variants", {})
            if variant not in variants:
                known = ", ".join(sorted(variants)) or "none"
                raise NotFoundError(
                    f"model {self.name!r} has no {variant!r} variant (it has: {known}); "
                    f"export it with `mmr models export ... --{variant}`"
                )
            return self.directory / str(variants[variant]["files"][modality])
        return self.directory / str(self.tower(modality)["file"])

    @property
    def model_id(self) -> str:
        """Identifies weights + preprocessing: name and the sha256 of the fp32 towers."""
        files: dict[str, str] = self.raw.get("files", {})
        digest = hashlib.sha256()
        for modality in sorted(self.modalities):
            fname = str(self.tower(modality)["file"])
            digest.update(files.get(fname, fname).encode())
        return f"{self.name}@{digest.hexdigest()[:12]}"


def read_manifest(directory: Path) -> Manifest:
    """Parse and check ``directory/manifest.json``.

    Raises:
        ConfigError: missing or invalid manifest.
    """
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{directory} is not a model directory: no {MANIFEST}") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{path}: unsupported manifest format {raw.get('format')!r}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    try:
        dimension = int(raw["dimension"])
        modalities = frozenset(str(m) for m in raw["modalities"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: missing or invalid dimension/modalities ({e})") from e
    return Manifest(
        path=path,
        name=directory.name,
        kind=str(kind),
        dimension=dimension,
        modalities=modalities,
        raw=raw,
    )


def model_dirs() -> list[Path]:
    """Where models are looked for, highest precedence first (``MMR_MODEL_DIR``, onnx_models/)."""
    dirs = [d for d in (user_model_dir(), project_model_dir()) if d is not None]
    return [d for d in dirs if d.is_dir()]


def discover_models() -> dict[str, Path]:
    """Model name -> directory for every sub-directory holding a manifest.

    A model in ``MMR_MODEL_DIR`` hides one of the same name in the project's ``onnx_models/``.
    """
    found: dict[str, Path] = {}
    for root in model_dirs():
        for sub in sorted(root.iterdir()):
            if sub.is_dir() and (sub / MANIFEST).is_file() and sub.name not in found:
                found[sub.name] = sub
    return found


def find_model(name_or_path: str) -> Path:
    """A model directory by name (see :func:`discover_models`) or by path.

    Raises:
        NotFoundError: no such model.
    """
    candidate = Path(name_or_path).expanduser()
    if (candidate / MANIFEST).is_file():
        return candidate
    models = discover_models()
    if name_or_path in models:
        return models[name_or_path]
    known = ", ".join(sorted(models)) or "none"
    raise NotFoundError(
        f"no model {name_or_path!r}; models found: {known} "
        "(searched MMR_MODEL_DIR and onnx_models/; `mmr models export` makes one)"
    )


def verify_model(directory: Path) -> list[str]:
    """Check the manifest and every file's sha256; return the problems (empty when sound)."""
    try:
        manifest = read_manifest(directory)
    except ConfigError as e:
        return [str(e)]
    problems = []
    files: dict[str, str] = manifest.raw.get("files", {})
    if not files:
        problems.append("the manifest lists no files")
    for fname, expected in sorted(files.items()):
        path = directory / fname
        if not path.is_file():
            problems.append(f"{fname}: missing")
        elif file_sha256(path) != expected:
            problems.append(f"{fname}: sha256 differs from the manifest (file changed or corrupt)")
    for modality in sorted(manifest.modalities):
        try:
            fname = str(manifest.tower(modality)["file"])
        except (ConfigError, KeyError) as e:
            problems.append(f"{modality} tower: {e}")
            continue
        if fname not in files:
            problems.append(f"{modality} tower file {fname} is not in the manifest's files")
    return problems
