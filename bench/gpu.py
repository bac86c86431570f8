"""ONNX Runtime on CUDA vs CPU for the CLIP towers (fp32, fp16), the worker end to end in
images/s, and the encoder service when one is installed: one run of a few minutes.

    bench/gpu.sh                                  # on a machine with a GPU (or without one)
    .venv/bin/python bench/gpu.py --out /tmp/gpu --seconds 2
    .venv/bin/python bench/gpu.py --vit-b32       # also the full-size ViT-B/32 (export extra)

Every measurement that cannot run says why and the rest goes on: without a GPU (no driver, or
an onnxruntime without CUDAExecutionProvider) the CUDA cells are skipped with that reason, so the
script runs, and is tested, on CPU too.  Prints a summary and writes ``gpu.json`` under
``--out`` (default ``$OUT``, else ``.bench-cache/gpu``).

1. **Towers**: each tower (text, vision) of each CLIP model directory (``onnx_models/shapes-clip``;
   with ``--vit-b32`` a randomly initialised full-size ViT-B/32, exported once and cached; any
   ``--model DIR``), in fp32 and fp16 (the model's fp16 variant, else converted here with the
   exporter's ``make_fp16``), on each provider, with synthetic inputs of a fixed batch: items/s,
   and the fp16 embeddings' cosine to fp32.  Session options are the project's
   (``pg_mmretrieval.onnx.session``) except the provider list, set per cell.
2. **Worker**: ``bench/ingest.py``'s worker run (trigger-queued rows, ``Worker(once=True)``
   logged in as ``mmr_worker``, HNSW-indexed space) over generated JPEG images with the
   model's image encoder, per provider (``MMR_ONNX_PROVIDERS``): images/s.
3. **Encoder service**: ``mmr serve`` when this installation has it; otherwise skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def cuda_reason() -> str | None:
    """Why CUDA cannot be used here (None: it can)."""
    import onnxruntime as ort

    from pg_mmretrieval.onnx.providers import cuda_device_count

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        why = f"onnxruntime {ort.__version__} has no CUDAExecutionProvider"
        if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
            # e.g. chromadb (the bench extra) depends on the CPU package, whose files replace
            # onnxruntime-gpu's in the same environment
            return (
                f"{why}: both onnxruntime and onnxruntime-gpu are installed and the CPU one "
                "won; pip install --force-reinstall --no-deps onnxruntime-gpu"
            )
        return f"{why} (install onnxruntime-gpu)"
    if cuda_device_count() == 0:
        return "no GPU visible to the CUDA driver"
    return None


def _installed(dist: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def session(path: Path, provider: str) -> Any:
    """An onnxruntime session on exactly ``provider`` (the project's other session options)."""
    import onnxruntime as ort

    from pg_mmretrieval.onnx import session as s

    if provider == "CUDAExecutionProvider":
        s._preload_cuda(ort)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = s._threads()
    opts.log_severity_level = 3
    if not s._spin():
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=[provider])
    used = sess.get_providers()[0]
    if used != provider:
        raise RuntimeError(f"{path.name}: asked for {provider}, the session runs on {used}")
    return sess


def feeds(
    sess: Any, modality: str, batch: int, seq: int, vocab: int, seed: int = 0
) -> dict[str, Any]:
    """Synthetic inputs of the graph's dtypes: pixels in [-1, 1], token ids of the vocabulary."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for arg in sess.get_inputs():
        if arg.name == "pixel_values":
            side = next((d for d in arg.shape[2:] if isinstance(d, int)), 224)
            x = rng.uniform(-1, 1, (batch, 3, side, side))
            out[arg.name] = x.astype(np.float16 if arg.type == "tensor(float16)" else np.float32)
        elif arg.name == "attention_mask":
            out[arg.name] = np.ones((batch, seq), dtype=np.int64)
        elif arg.name == "input_ids":
            ids = rng.integers(3, max(4, min(vocab, 30000)), (batch, seq))
            ids[:, 0], ids[:, -1] = 1, 2
            out[arg.name] = ids.astype(np.int64)
        else:
            out[arg.name] = np.zeros((batch, seq), dtype=np.int64)
    return out


def time_cell(sess: Any, inputs: dict[str, Any], batch: int, seconds: float) -> dict[str, Any]:
    """Two warm-up runs, then runs until ``seconds`` have passed (at least 3): items/s."""
    for _ in range(2):
        out = sess.run(None, inputs)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        out = sess.run(None, inputs)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {
        "items_per_s": batch / med,
        "batch_ms_p50": med * 1e3,
        "runs": len(times),
        "embedding": np.asarray(out[0], dtype=np.float32),
    }


def fp16_file(model: Path, manifest: dict[str, Any], modality: str, cache: Path) -> Path:
    """The tower's fp16 file: the model's own variant, else converted once into ``cache``."""
    variant = manifest.get("variants", {}).get("fp16", {}).get("files", {}).get(modality)
    if variant:
        return model / variant
    src = model / manifest["towers"][modality]["file"]
    dst = cache / f"{manifest['name']}-{src.stem}.fp16.onnx"
    if not dst.is_file():
        from pg_mmretrieval.export.variants import make_fp16

        cache.mkdir(parents=True, exist_ok=True)
        make_fp16(src, dst)
    return dst


def bench_towers(
    models: list[Path], providers: dict[str, str | None], args: Any
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for model in models:
        manifest = json.loads((model / "manifest.json").read_text())
        for modality, tower in manifest["towers"].items():
            batch = args.image_batch if modality == "image" else args.text_batch
            seq = int(manifest.get("max_length", 77))
            vocab = _vocab(model)
            files: dict[str, Path | str] = {"fp32": model / tower["file"]}
            try:
                files["fp16"] = fp16_file(model, manifest, modality, args.out / "fp16")
            except Exception as e:  # onnx missing, conversion failure
                files["fp16"] = f"no fp16 tower: {type(e).__name__}: {e}"
            ref: dict[str, Any] = {}
            for precision, path in files.items():
                for short, reason in providers.items():
                    row = {
                        "model": manifest["name"],
                        "tower": modality,
                        "precision": precision,
                        "provider": short,
                        "batch": batch,
                    }
                    rows.append(row)
                    if reason or isinstance(path, str):
                        row["skipped"] = reason or path
                        continue
                    try:
                        sess = session(path, PROVIDERS[short])
                        cell = time_cell(
                            sess, feeds(sess, modality, batch, seq, vocab), batch, args.seconds
                        )
                    except Exception as e:
                        row["skipped"] = f"{type(e).__name__}: {e}"
                        continue
                    emb = cell.pop("embedding")
                    row.update(cell)
                    if precision == "fp32":
                        ref[short] = emb
                    elif short in ref:
                        a, b = ref[short], emb
                        cos = np.sum(a * b, 1) / (
                            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                        )
                        row["cosine_vs_fp32"] = float(cos.mean())
                    print(
                        f"  {manifest['name']:16s} {modality:5s} {precision} {short:4s} "
                        f"{row['items_per_s']:9.1f} items/s (batch {batch})"
                    )
    return rows


def _vocab(model: Path) -> int:
    from tokenizers import Tokenizer

    path = model / "tokenizer.json"
    return int(Tokenizer.from_file(str(path)).get_vocab_size()) if path.is_file() else 1000


def bench_worker(model: Path, providers: dict[str, str | None], args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        import ingest  # bench/ingest.py: the worker run and its image generator

        from pg_mmretrieval import db, plugins
        from pg_mmretrieval.onnx import session as s

        os.environ["MMR_MODEL_DIR"] = str(model.parent)
        plugins.reset()
        url = ingest.make_db(db.resolve_url())
    except Exception as e:
        return [{"skipped": f"no database or worker: {type(e).__name__}: {e}"}]
    import random

    data = list(ingest.images(args.worker_images, random.Random(0)))
    name = json.loads((model / "manifest.json").read_text())["name"]
    try:
        for short, reason in providers.items():
            row: dict[str, Any] = {"model": name, "provider": short, "images": len(data)}
            rows.append(row)
            if reason:
                row["skipped"] = reason
                continue
            os.environ["MMR_ONNX_PROVIDERS"] = short
            s.clear_cache()
            from pg_mmretrieval.encoders import get_encoder

            enc = get_encoder(name)
            enc.batch_size = args.image_batch
            list(enc.embed_batch(data[: args.image_batch]))  # warm-up: session, kernels
            dt = ingest.run_worker(url, enc, data, "image", 256, True)
            t0 = time.perf_counter()
            list(enc.embed_batch(data))
            enc_dt = time.perf_counter() - t0
            row.update(
                worker_images_per_s=len(data) / dt,
                encoder_images_per_s=len(data) / enc_dt,
                session_provider=enc.provider,
            )
            print(
                f"  worker {name} {short:4s} {len(data) / dt:9.1f} images/s "
                f"(encoder alone {len(data) / enc_dt:.1f})"
            )
    finally:
        import psycopg

        from pg_mmretrieval import db

        dbname = url.rsplit("/", 1)[-1].split("?")[0]
        with psycopg.connect(db.resolve_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return rows


def bench_service() -> dict[str, Any]:
    mmr = shutil.which("mmr") or str(Path(sys.executable).parent / "mmr")
    try:
        res = subprocess.run([mmr, "serve", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"mmr not runnable: {e}"}
    if res.returncode != 0:
        return {"skipped": "this installation has no `mmr serve` (encoder service not built)"}
    return {"skipped": "`mmr serve` exists but this script has no client for it yet"}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: bench/gpu.sh   (or: .venv/bin/python bench/gpu.py --seconds 2)",
    )
    default_out = (
        Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / ".bench-cache" / "gpu"
    )
    ap.add_argument("--out", type=Path, default=default_out, help="result directory ($OUT)")
    ap.add_argument("--model", type=Path, action="append", default=[], help="a CLIP model dir")
    ap.add_argument("--vit-b32", action="store_true", help="also the random full-size ViT-B/32")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per tower cell")
    ap.add_argument("--image-batch", type=int, default=32)
    ap.add_argument("--text-batch", type=int, default=64)
    ap.add_argument("--worker-images", type=int, default=512, help="images through the worker")
    ap.add_argument("--skip-worker", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    reason = cuda_reason()
    providers: dict[str, str | None] = {"cuda": reason, "cpu": None}
    print(
        f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}, "
        f"{os.cpu_count()} CPUs"
    )
    if reason:
        print(f"CUDA skipped: {reason}")
    models = [REPO / "onnx_models" / "shapes-clip", *args.model]
    if args.vit_b32:
        from tests.models import random_clip_model

        models.append(random_clip_model()[1])
    print("towers:")
    towers = bench_towers(models, providers, args)
    print("worker:")
    worker = (
        [{"skipped": "--skip-worker"}]
        if args.skip_worker
        else bench_worker(models[-1], providers, args)
    )
    for row in worker:
        if "skipped" in row and "provider" not in row:
            print(f"  skipped: {row['skipped']}")
    service = bench_service()
    print(f"encoder service: {service.get('skipped', service)}")
    result = {
        "benchmark": "bench/gpu.py",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "onnxruntime": ort.__version__,
            "cuda": reason or "available",
            "gpu": _gpu_name(),
        },
        "towers": towers,
        "worker": worker,
        "service": service,
    }
    path = args.out / "gpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"wrote {path}")


def _gpu_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    res = subprocess.run(
        [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return res.stdout.strip() or None


def summary(result: dict[str, Any]) -> str:
    """CUDA vs CPU per tower and precision (items/s and the ratio), and the worker."""
    lines = [
        "",
        "| model | tower | precision | CPU items/s | CUDA items/s | CUDA / CPU | cos fp16 |",
        "|---|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in result["towers"]:
        cells.setdefault((row["model"], row["tower"], row["precision"]), {})[row["provider"]] = row
    for (model, tower, precision), by in cells.items():
        cpu, cuda = by.get("cpu", {}), by.get("cuda", {})
        c, g = cpu.get("items_per_s"), cuda.get("items_per_s")
        ratio = f"{g / c:.1f}×" if c and g else "–"
        cos = cuda.get("cosine_vs_fp32", cpu.get("cosine_vs_fp32"))
        lines.append(
            f"| {model} | {tower} | {precision} | {_f(c)} | {_f(g)} | {ratio} | "
            f"{'–' if cos is None else f'{cos:.4f}'} |"
        )
    for row in result["worker"]:
        if "provider" in row:
            if "worker_images_per_s" in row:
                what = f"{row['worker_images_per_s']:.1f} images/s"
            else:
                what = f"skipped: {row['skipped']}"
            lines.append(f"\nworker ({row['model']}, {row['provider']}): {what}")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
