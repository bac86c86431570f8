"""Export a checkpoint (Hugging Face id or local directory) to a model directory."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..config import project_model_dir, user_model_dir
from ..errors import ConfigError, EncoderError
from ..modeldir import FORMAT, MANIFEST, file_sha256, read_manifest
from . import variants

__all__ = ["export_model"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
OPSET = 18


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("optimum-onnx", "optimum", "torch", "transformers", "onnx", "onnxruntime-gpu"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _source_file(source: str, relpath: str) -> Path | None:
    """A file of the checkpoint (local directory, else the Hugging Face cache/hub)."""
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / relpath
        return path if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, relpath))
    except Exception:
        return None


def _save_tokenizer(source: str, directory: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)  # type: ignore[no-untyped-call]
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{source}: no fast tokenizer (tokenizer.json) could be made; install "
            "sentencepiece and protobuf, or add a tokenizer.json to the checkpoint"
        )
    tmp = directory / "_tokenizer"
    tokenizer.save_pretrained(str(tmp))
    shutil.move(str(tmp / "tokenizer.json"), str(directory / "tokenizer.json"))
    shutil.rmtree(tmp)
    return tokenizer


def _export_text(source: str, config: Any, directory: Path) -> dict[str, Any]:
    from optimum.exporters.onnx import main_export

    work = directory / "_optimum"
    main_export(
        source,
        output=work,
        task="feature-extraction",
        library_name="transformers",
        opset=OPSET,
        do_validation=False,
    )
    shutil.move(str(work / "model.onnx"), str(directory / "text_model.onnx"))
    shutil.rmtree(work)
    tokenizer = _save_tokenizer(source, directory)
    pooling = "mean"
    pooling_file = _source_file(source, "1_Pooling/config.json")
    if pooling_file is not None:
        pool_cfg = json.loads(pooling_file.read_text())
        if pool_cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not pool_cfg.get("pooling_mode_mean_tokens", True):
            raise ConfigError(f"{source}: unsupported pooling {pool_cfg} (mean or cls only)")
    max_length = min(int(tokenizer.model_max_length), int(config.max_position_embeddings))
    st_file = _source_file(source, "sentence_bert_config.json")
    if st_file is not None:
        max_length = int(json.loads(st_file.read_text()).get("max_seq_length", max_length))
    inputs = ["input_ids", "attention_mask"]
    if getattr(config, "type_vocab_size", 0):
        inputs.append("token_type_ids")
    return {
        "kind": "text",
        "dimension": int(config.hidden_size),
        "modalities": ["text"],
        "max_length": max_length,
        "pad_token_id": int(tokenizer.pad_token_id or 0),
        "pooling": pooling,
        "towers": {
            "text": {"file": "text_model.onnx", "inputs": inputs, "output": "last_hidden_state"}
        },
    }


def _export_dual(source: str, kind: str, config: Any, directory: Path) -> dict[str, Any]:
    from optimum.exporters.onnx import export_models
    from transformers import AutoImageProcessor

    from .towers import tower_configs

    text_cls, text_cfg, vision_cls, vision_cfg, text_out, image_out = tower_configs(kind, config)
    text_model = text_cls.from_pretrained(source).eval()
    vision_model = vision_cls.from_pretrained(source).eval()
    export_models(
        models_and_onnx_configs={
            "text_model": (text_model, text_cfg),
            "vision_model": (vision_model, vision_cfg),
        },
        output_dir=directory,
        opset=OPSET,
        output_names=["text_model.onnx", "vision_model.onnx"],
    )
    tokenizer = _save_tokenizer(source, directory)
    processor = AutoImageProcessor.from_pretrained(source, use_fast=False)  # type: ignore[no-untyped-call]
    (directory / "preprocessor_config.json").write_text(processor.to_json_string())
    if kind == "clip":
        dimension = int(config.projection_dim)
        text_inputs = ["input_ids", "attention_mask"]
    else:
        dimension = int(config.text_config.hidden_size)
        text_inputs = ["input_ids"]
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = config.text_config.pad_token_id or 0
    return {
        "kind": kind,
        "dimension": dimension,
        "modalities": ["image", "text"],
        "max_length": int(config.text_config.max_position_embeddings),
        "pad_token_id": int(pad_id),
        "pad_to_max_length": kind == "siglip",
        "towers": {
            "text": {"file": "text_model.onnx", "inputs": text_inputs, "output": text_out},
            "image": {"file": "vision_model.onnx", "inputs": ["pixel_values"], "output": image_out},
        },
    }


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    manifest["files"] = {
        p.name: file_sha256(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _embed_all(encoder: Any) -> dict[str, np.ndarray[Any, Any]]:
    out = {"text": encoder.embed_texts(variants.sample_texts())}
    if "image" in encoder.modalities:
        out["image"] = encoder.embed_images(variants.sample_images())
    return out


def _add_variant(directory: Path, manifest: dict[str, Any], variant: str) -> None:
    # the first-party plugin's encoder runs the check (the same code that serves queries)
    onnx_encoder: Any = importlib.import_module("pg_mmretrieval_plugins.onnx_encoders").OnnxEncoder

    make = variants.make_int8 if variant == "int8" else variants.make_fp16
    files = {}
    for modality, tower in manifest["towers"].items():
        src = directory / tower["file"]
        dst = directory / src.name.replace(".onnx", f".{variant}.onnx")
        make(src, dst)
        files[modality] = dst.name
    manifest["variants"][variant] = {"files": files}
    _write_manifest(directory, manifest)
    parsed = read_manifest(directory)
    reference = _embed_all(onnx_encoder(parsed))
    candidate = _embed_all(onnx_encoder(parsed, variant))
    cosine = {m: round(variants.mean_cosine(reference[m], candidate[m]), 6) for m in reference}
    for modality, value in cosine.items():
        try:
            variants.check_cosine(f"{variant} {modality}", value)
        except EncoderError:
            for f in files.values():
                (directory / f).unlink()
            raise
    manifest["variants"][variant]["cosine"] = cosine


def export_model(
    source: str,
    name: str,
    *,
    output_dir: Path | None = None,
    fp16: bool = False,
    int8: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export ``source`` to ``<output_dir>/<name>/`` (docs/model-format.md).

    Args:
        source: a Hugging Face model id (needs a network) or a local checkpoint directory.
        name: the model's (and encoder's) name.
        output_dir: parent directory; default ``$MMR_MODEL_DIR``, else ``onnx_models/``.
        fp16, int8: also write these variants; each is refused (and the export fails) when
            its mean cosine vs fp32 on sample inputs is below 0.99.
        overwrite: replace an existing directory of that name.

    Returns:
        The model directory.

    Raises:
        ConfigError: bad name, existing directory, missing export extra, unsupported model.
        EncoderError: a variant failed its check.
    """
    if not _NAME.match(name):
        raise ConfigError(f"model name {name!r} must match {_NAME.pattern}")
    parent = Path(output_dir or user_model_dir() or project_model_dir()).expanduser()
    target = parent / name
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} exists; pass --force to replace it")
    try:
        from transformers import AutoConfig
    except ImportError as e:
        raise ConfigError(
            "exporting needs the export extra: pip install 'pg_mmretrieval[export]'"
        ) from e
    config = AutoConfig.from_pretrained(source)
    model_type = str(getattr(config, "model_type", ""))
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    # torch's tracer and optimum warn a lot about things that are fine for inference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if model_type in ("clip", "siglip"):
                body = _export_dual(source, model_type, config, work)
            elif hasattr(config, "hidden_size") and hasattr(config, "max_position_embeddings"):
                body = _export_text(source, config, work)
            else:
                raise ConfigError(f"{source}: unsupported model type {model_type!r}")
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "name": name,
                **body,
                "normalize": True,
                "source": str(Path(source).resolve()) if Path(source).is_dir() else source,
                "exporter": _versions(),
                "variants": {},
            }
            _write_manifest(work, manifest)
            for variant, wanted in (("int8", int8), ("fp16", fp16)):
                if wanted:
                    _add_variant(work, manifest, variant)
            _write_manifest(work, manifest)
            work.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    log.info("exported %s to %s", source, target)
    return target
