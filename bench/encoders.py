"""Encoder throughput: our ONNX encoders (fp32, int8) vs the same model in PyTorch, CPU.

Same inputs, same process, same thread count; each side includes its own preprocessing
(tokenizer / image decoding and transforms).  One warm-up run per engine, then interleaved
rounds (every engine once per round, order rotated); prints items/s of the median round, the
ratio of median times to PyTorch with the range of per-round ratios, and the cosine agreement
with PyTorch's embeddings.  ``pytorch sorted`` gives PyTorch the same length-sorted batching
as our text encoder, to separate what batching and what ONNX Runtime contribute.

On a shared machine serialise benchmarks:  flock /tmp/bench.lock .venv/bin/python bench/...

    .venv/bin/python bench/encoders.py                  # MiniLM texts + random ViT-B/32
    .venv/bin/python bench/encoders.py --only text --texts 2000
    .venv/bin/python bench/encoders.py --threads 2

Needs `make models` (MiniLM) and the export extra; the ViT-B/32 export is cached in
.mmr-test-data/model-cache (built on first use, a few minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def captions(n: int, seed: int = 0) -> list[str]:
    """Caption-like texts of 5 to 40 words."""
    rng = np.random.default_rng(seed)
    vocabulary = (
        "red blue green small large circle square triangle photo of a the on in near dog cat "
        "street city night beach plate pasta old wooden boat with two three white background "
        "corner sky cloudy bright dark shiny person walking"
    )
    words = vocabulary.split()
    return [" ".join(rng.choice(words, int(rng.integers(5, 41)))) for _ in range(n)]


def timed_rounds(
    engines: dict[str, Callable[[], np.ndarray]], rounds: int
) -> dict[str, tuple[list[float], np.ndarray]]:
    """Run every engine once (warm-up), then ``rounds`` interleaved rounds.

    Each round runs every engine once, in an order rotated from round to round, so slow
    phases of a shared machine hit all engines alike.  Returns each engine's round times and
    its last output.
    """
    names = list(engines)
    outputs = {name: engines[name]() for name in names}  # warm-up: sessions, caches
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            outputs[name] = engines[name]()
            times[name].append(time.perf_counter() - start)
    return {name: (times[name], outputs[name]) for name in names}


def report(label: str, n: int, results: dict[str, tuple[list[float], np.ndarray]]) -> None:
    """items/s (median round), ratio to PyTorch (median, and range over rounds), cosine."""
    base_t, base_v = results["pytorch"]
    rounds = len(base_t)
    print(f"\n{label} ({n} items, median of {rounds} interleaved rounds)")
    print(
        f"  {'engine':<16}{'items/s':>9}{'vs torch':>10}{'range':>14}{'cosine mean':>13}{'min':>9}"
    )
    for name, (t, v) in results.items():
        ratios = [b / x for b, x in zip(base_t, t, strict=True)]
        ratio = float(np.median(base_t)) / float(np.median(t))
        cos = np.sum(_unit(v) * _unit(base_v), axis=1)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(f"  {name:<16}{n / float(np.median(t)):>9.1f}{ratio:>9.2f}x{spread:>14}"
              f"{cos.mean():>13.5f}{cos.min():>9.5f}")  # fmt: skip


def bench_text(n: int, batch: int, repeat: int) -> None:
    """MiniLM: transformers + PyTorch (input order, and length-sorted like ours) vs ONNX."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pg_mmretrieval.encoders import get_encoder
    from tests.models import minilm_dir, minilm_source

    minilm_dir()
    texts = captions(n)
    tok = AutoTokenizer.from_pretrained(str(minilm_source()))
    model = AutoModel.from_pretrained(str(minilm_source())).eval()

    def embed(chunk: list[str]) -> np.ndarray:
        enc = tok(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1)).numpy()

    def pytorch() -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([embed(texts[i : i + batch]) for i in range(0, n, batch)])

    window = batch * 8  # the ONNX encoder's sort window (OnnxEncoder.sort_window batches)
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=256)["input_ids"]]

    def pytorch_sorted() -> np.ndarray:
        out = np.zeros((n, model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for w in range(0, n, window):
                order = sorted(range(w, min(n, w + window)), key=lambda i: -lengths[i])
                for i in range(0, len(order), batch):
                    idx = order[i : i + batch]
                    out[idx] = embed([texts[j] for j in idx])
        return out

    def onnx(name: str) -> Callable[[], np.ndarray]:
        enc = get_encoder(name)
        enc.batch_size = batch
        return lambda: np.stack(list(enc.embed_batch(texts)))

    engines = {
        "pytorch": pytorch,
        "pytorch sorted": pytorch_sorted,
        "onnx fp32": onnx("minilm"),
        "onnx int8": onnx("minilm:int8"),
    }
    report(f"MiniLM-L6 texts, batch {batch}", n, timed_rounds(engines, repeat))


def bench_images(n: int, batch: int, repeat: int) -> None:
    """Random full-size CLIP ViT-B/32 image tower: transformers + PyTorch vs ONNX."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from pg_mmretrieval import plugins
    from pg_mmretrieval.encoders import get_encoder
    from pg_mmretrieval.preprocess import decode_image
    from tests.images import encode, scene
    from tests.models import random_clip_model

    checkpoint, model_dir = random_clip_model()
    os.environ["MMR_MODEL_DIR"] = str(model_dir.parent)
    plugins.reset()
    files = [encode(scene(640, 480, seed=i), "JPEG", quality=90) for i in range(n)]
    model = CLIPModel.from_pretrained(str(checkpoint)).eval()
    processor = CLIPImageProcessor.from_pretrained(str(checkpoint))

    def pytorch() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, n, batch):
                images = [decode_image(f) for f in files[i : i + batch]]
                pixels = processor(images=images, return_tensors="pt")["pixel_values"]
                out.append(model.get_image_features(pixel_values=pixels).numpy())
        return np.concatenate(out)

    def onnx(name: str) -> Callable[[], Any]:
        enc = get_encoder(name)
        enc.batch_size = batch
        return lambda: np.stack(list(enc.embed_batch(files)))

    engines = {
        "pytorch": pytorch,
        "onnx fp32": onnx("clip-b32-random"),
        "onnx int8": onnx("clip-b32-random:int8"),
    }
    report(f"CLIP ViT-B/32 images 640x480 JPEG, batch {batch}", n, timed_rounds(engines, repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["text", "image"], default=None)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ["MMR_ONNX_THREADS"] = str(args.threads)
    os.environ.setdefault("MMR_ONNX_PROVIDERS", "cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"threads {args.threads}, cpus {os.cpu_count()}, load average {load:.1f}, "
          f"torch {torch.__version__}")  # fmt: skip
    if args.only in (None, "text"):
        bench_text(args.texts, args.batch, args.repeat)
    if args.only in (None, "image"):
        bench_images(args.images, min(args.batch, 16), args.repeat)


if __name__ == "__main__":
    main()
