"""End-to-end ingestion throughput of the worker vs the encoder alone and a hand-written loop.

Three measurements on the same inputs, in one run:

* **encoder alone**: ``encoder.embed_batch(inputs)`` in batches (the ceiling);
* **worker**: rows queued by the trigger, drained by ``Worker(once=True)`` into an
  HNSW-indexed space (claim, read, encode, verify, one set-based upsert per batch with the
  vectors in binary, dequeue);
  repeated without the HNSW index to show the index's share;
* **hand loop**: what a user writes by hand: encode one row (PyTorch when ``--torch``),
  then one autocommitted INSERT per row.

Ratios printed: worker / encoder alone (target >= 0.85) and worker / hand loop (>= 3).
On shared CPUs use ``--repeat N`` (interleaved rounds, best of each) and run under
``flock /tmp/bench.lock`` so that benchmarks never overlap; ``bench/ingest_profile.py`` shows
where the worker's time goes.

Examples::

    python bench/ingest.py                                   # mmr-test encoder, text
    python bench/ingest.py --encoder minilm --torch --torch-model DIR --rows 1000 --repeat 3
    python bench/ingest.py --clip-b32 --torch --rows 256      # random-init ViT-B/32 images
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import psycopg

from pg_mmretrieval import db, install
from pg_mmretrieval.encoders import Encoder, Item, get_encoder, register_encoder
from pg_mmretrieval.worker import Worker, WorkerConfig

WORDS = [
    "red",
    "blue",
    "green",
    "small",
    "large",
    "circle",
    "square",
    "triangle",
    "photo",
    "of",
    "a",
    "dog",
    "cat",
    "car",
    "house",
    "tree",
    "beach",
    "mountain",
    "city",
    "night",
    "day",
    "people",
    "walking",
    "running",
    "standing",
    "sitting",
    "table",
    "chair",
]


def texts(n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))) for _ in range(n)]


def images(n: int, rng: random.Random) -> list[bytes]:
    from PIL import Image, ImageDraw

    out = []
    for _ in range(n):
        im = Image.new("RGB", (320, 240), tuple(rng.randint(0, 255) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.randint(0, 280), rng.randint(0, 200)
            d.ellipse((x, y, x + 40, y + 40), fill=tuple(rng.randint(0, 255) for _ in range(3)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# -- bench-local encoders (until the ONNX plugins are on main) ---------------------------------


class OnnxText(Encoder):
    """A text tower in the model-directory format (manifest.json, tokenizer.json, ONNX)."""

    modalities: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self, directory: Path, variant: str | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        m = json.loads((directory / "manifest.json").read_text())
        tower = m["towers"]["text"]
        fname = m["variants"][variant]["file"] if variant else tower["file"]
        self.name = "bench-" + m["name"] + (f":{variant}" if variant else "")
        self.dimension = int(m["dimension"])
        self.model_id = f"bench/{m['name']}/{fname}"
        self.inputs = list(tower["inputs"])
        self.session = ort.InferenceSession(
            str(directory / fname), providers=["CPUExecutionProvider"]
        )
        self.tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tok.enable_truncation(int(m.get("max_length", 256)))
        self.tok.enable_padding(pad_id=int(m.get("pad_token_id", 0)))
        self.source = m.get("source")

    def _embed(self, batch: Sequence[Item]) -> npt.NDArray[np.float32]:
        enc = self.tok.encode_batch([str(t) for t in batch])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {k: feed[k] for k in self.inputs})[0]
        m = mask[..., None].astype(np.float32)
        return (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # type: ignore[no-any-return]


def _clip_b32_torch() -> Any:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        projection_dim=512,
    )
    return CLIPVisionModelWithProjection(cfg).eval()


def _clip_pixels(batch: Sequence[bytes]) -> npt.NDArray[np.float32]:
    from PIL import Image

    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    out = np.empty((len(batch), 3, 224, 224), dtype=np.float32)
    for i, data in enumerate(batch):
        im = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = im.size
        s = 224 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
        a = (np.asarray(im, dtype=np.float32) / 255.0 - mean) / std
        out[i] = a.transpose(2, 0, 1)
    return out


class OnnxClipB32(Encoder):
    """CLIP ViT-B/32 vision tower, random weights (same compute as the trained model)."""

    name = "bench-clip-b32"
    dimension = 512
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    model_id = "bench/clip-vit-b32-random-seed0"

    def __init__(self, cache: Path, variant: str | None = None) -> None:
        import onnxruntime as ort

        path = cache / "clip_b32_vision.onnx"
        if not path.exists():
            import torch

            cache.mkdir(parents=True, exist_ok=True)
            model = _clip_b32_torch()
            dummy = torch.zeros(1, 3, 224, 224)
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                input_names=["pixel_values"],
                output_names=["image_embeds"],
                dynamic_axes={"pixel_values": {0: "b"}},
                opset_version=17,
                dynamo=False,
            )
        if variant == "int8":
            # The exporter's per-channel dynamic int8 (pg_mmretrieval.export.variants).
            from pg_mmretrieval.export.variants import make_int8

            q = cache / "clip_b32_vision.int8.onnx"
            if not q.exists():
                make_int8(path, q)
            path, self.name = q, "bench-clip-b32:int8"
        elif variant is not None:
            raise SystemExit(f"--variant {variant}: only int8 is built for --clip-b32")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def _embed(self, batch: Sequence[Item]) -> npt.NDArray[np.float32]:
        pixels = _clip_pixels([bytes(b) for b in batch])  # type: ignore[arg-type]
        return self.session.run(["image_embeds"], {"pixel_values": pixels})[0]  # type: ignore[no-any-return]


def torch_encode_one(
    args: argparse.Namespace, enc: Encoder
) -> Callable[[Item], npt.NDArray[np.float32]]:
    """The user's hand-written PyTorch encode of one item."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if isinstance(enc, OnnxClipB32):
        model = _clip_b32_torch()

        def one_image(item: Item) -> npt.NDArray[np.float32]:
            with torch.no_grad():
                px = torch.from_numpy(_clip_pixels([bytes(item)]))  # type: ignore[arg-type]
                v = model(pixel_values=px).image_embeds[0].numpy()
            return v / np.linalg.norm(v)  # type: ignore[no-any-return]

        return one_image
    from transformers import AutoModel, AutoTokenizer

    src = args.torch_model or getattr(enc, "source", None)
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src).eval()

    def one_text(item: Item) -> npt.NDArray[np.float32]:
        with torch.no_grad():
            t = tok([str(item)], return_tensors="pt", truncation=True, max_length=256)
            h = model(**t).last_hidden_state
            m = t["attention_mask"][..., None].float()
            v = ((h * m).sum(1) / m.sum(1))[0].numpy()
        return v / np.linalg.norm(v)  # type: ignore[no-any-return]

    return one_text


# -- the three measurements ---------------------------------------------------------------------


def make_db(server_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")
    install.upgrade(url)
    return url


def run_worker(
    url: str, enc: Encoder, data: list[Item], modality: str, batch: int, hnsw: bool
) -> float:
    col = "body" if modality == "text" else "img"
    with db.connect(url, autocommit=True) as conn:
        t = f"w_{uuid.uuid4().hex[:6]}"
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, body text, img bytea)")
        conn.execute(
            "SELECT mmr.create_collection(%s, %s, image_column => 'img', text_columns => '{body}')",
            (t, t),
        )
        table = conn.execute(
            "SELECT mmr.add_space(%s, 'v', %s, %s, %s)::text", (t, enc.name, col, enc.dimension)
        ).fetchone()[0]  # type: ignore[index]
        if not hnsw:
            conn.execute(f"DROP INDEX {table}_hnsw")
        with conn.cursor().copy(f"COPY {t} (id, {col}) FROM STDIN") as cp:
            for i, x in enumerate(data):
                cp.write_row((i, x))
        t0 = time.perf_counter()
        # the worker logs in as its least-privilege role (docs/security.md)
        as_worker = db.with_user(url, db.WORKER_ROLE)
        Worker(as_worker, WorkerConfig(collections=(t,), once=True, batch_size=batch)).run()
        dt = time.perf_counter() - t0
        n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert n == (len(data),), n
    return dt


def run_hand_loop(url: str, enc: Encoder, data: list[Item], one: Callable[[Item], Any]) -> float:
    with db.connect(url, autocommit=True) as conn:
        t = f"h_{uuid.uuid4().hex[:6]}"
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, embedding vector({enc.dimension}))")
        conn.execute(f"CREATE INDEX ON {t} USING hnsw (embedding vector_cosine_ops)")
        t0 = time.perf_counter()
        for i, x in enumerate(data):
            v = one(x)
            conn.execute(f"INSERT INTO {t} VALUES (%s, %s)", (i, np.asarray(v, dtype=np.float32)))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--encoder", default="mmr-test", help="a registered encoder")
    ap.add_argument("--onnx-text", type=Path, help="a text model directory (manifest format)")
    ap.add_argument("--variant", help="model variant of --onnx-text or --clip-b32 (e.g. int8)")
    ap.add_argument("--clip-b32", action="store_true", help="random-init CLIP ViT-B/32 images")
    ap.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    ap.add_argument("--torch", action="store_true", help="hand loop encodes with PyTorch")
    ap.add_argument("--torch-model", help="Hugging Face dir for the PyTorch text baseline")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--hand-rows", type=int, help="rows for the hand loop (default: --rows)")
    ap.add_argument("--batch-size", type=int, default=64, help="the encoder's inference batch")
    ap.add_argument(
        "--claim-size",
        type=int,
        default=256,
        help="rows the worker claims per batch (default 256, the worker's own default); a claim "
        "larger than the inference batch lets the encoder sort texts by length across it",
    )
    ap.add_argument("--modality", choices=["text", "image"])
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run encoder alone and both worker cases N times, interleaved; report the best "
        "of each (on shared CPUs the best is the least disturbed)",
    )
    args = ap.parse_args()

    enc: Encoder
    if args.onnx_text:
        enc = OnnxText(args.onnx_text, args.variant)
        register_encoder(enc)
    elif args.clip_b32:
        enc = OnnxClipB32(args.cache, args.variant)
        register_encoder(enc)
    else:
        enc = get_encoder(args.encoder)
    modality = args.modality or ("image" if "text" not in enc.modalities else "text")
    enc.batch_size = args.batch_size
    rng = random.Random(0)
    data: list[Item] = list(texts(args.rows, rng) if modality == "text" else images(args.rows, rng))

    list(enc.embed_batch(data[: args.batch_size]))  # warm-up (session, caches)
    url = make_db(db.resolve_url())
    t_enc = t_worker = t_worker_noidx = float("inf")
    for r in range(args.repeat):
        t0 = time.perf_counter()
        list(enc.embed_batch(data))
        t_enc = min(t_enc, time.perf_counter() - t0)
        claim = args.claim_size
        t_worker = min(t_worker, run_worker(url, enc, data, modality, claim, True))
        t_worker_noidx = min(t_worker_noidx, run_worker(url, enc, data, modality, claim, False))
        if args.repeat > 1:
            n = len(data)
            print(
                f"  round {r + 1}: encoder {n / t_enc:.1f}, worker HNSW {n / t_worker:.1f}, "
                f"no index {n / t_worker_noidx:.1f} rows/s (best so far)",
                file=sys.stderr,
            )
    hand_n = args.hand_rows or args.rows
    if args.torch:
        one = torch_encode_one(args, enc)
        label = "PyTorch encode + INSERT per row"
    else:

        def one(x: Item) -> Any:
            return next(iter(enc.embed_batch([x])))

        label = f"{enc.name} encode + INSERT per row"
    one(data[0])
    t_hand = run_hand_loop(url, enc, data[:hand_n], one)

    n = len(data)
    r_enc, r_w, r_wn, r_h = n / t_enc, n / t_worker, n / t_worker_noidx, hand_n / t_hand
    print(
        f"encoder {enc.name} ({enc.model_id}), {modality}, {n} rows, batch {args.batch_size}, "
        f"worker claims {args.claim_size}, "
        f"{os.cpu_count()} CPUs, best of {args.repeat}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  encoder alone                 {r_enc:10.1f} rows/s")
    print(
        f"  worker -> HNSW-indexed space  {r_w:10.1f} rows/s   ratio vs encoder {r_w / r_enc:.2f}"
    )
    print(
        f"  worker -> space without index {r_wn:10.1f} rows/s   ratio vs encoder {r_wn / r_enc:.2f}"
    )
    print(f"  hand loop ({label}) {r_h:10.1f} rows/s   worker/hand {r_w / r_h:.2f}")
    with psycopg.connect(db.resolve_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.split("/")[-1].split("?")[0]}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
